//! `classify predict --data/--list/--out`: every input form, results streamed before the run
//! ends, resuming an output, unreadable files reported in it, and the errors that name a
//! flag. On a freshly initialised seed model (the predictions only need to be the model's).

mod util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use util::{classify, ok, stderr, stdout};

const CLASSES: [&str; 4] = ["tl", "tr", "bl", "br"];

/// A run folder `r` and an image folder `shapes` (train/<class>/NNN.png, 3 a class, plus
/// an unreadable `train/tr/broken.png` and a `notes.txt` that is no image).
fn fixture(root: &Path) {
    util::write_seed_run(&root.join("r"), &CLASSES);
    util::write_image_folder(&root.join("shapes"), &CLASSES, 3, 0);
    std::fs::write(root.join("shapes/train/tr/broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    std::fs::write(root.join("shapes/notes.txt"), "not an image").unwrap();
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"))).collect()
}

/// `predict --json` for one image named on the command line: its classes and probabilities.
fn one_by_one(root: &Path, image: &str) -> Value {
    let out = ok(classify(root, &["predict", "--run", "r", "--json", image]));
    let all: Value = serde_json::from_str(&stdout(&out)).unwrap();
    all[0]["predictions"].clone()
}

#[test]
fn a_folder_gives_one_line_per_image_with_its_label_and_the_unreadable_ones_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    let out = ok(classify(root, &["predict", "--run", "r", "--data", "shapes", "--batch-size", "5"]));
    let lines = json_lines(&stdout(&out));
    assert_eq!(lines.len(), 13, "12 images and the broken one: {lines:?}");
    let names: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "results come in path order");
    assert!(!names.iter().any(|n| n.contains("notes")), "{names:?}");
    for line in &lines {
        let image = line["image"].as_str().unwrap();
        let class = image.split('/').nth(1).unwrap();
        assert_eq!(line["label"], class, "{line}");
        if image.ends_with("broken.png") {
            assert!(line.get("predictions").is_none(), "{line}");
            assert!(!line["error"].as_str().unwrap().is_empty(), "{line}");
        } else {
            assert!(line.get("error").is_none(), "{line}");
            assert_eq!(line["predictions"].as_array().unwrap().len(), 3, "--top-k's default");
        }
    }
    // The same probabilities as predicting the image alone (batches change nothing).
    let alone = one_by_one(root, &format!("shapes/{}", names[7]));
    for (batched, alone) in lines[7]["predictions"].as_array().unwrap().iter().zip(alone.as_array().unwrap()) {
        assert_eq!(batched["class"], alone["class"]);
        let (b, a) = (batched["probability"].as_f64().unwrap(), alone["probability"].as_f64().unwrap());
        assert!((a - b).abs() < 1e-5, "{a} alone, {b} in a batch");
    }
    let err = stderr(&out);
    assert!(err.contains("predicted 13 images") && err.contains("1 could not be read"), "{err}");
    assert!(err.contains("labelled"), "{err}");

    // --on-bad-image fail stops at the broken file, naming it, after the lines before it.
    let out = classify(root, &["predict", "--run", "r", "--data", "shapes", "--on-bad-image", "fail"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("broken.png") && stderr(&out).contains("--on-bad-image skip"), "{}", stderr(&out));
    let before: Vec<Value> = json_lines(&stdout(&out));
    let broken_at = names.iter().position(|n| n.ends_with("broken.png")).unwrap();
    assert_eq!(before.len(), broken_at, "{before:?}");
    assert_eq!(before, lines[..broken_at]);
}

#[test]
fn csv_and_text_lists_name_files_relative_to_the_list_and_csv_output_has_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    std::fs::write(
        root.join("shapes/labels.csv"),
        "path,label\ntrain/tl/000.png,tl\ntrain/br/001.png,wrong\ntrain/tl/missing.png,tl\n",
    )
    .unwrap();
    let out = ok(classify(root, &["predict", "--run", "r", "--list", "shapes/labels.csv", "--out", "o/res.csv"]));
    assert!(stderr(&out).contains("results in o/res.csv"), "{}", stderr(&out));
    let text = std::fs::read_to_string(root.join("o/res.csv")).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "image,label,class_1,probability_1,class_2,probability_2,class_3,probability_3,error");
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[1].starts_with("train/tl/000.png,tl,") && rows[1].ends_with(','), "{text}");
    assert!(rows[2].starts_with("train/br/001.png,wrong,"), "{text}");
    let missing: Vec<&str> = rows[3].split(',').collect();
    assert_eq!(missing[..8], ["train/tl/missing.png", "tl", "", "", "", "", "", ""], "{text}");
    assert!(!missing[8].is_empty(), "the error is given: {text}");
    // Probabilities are those of the image alone.
    let alone = one_by_one(root, "shapes/train/tl/000.png");
    let first: Vec<&str> = rows[1].split(',').collect();
    assert_eq!(first[2], alone[0]["class"]);
    let p: f64 = first[3].parse().unwrap();
    assert!((p - alone[0]["probability"].as_f64().unwrap()).abs() < 1e-5, "{p} vs {alone}");

    // A text list: one path a line, comments and blank lines left out; no labels.
    std::fs::write(root.join("shapes/some.txt"), "# two images\ntrain/bl/002.png\n\n  train/tr/000.png  \n").unwrap();
    let out = ok(classify(root, &["predict", "--run", "r", "--list", "shapes/some.txt", "--top-k", "1"]));
    let lines = json_lines(&stdout(&out));
    let names: Vec<&str> = lines.iter().map(|l| l["image"].as_str().unwrap()).collect();
    assert_eq!(names, ["train/bl/002.png", "train/tr/000.png"]);
    assert!(lines.iter().all(|l| l.get("label").is_none() && l["predictions"].as_array().unwrap().len() == 1));

    // Files named one by one go to --out too.
    ok(classify(root, &["predict", "--run", "r", "shapes/train/bl/000.png", "--out", "one.jsonl"]));
    let lines = json_lines(&std::fs::read_to_string(root.join("one.jsonl")).unwrap());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["image"], "shapes/train/bl/000.png");
}

