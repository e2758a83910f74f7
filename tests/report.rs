//! `classify report` and the training curves: every figure is a PNG of the expected size,
//! and `report.html` stands alone (no network, no other files, every image inlined).

mod util;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use burn::tensor::Device;
use classify::classifier::Classifier;
use classify::data::Splits;
use classify::report::{self, layout};
use classify::run::{EpochMetrics, RunConfig, RunDir};
use classify::train::{self, Progress};
use util::{classify, ok, stdout};

const FIGURES: [&str; 5] = ["accuracy.png", "loss.png", "confusion.png", "per_class.png", "mistakes.png"];

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("PNG decodes");
    (img.width(), img.height())
}

fn png_file_size(path: &Path) -> (u32, u32) {
    png_size(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// Asserts `html` loads nothing from anywhere: no links, scripts, styles or frames from
/// outside, and every `<img>` is a PNG data URI that decodes. Returns the images' sizes.
fn assert_self_contained(html: &str) -> Vec<(u32, u32)> {
    let lower = html.to_lowercase();
    for outside in [
        "href=",
        "<link",
        "<script",
        "<iframe",
        "<object",
        "<embed",
        "@import",
        "url(",
        "http://",
        "https://",
        "srcset",
        "src=\"/",
        "src=\"file",
        "src=\"http",
    ] {
        assert!(!lower.contains(outside), "report.html contains {outside:?}");
    }
    let sources: Vec<&str> =
        html.split(" src=\"").skip(1).map(|rest| &rest[..rest.find('"').expect("closed src attribute")]).collect();
    assert_eq!(sources.len(), lower.matches("<img").count(), "an <img> without a double-quoted src");
    sources
        .iter()
        .map(|src| {
            let b64 = src
                .strip_prefix("data:image/png;base64,")
                .unwrap_or_else(|| panic!("src is not a PNG data URI: {}", &src[..src.len().min(60)]));
            let png = base64::engine::general_purpose::STANDARD.decode(b64).expect("valid base64");
            png_size(&png)
        })
        .collect()
}

/// One-epoch-or-more metrics, as `classify train` writes them.
fn metrics(epochs: usize) -> Vec<EpochMetrics> {
    (1..=epochs)
        .map(|epoch| EpochMetrics {
            epoch,
            seconds: 2.5,
            train_loss: 1.4 / epoch as f64,
            train_acc: 0.4 + 0.1 * epoch as f64,
            val_loss: 1.2,
            val_acc: 0.5,
        })
        .collect()
}

#[test]
fn report_command_writes_figures_and_a_self_contained_page() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &["blue", "green", "red"], 12, 4);
    ok(classify(
        root,
        &["train", "--data", "shapes", "--epochs", "2", "--batch-size", "8", "--val-split", "0.25", "--out", "runs/a"],
    ));

    let out = ok(classify(root, &["report", "--run", "runs/a", "--out", "rep"]));
    let printed: Vec<PathBuf> = stdout(&out).lines().map(PathBuf::from).collect();
    let expected: Vec<PathBuf> =
        FIGURES.iter().chain(["report.html"].iter()).map(|f| Path::new("rep").join(f)).collect();
    assert_eq!(printed, expected, "{}", stdout(&out));
    let rep = root.join("rep");
    let sizes: Vec<(u32, u32)> = FIGURES.iter().map(|f| png_file_size(&rep.join(f))).collect();
    assert_eq!(sizes[0], report::CURVE_SIZE);
    assert_eq!(sizes[1], report::CURVE_SIZE);
    // 3 classes of confusion cells plus names and titles; bars for 3 classes.
    assert!(
        sizes[2].0 >= 3 * layout::confusion_cell(3) && sizes[2].1 >= 3 * layout::confusion_cell(3),
        "{:?}",
        sizes[2]
    );
    assert!(sizes[3].0 >= 480 && sizes[3].1 >= 3 * 30, "{:?}", sizes[3]);
    assert!(sizes[4].0 >= report::mistakes_size(0).0, "{:?}", sizes[4]);

    let html = fs::read_to_string(rep.join("report.html")).unwrap();
    // The page shows exactly the files written, byte for byte the same pictures.
    assert_eq!(assert_self_contained(&html), sizes);
    // The default split of a folder with test images is test: 4 per class.
    assert!(html.contains("evaluated on the test split (12 images)"), "{html:.2000}");
    for needle in ["Configuration", "learning_rate", "optimizer.epsilon", "blue, green, red", "Most confused pairs"] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }
    // No temporary files left behind.
    let names: Vec<String> =
        fs::read_dir(&rep).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 6, "{names:?}");

    // Without --out the report goes into the run folder; --split val is honoured.
    let out = ok(classify(root, &["report", "--run", "runs/a", "--split", "val"]));
    assert!(stdout(&out).contains("report.html"));
    let html = fs::read_to_string(root.join("runs/a/report/report.html")).unwrap();
    assert!(html.contains("evaluated on the val split (9 images)"), "{html:.2000}");
}

