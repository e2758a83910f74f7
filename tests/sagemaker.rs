//! `classify train` as a SageMaker training job, in a temp folder standing in for /opt/ml.

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A job root with `hyperparameters` and a two-class image folder in the `training` channel.
fn job_root(root: &Path, hyperparameters: &str, per_class: usize) {
    fs::create_dir_all(root.join("input/config")).unwrap();
    fs::write(root.join("input/config/hyperparameters.json"), hyperparameters).unwrap();
    util::write_image_folder(&root.join("input/data/training"), &["left", "right"], per_class, 0);
    fs::create_dir_all(root.join("model")).unwrap();
}

fn job(root: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_classify"));
    command
        .args(["train", "--sagemaker"])
        .current_dir(root)
        .env("CLASSIFY_SAGEMAKER_ROOT", root)
        .env("CLASSIFY_HOME", root.join(".cache"));
    command
}

fn run(root: &Path) -> Output {
    job(root).output().unwrap()
}

#[test]
fn a_whole_job_reads_hyperparameters_and_channel_and_writes_the_model_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // What SageMaker adds itself (tuning and framework estimators) is ignored.
    job_root(
        root,
        r#"{"epochs": "2", "batch-size": "8", "val_split": "0.25", "seed": "5",
            "_tuning_objective_metric": "val_acc", "sagemaker_program": "train.py"}"#,
        8,
    );
    let out = run(root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One metrics line per epoch, in the form the README's metric-definition regexes read.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("metrics: epoch=")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    for (name, line) in ["val_acc=", "val_loss=", "train_acc=", "train_loss="].iter().zip(lines.iter().cycle()) {
        let value: String =
            line.split(name).nth(1).unwrap_or("").chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
        assert!(value.parse::<f64>().is_ok(), "{name} in {line}");
    }
    let config: Value = serde_json::from_str(&fs::read_to_string(root.join("model/config.json")).unwrap()).unwrap();
    assert_eq!(config["epochs"], 2);
    assert_eq!(config["batch_size"], 8);
    assert_eq!(config["seed"], 5);
    assert_eq!(config["val_images"], 4);
    for f in ["model.bpk", "classes.txt", "metrics.jsonl", "checkpoint.json"] {
        assert!(root.join("model").join(f).is_file(), "missing model/{f}");
    }
    assert!(!root.join("output/failure").exists());
}

#[test]
fn a_failing_job_writes_the_reason_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    job_root(root, r#"{"epochs": "many"}"#, 2);
    let out = run(root);
    assert_eq!(out.status.code(), Some(1));
    let failure = fs::read_to_string(root.join("output/failure")).unwrap();
    assert!(failure.contains("epochs") && failure.contains("many"), "{failure}");

    job_root(root, r#"{"learning_rate": "0.1"}"#, 2);
    let out = run(root);
    assert_eq!(out.status.code(), Some(1));
    let failure = fs::read_to_string(root.join("output/failure")).unwrap();
    assert!(failure.contains("learning-rate") && failure.contains("lr"), "{failure}");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_job_cleanly_with_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    job_root(root, r#"{"epochs": "200", "batch-size": "4"}"#, 8);
    let mut child = job(root).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let checkpoint = root.join("model/checkpoint.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    // Well within SageMaker's grace period: it stops at the next batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let failure = fs::read_to_string(root.join("output/failure")).unwrap();
    assert!(failure.contains("stopped by a termination request"), "{failure}");
    let ckpt: Value = serde_json::from_str(&fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert!(root.join("model").join(ckpt["model"].as_str().unwrap()).is_file());
    assert!(ckpt["epoch"].as_u64().unwrap() < 200);
}
