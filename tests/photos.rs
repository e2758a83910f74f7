//! Photos as people have them: the folder layouts and the CSV of labels, images of any size
//! framed as torchvision frames them, and a run's `--image-size` reaching eval, predict,
//! serve and export.

mod util;

use std::fs;
use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use burn::tensor::Device;
use serde_json::{Value, json};
use tower::ServiceExt;

use classify::classifier::Classifier;
use classify::data::folder::decode_framed;
use classify::data::{Framing, LoadOptions, load, split};
use classify::serve::{AppState, BatchOptions, app};
use util::{classify, ok, path_str, stdout};

/// An RGB PNG of `w` x `h`: columns left of `w / 4` red, right of `3 w / 4` blue, green
/// between; the row adds a little so images differ.
fn banded_png(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, _| {
        if x < w / 4 {
            image::Rgb([250, shade, 0])
        } else if x >= 3 * w / 4 {
            image::Rgb([0, shade, 250])
        } else {
            image::Rgb([0, 250, shade])
        }
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn at(side: usize) -> LoadOptions {
    LoadOptions { side: Some(side), ..LoadOptions::default() }
}

#[test]
fn a_wide_photo_is_cut_to_its_centre_square_then_resized() {
    // 64x32: the centre 32x32 square is the green band only.
    let png = banded_png(64, 32, 7);
    let mut out = vec![0u8; 3 * 16 * 16];
    decode_framed(&png, &mut out, Framing { size: 16, resize: 16 }).unwrap();
    assert!(out[..256].iter().all(|&r| r == 0) && out[256..512].iter().all(|&g| g == 250), "{:?}", &out[..16]);
    // With a margin (resize 32, keep the centre 16 of it): still all green.
    decode_framed(&png, &mut out, Framing { size: 16, resize: 32 }).unwrap();
    assert!(out[256..512].iter().all(|&g| g == 250));
    // Taller than wide works the same way; a 32x32 image at 32 is copied unchanged.
    let mut same = vec![0u8; 3 * 32 * 32];
    decode_framed(&banded_png(32, 32, 9), &mut same, Framing::CIFAR).unwrap();
    assert_eq!((same[0], same[1024 + 16], same[2048 + 31]), (250, 250, 250));
}

#[test]
fn a_flat_folder_of_class_folders_is_a_dataset_with_a_carved_validation_split() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..10u8 {
        put(&tmp.path().join(format!("ants/{i:02}.JPEG")), &banded_png(60, 40, i));
        // Subfolders of a class folder are read too.
        put(&tmp.path().join(format!("bees/trip/{i:02}.png")), &banded_png(40, 60, i));
    }
    put(&tmp.path().join("bees/notes.txt"), b"not an image");
    let data = load(tmp.path().to_str().unwrap(), &at(24)).unwrap();
    assert_eq!(data.classes, vec!["ants", "bees"]);
    assert_eq!(data.train.len(), 20);
    assert_eq!(data.train.shape().size, 24);
    assert!(data.val.is_none() && data.test.is_none());
    let s = split(data, 0.2).unwrap();
    assert_eq!((s.train.class_counts(2), s.val.class_counts(2)), (vec![8, 8], vec![2, 2]));
}

#[test]
fn train_val_and_test_folders_are_used_as_given() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["cat", "dog"] {
        for i in 0..4u8 {
            put(&tmp.path().join(format!("train/{class}/{i}.png")), &banded_png(32, 32, i));
        }
        put(&tmp.path().join(format!("val/{class}/v.png")), &banded_png(50, 30, 1));
        put(&tmp.path().join(format!("test/{class}/t.png")), &banded_png(30, 50, 2));
    }
    let data = load(tmp.path().to_str().unwrap(), &at(32)).unwrap();
    assert_eq!(data.val.as_ref().map(|v| v.labels().to_vec()), Some(vec![0, 1]));
    assert_eq!(data.test.as_ref().map(|t| t.len()), Some(2));
    // The val/ folder is the validation split, whatever the fraction; nothing is carved.
    let s = split(data, 0.5).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (8, 2));
    // Framed for a 24 px model kept at 28: training images at 28, the others cut to 24.
    let framed = s.framed(Framing { size: 24, resize: 28 });
    assert_eq!((framed.train.shape().size, framed.val.shape().size), (28, 24));
    assert_eq!(framed.test.map(|t| t.shape().size), Some(24));
    // A val/ class that is not a training class is named.
    put(&tmp.path().join("val/horse/h.png"), &banded_png(32, 32, 3));
    let msg = load(tmp.path().to_str().unwrap(), &at(32)).unwrap_err().to_string();
    assert!(msg.contains("horse") && msg.contains("cat, dog"), "{msg}");
}

