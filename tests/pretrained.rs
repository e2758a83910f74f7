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
}