#[test]
fn results_stream_out_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    // 3,000 lines (some 300 KB) cannot all sit in a pipe (64 KiB): while the first line is
    // read, the run cannot have ended.
    let list: String = (0..3000).map(|i| format!("train/{}/00{}.png\n", CLASSES[i % 4], i % 3)).collect();
    std::fs::write(root.join("shapes/many.txt"), list).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_classify"))
        .args(["predict", "--run", "r", "--list", "shapes/many.txt", "--batch-size", "16"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let line: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(line["image"], "train/tl/000.png");
    assert!(child.try_wait().unwrap().is_none(), "the run ended before its first line was read");
    let rest = reader.lines().count();
    assert_eq!(rest, 2999);
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_output_with_lines_is_continued_after_its_last_complete_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    let predict = |out: &str| {
        ok(classify(root, &["predict", "--run", "r", "--data", "shapes", "--out", out, "--batch-size", "4"]))
    };
    for out in ["full.jsonl", "full.csv"] {
        predict(out);
        let full = std::fs::read_to_string(root.join(out)).unwrap();
        let lines: Vec<&str> = full.split_inclusive('\n').collect();
        // Stopped mid-write: five complete lines and half of the sixth.
        let part = out.replace("full", "part");
        let cut = format!("{}{}", lines[..5].concat(), &lines[5][..lines[5].len() / 2]);
        std::fs::write(root.join(&part), cut).unwrap();
        let out = predict(&part);
        let skipped = if part.ends_with(".csv") { 4 } else { 5 };
        assert!(stderr(&out).contains(&format!("already holds {skipped} of 13")), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("predicted {} images", 13 - skipped)), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(root.join(&part)).unwrap(), full, "{part}");
    }

    // Results for other images are refused, and the file is left as it was.
    std::fs::write(root.join("shapes/two.txt"), "train/br/000.png\ntrain/bl/000.png\n").unwrap();
    let before = std::fs::read_to_string(root.join("full.jsonl")).unwrap();
    let out = classify(root, &["predict", "--run", "r", "--list", "shapes/two.txt", "--out", "full.jsonl"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("full.jsonl") && stderr(&out).contains("choose another --out"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(root.join("full.jsonl")).unwrap(), before);
}

#[test]
fn bad_flags_and_inputs_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    let fails = |args: &[&str], needles: &[&str]| {
        let out = classify(root, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        for needle in needles {
            assert!(stderr(&out).contains(needle), "{args:?}: no {needle:?} in {}", stderr(&out));
        }
    };
    fails(&["predict", "--run", "r", "--data", "shapes", "--out", "res.txt"], &["res.txt", ".jsonl", ".csv"]);
    fails(&["predict", "--run", "r", "--data", "nowhere"], &["nowhere", "folder"]);
    fails(&["predict", "--run", "r", "--data", "shapes/train/tl/000.png"], &["000.png", "not a folder"]);
    fails(&["predict", "--run", "r", "--list", "none.txt"], &["none.txt"]);
    std::fs::create_dir(root.join("empty")).unwrap();
    fails(&["predict", "--run", "r", "--data", "empty"], &["empty", "no image files"]);
    fails(&["predict", "--run", "r"], &["--data"]);
    fails(&["predict", "--run", "r", "--data", "shapes", "--list", "x.txt"], &["--list"]);
    fails(&["predict", "--run", "r", "--data", "shapes", "--json"], &["--json"]);
    assert!(!root.join("res.txt").exists());
}

/// A writer that deletes a file at its first write, to show what had been read by then.
struct DeleteAtFirstWrite {
    victim: std::path::PathBuf,
    text: Vec<u8>,
    writes: usize,
}

impl std::io::Write for DeleteAtFirstWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.writes == 0 {
            std::fs::remove_file(&self.victim)?;
        }
        self.writes += 1;
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_first_lines_are_written_before_the_last_images_are_read() {
    use classify::predict::{BatchOptions, Format, Inputs, Task, items, predict_into};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    // 100 files, the last one deleted when the first results are written: had every image
    // been read before writing began, its line would hold predictions, not an error.
    let source = std::fs::read(root.join("shapes/train/tl/000.png")).unwrap();
    for i in 0..100 {
        util::write_bytes(&root.join(format!("many/{i:03}.png")), &source);
    }
    let classifier = classify::classifier::Classifier::load(&root.join("r"), &burn::tensor::Device::flex()).unwrap();
    let list = items(&Inputs::Folder(root.join("many")), classifier.classes()).unwrap();
    let mut out = DeleteAtFirstWrite { victim: root.join("many/099.png"), text: Vec::new(), writes: 0 };
    let options =
        BatchOptions { task: Task::Predict, batch: 4, top_k: 2, policy: classify::data::BadImagePolicy::Skip };
    let summary =
        predict_into(&classifier, &list, &mut out, Format::JsonLines, options, &indicatif::ProgressBar::hidden())
            .unwrap();
    assert_eq!((summary.written, summary.failed), (100, 1));
    assert_eq!(out.writes, 25, "one write a batch");
    let lines = json_lines(&String::from_utf8(out.text).unwrap());
    assert!(lines[0].get("predictions").is_some(), "{}", lines[0]);
    assert_eq!(lines[99]["image"], "099.png");
    assert!(lines[99]["error"].as_str().unwrap().contains("cannot read"), "{}", lines[99]);
}

/// The rows of a `.npy` file of `f32` as `classify embed` writes it (format 1.0).
fn read_npy(path: &Path) -> (usize, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + len) % 64, 0, "the data is 64-byte aligned");
    let dict = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(dict.contains("'descr': '<f4'") && dict.contains("'fortran_order': False"), "{dict}");
    let shape = &dict[dict.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape[..shape.find(')').unwrap()].split(',').map(|v| v.trim().parse().unwrap()).collect();
    let values: Vec<f32> =
        bytes[10 + len..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(values.len(), shape[0] * shape[1], "{dict}");
    (shape[0], shape[1], values)
}

#[test]
fn embed_writes_each_images_features_as_json_lines_or_npy_and_continues_either() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fixture(root);
    let embed = |out: &str| ok(classify(root, &["embed", "--run", "r", "--data", "shapes", "--out", out]));
    embed("e.jsonl");
    let lines = json_lines(&std::fs::read_to_string(root.join("e.jsonl")).unwrap());
    assert_eq!(lines.len(), 13);
    let broken = lines.iter().position(|l| l["image"].as_str().unwrap().ends_with("broken.png")).unwrap();
    assert!(lines[broken].get("embedding").is_none() && lines[broken]["error"].is_string());
    for line in lines.iter().filter(|l| l.get("error").is_none()) {
        let values = line["embedding"].as_array().unwrap();
        assert_eq!(values.len(), 512, "the seed model's hidden layer");
        assert!(values.iter().all(|v| v.as_f64().unwrap() >= 0.0), "ReLU activations");
        assert!(line["label"].is_string());
    }

    let out = embed("e.npy");
    assert!(stderr(&out).contains("e.images.txt") && stderr(&out).contains("NaN"), "{}", stderr(&out));
    let (rows, columns, values) = read_npy(&root.join("e.npy"));
    assert_eq!((rows, columns), (13, 512));
    let index = std::fs::read_to_string(root.join("e.images.txt")).unwrap();
    let names: Vec<&str> = index.lines().collect();
    for (i, (line, row)) in lines.iter().zip(values.chunks(columns)).enumerate() {
        assert_eq!(line["image"], names[i]);
        if i == broken {
            assert!(row.iter().all(|v| v.is_nan()), "an unreadable file's row is NaN");
        } else {
            let json: Vec<f64> = line["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(row.iter().zip(&json).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-5), "row {i}");
        }
    }

    // Stopped after 5 and a half rows: continued to the same bytes.
    let full = std::fs::read(root.join("e.npy")).unwrap();
    let cut = full.len() - (13 * 512 * 4) + 5 * 512 * 4 + 1000;
    std::fs::write(root.join("e.npy"), &full[..cut]).unwrap();
    let out = embed("e.npy");
    assert!(stderr(&out).contains("already holds 5 of 13"), "{}", stderr(&out));
    assert_eq!(std::fs::read(root.join("e.npy")).unwrap(), full);

    // Another set of images is refused, the file kept; predictions are not .npy.
    let out = classify(root, &["embed", "--run", "r", "shapes/train/tl/000.png", "--out", "e.npy"]);
    assert!(!out.status.success() && stderr(&out).contains("choose another --out"), "{}", stderr(&out));
    assert_eq!(std::fs::read(root.join("e.npy")).unwrap(), full);
    let out = classify(root, &["predict", "--run", "r", "--data", "shapes", "--out", "p.npy"]);
    assert!(!out.status.success() && stderr(&out).contains("embed"), "{}", stderr(&out));
}