#[test]
fn a_csv_of_paths_and_labels_is_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows = String::from("filename,label,split\n");
    for i in 0..6u8 {
        let name = format!("imgs/{i}.png");
        put(&tmp.path().join(&name), &banded_png(40, 40, i));
        let label = if i % 2 == 0 { "even" } else { "odd" };
        let split = if i >= 4 { "val" } else { "" };
        rows.push_str(&format!("{name},{label},{split}\n"));
    }
    // Quoted fields and a space in a name, as spreadsheets write them.
    put(&tmp.path().join("imgs/with space.png"), &banded_png(40, 40, 9));
    rows.push_str("\"imgs/with space.png\",\"odd\"\n");
    let csv = tmp.path().join("labels.csv");
    fs::write(&csv, &rows).unwrap();
    let data = load(csv.to_str().unwrap(), &at(32)).unwrap();
    assert_eq!(data.classes, vec!["even", "odd"]);
    assert_eq!(data.train.labels(), vec![0, 1, 0, 1, 1]);
    assert_eq!(data.val.map(|v| v.labels().to_vec()), Some(vec![0, 1]));

    // A row without a label, and a file that is not there, are named.
    fs::write(&csv, "imgs/0.png,even\nimgs/1.png\n").unwrap();
    let msg = load(csv.to_str().unwrap(), &at(32)).unwrap_err().to_string();
    assert!(msg.contains("labels.csv") && msg.contains("line 2"), "{msg}");
    fs::write(&csv, "imgs/0.png,even\nimgs/1.png,odd\nimgs/missing.png,odd\n").unwrap();
    let msg = load(csv.to_str().unwrap(), &at(32)).unwrap_err().to_string();
    assert!(msg.contains("missing.png"), "{msg}");
}

/// A photo folder (two classes, non-square images) trained for one epoch at 40 px: the
/// size is in the run and every consumer of the run uses it.
#[test]
fn the_image_size_flows_from_training_to_eval_predict_serve_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    for i in 0..8u8 {
        put(&data.join(format!("red/{i}.png")), &banded_png(70, 50, 20 * i));
        put(&data.join(format!("blue/{i}.jpg")), &{
            let img = image::RgbImage::from_fn(50, 70, |_, y| image::Rgb([0, (y * 3) as u8, 240]));
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Jpeg).unwrap();
            out
        });
    }
    let run = tmp.path().join("run");
    let (data_s, run_s) = (path_str(&data), path_str(&run));
    ok(classify(
        tmp.path(),
        &[
            "train",
            "--model",
            "resnet18",
            "--data",
            &data_s,
            "--image-size",
            "40",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--val-split",
            "0.25",
            "--out",
            &run_s,
        ],
    ));
    let config: Value = serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["framing"], json!({"size": 40, "resize": 46}));

    let out = stdout(&ok(classify(tmp.path(), &["eval", "--run", &run_s, "--json"])));
    let eval: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["n"], 4, "{out}");

    let photo = tmp.path().join("wide.png");
    fs::write(&photo, banded_png(300, 120, 5)).unwrap();
    let out = stdout(&ok(classify(tmp.path(), &["predict", "--run", &run_s, "--json", &path_str(&photo)])));
    let predicted: Value = serde_json::from_str(&out).unwrap();
    let top = predicted[0]["predictions"][0]["probability"].as_f64().unwrap();

    // predict frames the photo as the run says: the same numbers as the classifier on it.
    let classifier = Classifier::load(&run, &Device::flex()).unwrap();
    let framing = classifier.config().framing;
    let mut framed = vec![0u8; framing.input().image_bytes()];
    decode_framed(&fs::read(&photo).unwrap(), &mut framed, framing).unwrap();
    let probs = classifier.probabilities(&framed);
    let best = probs[0].iter().copied().fold(0f32, f32::max);
    assert!((f64::from(best) - top).abs() < 1e-4, "predict {top}, classifier {best}");

    let file = tmp.path().join("model.onnx");
    ok(classify(tmp.path(), &["export", "--run", &run_s, "--out", &path_str(&file)]));
    let bytes = fs::read(&file).unwrap();
    let needle = b"[batch, 3, 40, 40]";
    assert!(bytes.windows(needle.len()).any(|w| w == needle), "the ONNX input is not 40x40");

    let options = BatchOptions { max_batch: 4, max_wait: std::time::Duration::ZERO, queue_capacity: 4 };
    let router = app(AppState::new(classifier, options));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let send = |request: Request<Body>| {
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
                (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
            }
        };
        let (status, meta) = send(Request::get("/v2/models/classify").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, 3, 40, 40]), "{meta}");
        assert_eq!(meta["parameters"]["image_size"], 40);
        // The photo of any size through /invocations: the same probabilities as predict.
        let request = Request::post("/invocations")
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from(fs::read(&photo).unwrap()))
            .unwrap();
        let (status, answer) = send(request).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let served = answer["predictions"][0]["probability"].as_f64().unwrap();
        assert!((served - top).abs() < 1e-4, "served {served}, predict {top}");
        // Tensors must be at the run's size.
        let tensor = |side: usize| {
            let data = vec![0.5f32; 3 * side * side];
            json!({"inputs": [{"name": "x", "shape": [1, 3, side, side], "datatype": "FP32", "data": data}]})
        };
        let infer = |body: Value| {
            Request::post("/v2/models/classify/infer")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        assert_eq!(send(infer(tensor(40))).await.0, StatusCode::OK);
        let (status, refused) = send(infer(tensor(32))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(refused.to_string().contains("[N, 3, 40, 40]"), "{refused}");
    });
}