#[test]
fn write_report_escapes_class_names_and_sizes_the_mistake_grid() {
    let classes = util::names(&["<b>tl</b>", "tr & co", "bl", "br"]);
    let splits = Splits {
        classes: classes.clone(),
        train: util::quadrant_set(4, 10, 11).into(),
        val: util::quadrant_set(4, 6, 12).into(),
        test: None,
    };
    let config = RunConfig { seed: 5, train_images: 40, val_images: 24, ..util::synthetic_config(&classes, 3) };
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let device = Device::flex();
    train::train(&splits, &config, &run, &device, false, &Progress::silent()).expect("training runs");

    let classifier = Classifier::load(run.root(), &device).unwrap();
    let out = dir.path().join("out/nested");
    let files = report::write_report(&classifier, &run, splits.val.memory().unwrap(), "val", &out).unwrap();
    assert_eq!(files.len(), 6);
    assert_eq!(files.last().unwrap(), &out.join("report.html"));

    let probs = classifier.probabilities(&splits.val.memory().unwrap().images);
    let mistakes = layout::mistakes(splits.val.labels(), &probs).len();
    let shown = mistakes.min(report::MAX_MISTAKES);
    assert_eq!(png_file_size(&out.join("mistakes.png")), report::mistakes_size(shown), "{mistakes} mistakes");
    assert_eq!(png_file_size(&out.join("accuracy.png")), report::CURVE_SIZE);

    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(assert_self_contained(&html).len(), 5);
    assert!(!html.contains("<b>tl"), "class name not escaped");
    assert!(html.contains("&lt;b&gt;tl&lt;/b&gt;") && html.contains("tr &amp; co"));
    assert!(html.contains("3 of 3 epochs completed"), "{html:.2000}");

    // On ties the report's best epoch is the one --patience keeps: the first.
    run.save_metrics(&metrics(3)).unwrap();
    report::write_report(&classifier, &run, splits.val.memory().unwrap(), "val", &out).unwrap();
    let html = fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("best validation accuracy (epoch 1)"), "{html:.3000}");
}

#[test]
fn write_curves_draws_one_epoch_and_skips_none() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path());
    assert!(report::write_curves(&run).unwrap().is_empty(), "no metrics.jsonl: nothing to draw");

    run.save_metrics(&metrics(1)).unwrap();
    let files = report::write_curves(&run).unwrap();
    assert_eq!(files, vec![dir.path().join("accuracy.png"), dir.path().join("loss.png")]);
    for f in &files {
        assert_eq!(png_file_size(f), report::CURVE_SIZE);
    }
    // Rewritten in place as epochs are added.
    let before = fs::read(&files[0]).unwrap();
    run.save_metrics(&metrics(3)).unwrap();
    report::write_curves(&run).unwrap();
    assert_ne!(fs::read(&files[0]).unwrap(), before);
    assert_eq!(png_file_size(&files[0]), report::CURVE_SIZE);
}

#[test]
fn curves_into_an_unwritable_place_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    fs::write(&blocker, b"not a folder").unwrap();
    let err = report::write_curves_from(&blocker.join("sub"), &metrics(2)).unwrap_err();
    assert!(err.to_string().contains("sub"), "{err}");
}
