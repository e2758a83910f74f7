//! The models learn: seeded runs on tiny synthetic data beat chance by a wide margin, with
//! the original recipe and the modern one, and early stopping keeps the best weights.
//! If these fail, training is broken (loss, gradients, optimiser, averaging or data path).

mod util;

use burn::tensor::Device;
use classify::classifier::Classifier;
use classify::run::{RunConfig, RunDir};
use classify::settings::Recipe;
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
    util::learning::seed_learns_quadrants(&Device::flex());
}

#[test]
fn same_seed_same_metrics() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let splits = util::learning::quadrant_splits(16, 4, 3);
    let classes = &splits.classes;
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let run = RunDir::new(dir.path().join(name));
            train::train(&splits, &config(classes, 1), &run, &Device::flex(), false, &Progress::silent()).unwrap()
        })
        .collect();
    assert_eq!(runs[0][0].train_loss, runs[1][0].train_loss);
    assert_eq!(runs[0][0].val_acc, runs[1][0].val_acc);
}

#[test]
fn fast_model_learns_quadrants_with_the_modern_recipe() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    util::learning::fast_learns_quadrants(&Device::flex());
}

#[test]
fn early_stopping_keeps_the_best_epochs_weights() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let splits = util::learning::quadrant_splits(40, 10, 7);
    let classes = &splits.classes;
    let config =
        RunConfig { recipe: Recipe { patience: Some(2), ema: Some(0.9), ..Recipe::default() }, ..config(classes, 12) };
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let history =
        train::train(&splits, &config, &run, &Device::flex(), false, &Progress::silent()).expect("training runs");
    let (best, best_acc) = classify::run::best_epoch(&history).unwrap();
    // The task is learned perfectly within a few epochs, after which nothing can be better.
    assert!(history.len() < 12, "never stopped early: {history:?}");
    assert_eq!(history.len(), best + 2, "stops `patience` epochs after the best: {history:?}");
    assert_eq!(run.load_checkpoint().unwrap().unwrap().best_epoch, Some(best));
    // model.bpk holds the best epoch's (averaged) weights: it scores that epoch's accuracy.
    let classifier = Classifier::load(run.root(), &Device::flex()).unwrap();
    let predictions = classifier.predict(&splits.val.memory().unwrap().images);
    let correct = predictions.iter().zip(splits.val.labels()).filter(|(p, l)| p == l).count();
    assert_eq!(correct as f64 / splits.val.len() as f64, best_acc);
}