/// `data inspect` tells what training would use: counts per class and split, the image
/// sizes, the files it would stop on, and a warning for imbalanced classes.
#[test]
fn data_inspect_reports_counts_sizes_bad_files_and_imbalance() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..9u8 {
        put(&tmp.path().join(format!("many/{i}.png")), &banded_png(60, 40, i));
    }
    for i in 0..3u8 {
        put(&tmp.path().join(format!("few/{i}.png")), &banded_png(100, 100, i));
    }
    put(&tmp.path().join("few/broken.png"), b"\x89PNG\r\n\x1a\n not really");
    let root = path_str(tmp.path());
    let out = stdout(&ok(classify(tmp.path(), &["data", "inspect", "--data", &root, "--json", "--val-split", "0.34"])));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["classes"][0], json!({"name": "few", "train": 2, "val": 1, "test": null}), "{report}");
    assert_eq!(report["classes"][1], json!({"name": "many", "train": 6, "val": 3, "test": null}), "{report}");
    assert_eq!(report["image_sizes"]["images"], 12);
    assert_eq!(report["image_sizes"]["shorter_side"], json!({"min": 40, "median": 40, "max": 100}));
    assert_eq!(report["image_sizes"]["square"], 3);
    assert!(report["skipped"][0]["path"].as_str().unwrap().ends_with("broken.png"), "{report}");
    assert!(report["warnings"][0].as_str().unwrap().contains("--class-weights balanced"), "{report}");
    let text = stdout(&ok(classify(tmp.path(), &["data", "inspect", "--data", &root])));
    assert!(text.contains("broken.png") && text.contains("imbalanced") && text.contains("many"), "{text}");
}

/// A class-folder root of `per_class` photos per class (PNGs of ants, JPEGs of bees), of
/// several sizes, whose pixels all differ (so that any change of crop, flip or image changes
/// a batch).
fn textured_folder(root: &Path, per_class: u8) {
    for i in 0..per_class {
        for (class, (w, h), format) in
            [("ants", (52, 40), image::ImageFormat::Png), ("bees", (40, 61), image::ImageFormat::Jpeg)]
        {
            let img = image::RgbImage::from_fn(w + u32::from(i), h, |x, y| {
                image::Rgb([(x * 7 + u32::from(i) * 13) as u8, (y * 5 + x) as u8, ((x + y) * 3) as u8])
            });
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format).unwrap();
            let extension = format.extensions_str()[0];
            put(&root.join(format!("{class}/{i:02}.{extension}")), &bytes);
        }
    }
}

