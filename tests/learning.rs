//! The seed model learns: a seeded run on tiny synthetic data beats chance by a wide margin.
//! If this fails, training is broken (loss, gradients, optimiser or data path).

mod util;

use burn::tensor::Device;
use classify::data::Splits;
use classify::run::{RunConfig, RunDir};
use classify::train::{self, Progress};

/// burn's random state (initialisation, dropout) is per process, not per run: tests that
/// train take turns so each run's seed alone decides its numbers.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn config(classes: &[String], epochs: usize) -> RunConfig {
    util::synthetic_config(classes, epochs)
}

#[test]
fn seed_model_learns_quadrants_well_above_chance() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let classes = util::names(&["tl", "tr", "bl", "br"]);
    let splits = Splits {
        classes: classes.clone(),
        train: util::quadrant_set(4, 60, 1),
        val: util::quadrant_set(4, 20, 2),
        test: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let history = train::train(&splits, &config(&classes, 3), &run, &Device::flex(), false, &Progress::silent())
        .expect("training runs");
    assert_eq!(history.len(), 3);
    let last = history.last().unwrap();
    // Chance is 0.25.
    assert!(last.val_acc >= 0.85, "val accuracy {} after 3 epochs: {history:?}", last.val_acc);
    assert!(last.train_loss < history[0].train_loss, "loss did not fall: {history:?}");
}

#[test]
fn same_seed_same_metrics() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let classes = util::names(&["tl", "tr", "bl", "br"]);
    let splits = Splits {
        classes: classes.clone(),
        train: util::quadrant_set(4, 16, 3),
        val: util::quadrant_set(4, 4, 4),
        test: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let run = RunDir::new(dir.path().join(name));
            train::train(&splits, &config(&classes, 1), &run, &Device::flex(), false, &Progress::silent()).unwrap()
        })
        .collect();
    assert_eq!(runs[0][0].train_loss, runs[1][0].train_loss);
    assert_eq!(runs[0][0].val_acc, runs[1][0].val_acc);
}
