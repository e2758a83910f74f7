//! The real binary, in a temp folder: train -> eval -> predict on a tiny image folder, resume,
//! and the errors a newcomer is likely to meet.

mod util;

use std::fs;

use serde_json::Value;
use util::{classify, ok, stderr, stdout};

const CLASSES: [&str; 3] = ["blue", "green", "red"];

#[test]
fn train_eval_predict_resume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 12, 4);

    let out = ok(classify(
        root,
        &["train", "--data", "shapes", "--epochs", "2", "--batch-size", "8", "--val-split", "0.25", "--out", "runs/a"],
    ));
    assert!(stdout(&out).contains("runs/a: 2 epochs"), "{}", stdout(&out));
    // Not a terminal: one plain line per epoch.
    assert!(stderr(&out).contains("epoch 2/2  train loss"), "{}", stderr(&out));
    let run = root.join("runs/a");
    for f in ["config.json", "classes.txt", "model.bpk", "metrics.jsonl", "checkpoint.json", "accuracy.png", "loss.png"]
    {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    assert_eq!(fs::read_to_string(run.join("classes.txt")).unwrap(), "blue\ngreen\nred\n");
    let config: Value = serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train_images"], 27); // 12 per class, the last round(3) held out
    assert_eq!(config["val_images"], 9);
    assert_eq!(config["optimizer"]["epsilon"], 1e-7);
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (i, m) in lines.iter().enumerate() {
        assert_eq!(m["epoch"], i + 1);
        for key in ["seconds", "train_loss", "train_acc", "val_loss", "val_acc"] {
            assert!(m[key].is_number(), "{key} in {m}");
        }
    }

    // eval on the data's test split by default.
    let out = ok(classify(root, &["eval", "--run", "runs/a", "--json"]));
    let e: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["split"], "test");
    assert_eq!(e["n"], 12);
    let acc = e["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(e["per_class"].as_array().unwrap().len(), 3);
    let confusion = e["confusion"].as_array().unwrap();
    let total: u64 = confusion.iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 12);
    let out = ok(classify(root, &["eval", "--run", "runs/a", "--split", "val"]));
    assert!(stdout(&out).contains("val split: 9 images"), "{}", stdout(&out));
    assert!(stdout(&out).contains("confusion matrix"));

    // predict, text and JSON.
    let img = root.join("shapes/test/red/000.png");
    let img = img.to_str().unwrap();
    let out = ok(classify(root, &["predict", "--run", "runs/a", img, "--top-k", "2", "--json"]));
    let p: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let preds = p[0]["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    let p0 = preds[0]["probability"].as_f64().unwrap();
    let p1 = preds[1]["probability"].as_f64().unwrap();
    assert!(p0 >= p1 && p0 + p1 <= 1.0 + 1e-6);
    assert!(CLASSES.contains(&preds[0]["class"].as_str().unwrap()));
    let out = ok(classify(root, &["predict", "--run", "runs/a", img]));
    assert_eq!(stdout(&out).lines().count(), 4, "{}", stdout(&out)); // path + 3 classes

    // A second train into the same folder refuses to overwrite it.
    let out = classify(root, &["train", "--data", "shapes", "--epochs", "1", "--out", "runs/a"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already holds a run"), "{}", stderr(&out));

    // --resume continues to a raised epoch count and keeps the history.
    ok(classify(root, &["train", "--out", "runs/a", "--resume", "--epochs", "3"]));
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let epochs: Vec<u64> =
        metrics.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![1, 2, 3]);
    assert_eq!(lines[0], serde_json::from_str::<Value>(metrics.lines().next().unwrap()).unwrap());
    let ckpt: Value = serde_json::from_str(&fs::read_to_string(run.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(ckpt["epoch"], 3);
}

/// Each image's class probabilities from `predict --json`, as (class, probability) pairs.
fn predictions(out: &std::process::Output) -> Vec<Vec<(String, f64)>> {
    let p: Value = serde_json::from_str(&stdout(out)).unwrap();
    p.as_array()
        .unwrap()
        .iter()
        .map(|image| {
            let mut preds: Vec<(String, f64)> = image["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["class"].as_str().unwrap().to_string(), c["probability"].as_f64().unwrap()))
                .collect();
            preds.sort_by(|a, b| a.0.cmp(&b.0));
            preds
        })
        .collect()
}

#[test]
fn test_time_augmentation_and_int8_weights_in_eval_and_predict() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 8, 2);
    ok(classify(
        root,
        &["train", "--data", "shapes", "--epochs", "1", "--batch-size", "8", "--val-split", "0.25", "--out", "r"],
    ));

    let plain: Value = serde_json::from_str(&stdout(&ok(classify(root, &["eval", "--run", "r", "--json"])))).unwrap();
    assert_eq!(plain["tta"], "none");
    let out = ok(classify(root, &["eval", "--run", "r", "--tta", "flip", "--json"]));
    let flip: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(flip["tta"], "flip");
    assert_eq!(flip["n"], plain["n"]);
    assert_eq!(flip["n"], 6);
    assert!((0.0..=1.0).contains(&flip["accuracy"].as_f64().unwrap()), "{flip}");
    // int8 weights: the same images, a stated precision, predictions that mostly agree.
    let out = ok(classify(root, &["eval", "--run", "r", "--quantize", "int8", "--json"]));
    let int8: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((int8["quantize"].as_str(), int8["n"].as_u64()), (Some("int8"), Some(6)));
    assert_eq!(plain["quantize"], "none");
    let out = ok(classify(root, &["eval", "--run", "r", "--quantize", "int8"]));
    assert!(stdout(&out).lines().next().unwrap_or_default().contains("int8 weights"), "{}", stdout(&out));
    let out = ok(classify(root, &["eval", "--run", "r", "--tta", "flip-translate"]));
    let first = stdout(&out).lines().next().unwrap_or_default().to_string();
    assert!(first.contains("TTA flip-translate (6 views)"), "{first}");
    let out = ok(classify(root, &["eval", "--run", "r"]));
    assert!(!stdout(&out).lines().next().unwrap_or_default().contains("TTA"), "{}", stdout(&out));

    // Every test image, with all 3 classes shown. The quadrant images are not mirror
    // symmetric (the square sits in one quadrant, over noise), so their views differ.
    let images: Vec<String> =
        CLASSES.iter().flat_map(|c| (0..2).map(move |i| format!("shapes/test/{c}/{i:03}.png"))).collect();
    let predict = |tta: &[&str]| {
        let mut args = vec!["predict", "--run", "r", "--top-k", "3", "--json"];
        args.extend_from_slice(tta);
        args.extend(images.iter().map(String::as_str));
        ok(classify(root, &args))
    };
    let plain_out = predict(&[]);
    let plain = predictions(&plain_out);
    // `--tta none` is the plain computation, to the last bit.
    assert_eq!(stdout(&predict(&["--tta", "none"])), stdout(&plain_out));
    let tta = predictions(&predict(&["--tta", "flip-translate"]));
    assert_eq!(tta.len(), images.len());
    for image in &tta {
        assert_eq!(image.len(), CLASSES.len());
        let sum: f64 = image.iter().map(|(_, p)| p).sum();
        assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}: {image:?}");
    }
    let differs = plain.iter().zip(&tta).any(|(a, b)| a.iter().zip(b).any(|((_, pa), (_, pb))| (pa - pb).abs() > 1e-6));
    assert!(differs, "--tta flip-translate changed no probability:\n{plain:?}\n{tta:?}");

    let out = classify(root, &["predict", "--run", "r", "--tta", "bogus", &images[0]]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    assert!(stderr(&out).contains("flip-translate"), "{}", stderr(&out));
}

#[test]
fn split_test_without_test_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("only-train"), &CLASSES[..2], 6, 0);
    ok(classify(root, &["train", "--data", "only-train", "--epochs", "1", "--val-split", "0.5", "--out", "r"]));
    let out = classify(root, &["eval", "--run", "r", "--split", "test"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no test split"), "{}", stderr(&out));
    // Without --split, a folder with no test/ is evaluated on val.
    let out = ok(classify(root, &["eval", "--run", "r", "--json"]));
    let e: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(e["split"], "val");
    assert_eq!(e["n"], 6);
}

#[test]
fn model_summary_prints_the_keras_total() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(classify(dir.path(), &["model", "summary", "--model", "seed"]));
    let text = stdout(&out);
    assert!(text.contains("Total params: 4,200,842"), "{text}");
    assert!(text.contains("(None, 8192)"), "{text}");
}

#[test]
fn model_summary_documents_the_fast_model() {
    let dir = tempfile::tempdir().unwrap();
    let text = stdout(&ok(classify(dir.path(), &["model", "summary", "--model", "fast"])));
    assert!(text.contains("whiten"), "{text}");
    assert!(text.contains("(None, 256, 3, 3)"), "{text}");
    assert!(text.contains("Total params: 1,163,064"), "{text}");
    assert!(text.contains("Non-trainable params: 2,104"), "{text}");
}

#[test]
fn recipe_flags_reach_the_run_config_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 6, 1);
    let config = |run: &str| -> Value {
        serde_json::from_str(&fs::read_to_string(root.join(run).join("config.json")).unwrap()).unwrap()
    };

    // The seed model keeps the original recipe unless asked.
    ok(classify(root, &["train", "--data", "shapes", "--epochs", "1", "--out", "runs/orig"]));
    let c = config("runs/orig");
    assert_eq!((c["batch_size"].as_u64(), c["learning_rate"].as_f64()), (Some(32), Some(0.001)));
    assert_eq!(c["recipe"]["optimizer"], "adam");
    assert_eq!(c["recipe"]["augment"], "none");
    assert_eq!(c["recipe"]["schedule"], "constant");
    assert!(c["recipe"]["ema"].is_null());

    // --recipe modern, with two of its choices overridden.
    ok(classify(
        root,
        &[
            "train",
            "--data",
            "shapes",
            "--epochs",
            "1",
            "--recipe",
            "modern",
            "--schedule",
            "onecycle",
            "--ema",
            "0",
            "--out",
            "runs/modern",
        ],
    ));
    let c = config("runs/modern");
    assert_eq!(c["batch_size"].as_u64(), Some(64));
    assert_eq!(c["recipe"]["augment"], "flip-crop");
    assert_eq!(c["recipe"]["schedule"], "onecycle");
    assert_eq!(c["recipe"]["label_smoothing"].as_f64(), Some(0.1));
    assert!(c["recipe"]["ema"].is_null());

    // --ema alone means 0.999; sgd with its settings.
    ok(classify(
        root,
        &[
            "train",
            "--data",
            "shapes",
            "--epochs",
            "1",
            "--ema",
            "--optimizer",
            "sgd",
            "--momentum",
            "0.8",
            "--weight-decay",
            "0.01",
            "--patience",
            "3",
            "--out",
            "runs/sgd",
        ],
    ));
    let c = config("runs/sgd");
    assert_eq!(c["recipe"]["ema"].as_f64(), Some(0.999));
    assert_eq!(c["recipe"]["optimizer"], "sgd");
    assert_eq!(c["recipe"]["momentum"].as_f64(), Some(0.8));
    assert_eq!(c["recipe"]["patience"].as_u64(), Some(3));

    // The fast model's recipe is airbench's; --ema given alone replaces its lookahead.
    ok(classify(root, &["train", "--data", "shapes", "--model", "fast", "--epochs", "1", "--out", "runs/fast"]));
    let c = config("runs/fast");
    assert_eq!((c["batch_size"].as_u64(), c["learning_rate"].as_f64()), (Some(256), Some(0.375)));
    assert_eq!(c["recipe"]["augment"], "alt-flip-crop");
    assert_eq!(c["recipe"]["lookahead"], true);
    assert_eq!(c["recipe"]["freeze_norm_scale"], true);
    assert_eq!(c["recipe"]["norm_bias_lr_scale"].as_f64(), Some(64.0));
    assert_eq!((c["recipe"]["lr_start"].as_f64(), c["recipe"]["lr_end"].as_f64()), (Some(0.2), Some(0.07)));
    ok(classify(
        root,
        &[
            "train",
            "--data",
            "shapes",
            "--model",
            "fast",
            "--epochs",
            "1",
            "--ema",
            "0.99",
            "--freeze-norm-scale",
            "false",
            "--out",
            "runs/fast-ema",
        ],
    ));
    let c = config("runs/fast-ema");
    assert_eq!((c["recipe"]["lookahead"].as_bool(), c["recipe"]["ema"].as_f64()), (Some(false), Some(0.99)));
    assert_eq!(c["recipe"]["freeze_norm_scale"], false);
    // Adam on the fast model drops the SGD-only shift rate; asking for both is an error.
    ok(classify(
        root,
        &[
            "train",
            "--data",
            "shapes",
            "--model",
            "fast",
            "--epochs",
            "1",
            "--optimizer",
            "adam",
            "--out",
            "runs/fast-adam",
        ],
    ));
    assert_eq!(config("runs/fast-adam")["recipe"]["norm_bias_lr_scale"].as_f64(), Some(1.0));
    let out = classify(
        root,
        &[
            "train",
            "--data",
            "shapes",
            "--model",
            "fast",
            "--optimizer",
            "adam",
            "--norm-bias-lr-scale",
            "8",
            "--out",
            "runs/bad",
        ],
    );
    assert!(out.status.code() == Some(1) && stderr(&out).contains("--norm-bias-lr-scale"), "{}", stderr(&out));

    for (flag, value) in [
        ("--label-smoothing", "1.5"),
        ("--ema", "2"),
        ("--momentum", "1"),
        ("--patience", "0"),
        ("--lr-start", "2"),
        ("--lr-end", "1.5"),
        ("--norm-bias-lr-scale", "0"),
    ] {
        let out = classify(root, &["train", "--data", "shapes", "--epochs", "1", flag, value, "--out", "runs/bad"]);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        assert!(stderr(&out).contains(flag), "{flag}: {}", stderr(&out));
        assert!(!root.join("runs/bad/model.bpk").exists());
    }
    let out = classify(root, &["train", "--data", "shapes", "--augment", "rotate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_input_fails_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = classify(root, &["train", "--data", "no/such/folder", "--epochs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no/such/folder"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));

    let out = classify(root, &["eval", "--run", "runs/none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("classify train"), "{}", stderr(&out));

    let out = classify(root, &["train", "--epochs", "many"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");

    let out = classify(root, &["train", "--device", "cuda", "--epochs", "1"]);
    if !cfg!(feature = "cuda") {
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains("--features cuda"), "{}", stderr(&out));
    }

    fs::write(root.join("not-an-image.png"), b"hello").unwrap();
    util::write_image_folder(&root.join("d"), &CLASSES[..2], 4, 0);
    ok(classify(root, &["train", "--data", "d", "--epochs", "1", "--val-split", "0.5", "--out", "r"]));
    let out = classify(root, &["predict", "--run", "r", "not-an-image.png"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not-an-image.png"), "{}", stderr(&out));
}

/// `--precision bf16` is recorded in the run, taken by `bench --from-run` and by `eval`,
/// and refused, before anything is written, by a model without 3x3 stride-1 convolutions.
#[test]
fn bf16_precision_is_recorded_and_refused_where_it_has_no_layers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES[..2], 4, 0);
    let train = [
        "train",
        "--data",
        "shapes",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--val-split",
        "0.5",
        "--precision",
        "bf16",
    ];
    ok(classify(root, &[&train[..], &["--model", "fast", "--out", "r"]].concat()));
    let config: Value = serde_json::from_str(&fs::read_to_string(root.join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["recipe"]["precision"], "bf16");

    let out = ok(classify(
        root,
        &["bench", "--from-run", "r", "--steps", "1", "--infer-images", "4", "--latency-calls", "1", "--json"],
    ));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(result["precision"].as_str().unwrap().starts_with("bf16"), "{result}");
    let kernels = result["kernels"].as_array().unwrap();
    assert!(kernels.iter().any(|k| k["operation"].as_str().unwrap().contains("bf16")), "{result}");

    let out = ok(classify(root, &["eval", "--run", "r", "--data", "shapes", "--precision", "bf16", "--json"]));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["precision"], "bf16");

    let out = classify(root, &[&train[..], &["--model", "seed", "--out", "s"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--precision bf16") && stderr(&out).contains("--model seed"), "{}", stderr(&out));
    assert!(!root.join("s").exists(), "a refused run leaves no folder");
    let out = classify(root, &["bench", "--model", "seed", "--precision", "bf16", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn bench_times_steady_state_steps_from_a_runs_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 8, 0);
    ok(classify(root, &["train", "--data", "shapes", "--epochs", "2", "--batch-size", "4", "--out", "r"]));
    let out = ok(classify(
        root,
        &["bench", "--from-run", "r", "--steps", "2", "--infer-images", "4", "--latency-calls", "2", "--json"],
    ));
    let result: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(result["start"], "checkpoint of epoch 2");
    assert_eq!(result["model"], "seed");
    assert_eq!(result["batch_size"], 4, "the run's batch size");
    assert_eq!(result["optimizer"], "adam");
    // The binary's compute threads flush subnormals (src/device.rs).
    assert_eq!(result["flushes_subnormals"], true);
    // It says what it computed with: fp32, and each host kernel's path on this CPU.
    assert!(result["precision"].as_str().unwrap().starts_with("fp32 throughout"), "{result}");
    let kernels = result["kernels"].as_array().unwrap();
    let conv = kernels.iter().find(|k| k["operation"] == "3x3 convolution and its gradients").unwrap();
    assert!(conv["path"].as_str().unwrap().contains("micro-kernels"), "{result}");
    assert!(kernels.iter().all(|k| !k["path"].as_str().unwrap().is_empty()), "{result}");

    let out = classify(root, &["bench", "--from-run", "nowhere", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--from-run nowhere") && stderr(&out).contains("classify train"), "{}", stderr(&out));
}

#[test]
fn settings_are_refused_before_any_data_is_read_or_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 4, 0);
    // The default data is CIFAR-10, downloaded on first use: a bad flag must not wait for it.
    for (flags, says) in [
        (vec!["--momentum", "2"], "--momentum"),
        (vec!["--val-split", "1.5"], "--val-split"),
        (vec!["--epochs", "0"], "--epochs must be at least 1"),
        (vec!["--val-split", "0", "--patience", "2", "--data", "shapes"], "--patience"),
    ] {
        let args: Vec<&str> = ["train", "--out", "r"].into_iter().chain(flags.iter().copied()).collect();
        let out = classify(root, &args);
        assert_eq!(out.status.code(), Some(1), "{flags:?}");
        assert!(stderr(&out).contains(says), "{flags:?}: {}", stderr(&out));
        assert!(!root.join(".cache").exists(), "{flags:?}: nothing is downloaded");
        assert!(!root.join("r").exists(), "{flags:?}: no run folder is written");
    }
}

#[test]
fn thread_counts_and_counts_of_one_are_bounded_by_clap() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--threads", "100000", "model", "summary"][..],
        &["--threads", "0", "model", "summary"],
        &["model", "summary", "--classes", "0"],
        &["predict", "--run", "r", "x.png", "--top-k", "0"],
    ] {
        let out = classify(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("invalid value"), "{args:?}: {}", stderr(&out));
    }
    ok(classify(dir.path(), &["--threads", "2", "model", "summary"]));
}

#[test]
fn export_write_errors_speak_of_export() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 4, 0);
    ok(classify(root, &["train", "--data", "shapes", "--epochs", "1", "--out", "r"]));
    fs::write(root.join("blocker"), b"a file, not a folder").unwrap();
    let out = classify(root, &["export", "--run", "r", "--out", "blocker/model.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot write --out blocker/model.onnx") && err.contains("writable --out"), "{err}");
    assert!(!err.contains("checkpoint") && !err.contains("classify train"), "{err}");
}

#[test]
fn eval_on_the_val_split_of_changed_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 8, 0);
    ok(classify(root, &["train", "--data", "shapes", "--epochs", "1", "--val-split", "0.25", "--out", "r"]));
    ok(classify(root, &["eval", "--run", "r", "--split", "val"]));
    // One more image shifts the per-class split: the val set would hold trained-on images.
    let class = root.join("shapes/train/blue");
    let first = fs::read_dir(&class).unwrap().next().unwrap().unwrap().path();
    fs::copy(&first, class.join("zz-extra.png")).unwrap();
    let out = classify(root, &["eval", "--run", "r", "--split", "val"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("now gives 19 training and 6 validation images"), "{}", stderr(&out));
}