#[test]
fn a_dataset_over_cache_mem_stays_on_disk_and_gives_the_same_batches() {
    use classify::data::augment::{Augment, Cropping};
    let tmp = tempfile::tempdir().unwrap();
    textured_folder(tmp.path(), 10);
    let framing = Framing::photo(24);
    let root = path_str(tmp.path());
    let load_with = |cache_mem| {
        let opts = LoadOptions { side: Some(framing.resize), cache_mem, ..LoadOptions::default() };
        split(load(&root, &opts).unwrap(), 0.2).unwrap().framed(framing)
    };
    // 20 images at 27x27 take 43,740 bytes decoded: over a 1 KiB budget, under 1 MiB.
    let (memory, roomy, streamed) = (load_with(None), load_with(Some(1 << 20)), load_with(Some(1024)));
    assert!(!memory.train.is_streamed() && !roomy.train.is_streamed());
    assert!(streamed.train.is_streamed() && streamed.val.is_streamed());
    assert_eq!(streamed.train.labels(), memory.train.labels());
    assert_eq!(streamed.train.shape(), memory.train.shape());

    for augment in [Augment::RandomResizedCrop, Augment::FlipCrop, Augment::None] {
        let cropping = Cropping { augment, padding: 2, min_scale: 0.35, min_ratio: 0.75 };
        for epoch in 1..=2 {
            for indices in [&[3usize, 0, 7, 1][..], &[15, 2]] {
                let from_memory = memory.train.train_batch(indices, &cropping, 24, 9, epoch).unwrap();
                let from_files = streamed.train.train_batch(indices, &cropping, 24, 9, epoch).unwrap();
                assert_eq!(from_files.0.len(), indices.len() * 3 * 24 * 24);
                assert!(from_files == from_memory, "{augment:?}, epoch {epoch}, images {indices:?} differ");
            }
        }
    }
    // Validation images and the sample that input statistics come from are the same too.
    assert_eq!(streamed.val.clone().into_memory().unwrap(), memory.val.clone().into_memory().unwrap());
    assert_eq!(*streamed.train.statistics_sample().unwrap(), *memory.train.statistics_sample().unwrap());
}

#[test]
fn a_bad_file_read_batch_by_batch_stops_training_or_is_left_out_of_its_batch() {
    use classify::data::BadImagePolicy;
    use classify::data::augment::{Augment, Cropping};
    let tmp = tempfile::tempdir().unwrap();
    textured_folder(tmp.path(), 3);
    fs::write(tmp.path().join("ants/01.png"), b"not a png").unwrap();
    let cropping = Cropping { augment: Augment::None, padding: 0, min_scale: 1.0, min_ratio: 1.0 };
    let root = path_str(tmp.path());
    let load_with = |on_bad_image| {
        let opts = LoadOptions { side: Some(16), cache_mem: Some(0), on_bad_image, ..LoadOptions::default() };
        load(&root, &opts).unwrap().train
    };
    let err = load_with(BadImagePolicy::Fail).train_batch(&[0, 1, 2], &cropping, 16, 1, 1).unwrap_err();
    assert!(err.to_string().contains("01.png"), "{err}");
    let (pixels, labels) = load_with(BadImagePolicy::Skip).train_batch(&[0, 1, 4], &cropping, 16, 1, 1).unwrap();
    assert_eq!((pixels.len(), labels), (2 * 3 * 16 * 16, vec![0, 1]));
}

#[test]
fn training_from_files_under_a_tiny_cache_mem_learns_as_training_from_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("photos");
    textured_folder(&data, 6);
    let data_s = path_str(&data);
    let train = |out: &str, extra: &[&str]| {
        let run = tmp.path().join(out);
        let mut args = vec!["train", "--model", "resnet18", "--data", &data_s, "--image-size", "32"];
        args.extend(["--epochs", "2", "--batch-size", "4", "--val-split", "0.25"]);
        let run_s = path_str(&run);
        args.extend(["--out", &run_s]);
        args.extend(extra);
        let out = ok(classify(tmp.path(), &args));
        let metrics: Vec<Value> = fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (String::from_utf8_lossy(&out.stderr).into_owned(), metrics)
    };
    let (_, in_memory) = train("memory", &[]);
    let (log, from_files) = train("files", &["--cache-mem", "1KiB"]);
    assert!(log.contains("on disk"), "{log}");
    assert_eq!(from_files.len(), 2);
    for (a, b) in in_memory.iter().zip(&from_files) {
        for key in ["train_loss", "train_acc", "val_loss", "val_acc"] {
            let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            // Not exactly equal in general: burn's parallel sums may split differently when
            // decoding shares the cores; other images or crops move these by far more.
            assert!((a - b).abs() < 1e-3, "{key}: {a} in memory, {b} from files");
        }
    }
    let err = classify(tmp.path(), &["train", "--data", &data_s, "--cache-mem", "lots", "--out", "x"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("--cache-mem"), "{:?}", err);
}
