//! The learning smoke tests, on any device: seeded runs on the quadrant task (chance 0.25)
//! must reach 85% validation accuracy within a few epochs. `tests/learning.rs` runs them on
//! the CPU, `tests/gpu.rs` on wgpu. Callers hold their file's training lock: burn's random
//! state is per process.

use burn::tensor::Device;
use classify::data::Splits;
use classify::data::augment::Augment;
use classify::model::ModelKind;
use classify::run::{RunConfig, RunDir};
use classify::settings::{Recipe, RecipeName};
use classify::train::{self, Progress};

use super::{names, quadrant_set, synthetic_config};

/// The quadrant task: `train` and `val` images a class, from seeds `seed` and `seed + 1`.
pub fn quadrant_splits(train: usize, val: usize, seed: u64) -> Splits {
    Splits {
        classes: names(&["tl", "tr", "bl", "br"]),
        train: quadrant_set(4, train, seed).into(),
        val: quadrant_set(4, val, seed + 1).into(),
        test: None,
    }
}

/// The seed model with the original recipe, 3 epochs of 240 images: 85% or better, and the
/// training loss falls.
pub fn seed_learns_quadrants(device: &Device) {
    let splits = quadrant_splits(60, 20, 1);
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let config = synthetic_config(&splits.classes, 3);
    let history = train::train(&splits, &config, &run, device, false, &Progress::silent()).expect("training runs");
    assert_eq!(history.len(), 3);
    let last = history.last().unwrap();
    assert!(last.val_acc >= 0.85, "val accuracy {} after 3 epochs: {history:?}", last.val_acc);
    assert!(last.train_loss < history[0].train_loss, "loss did not fall: {history:?}");
}

/// The fast model with the modern recipe less its flips (a mirror image moves the square to
/// another class), 4 epochs of 128 images: 85% or better, and the run ends on the
/// recipe's lookahead (slow) weights with no separate moving average checkpointed.
pub fn fast_learns_quadrants(device: &Device) {
    let splits = quadrant_splits(32, 16, 5);
    let config = fast_config(&splits, 4);
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let history = train::train(&splits, &config, &run, device, false, &Progress::silent()).expect("training runs");
    let last = history.last().unwrap();
    assert!(last.val_acc >= 0.85, "val accuracy {} after 4 epochs: {history:?}", last.val_acc);
    assert!(config.recipe.lookahead && config.recipe.ema.is_none());
    let checkpoint = run.load_checkpoint().unwrap().unwrap();
    assert!(checkpoint.ema.is_none());
}

/// A fast-model run over `splits` for `epochs`, batch 16, with the modern recipe less its
/// flips (a mirror image moves the square to another class).
pub fn fast_config(splits: &Splits, epochs: usize) -> RunConfig {
    let defaults = RecipeName::Modern.defaults(ModelKind::Fast);
    RunConfig {
        model: ModelKind::Fast,
        epochs,
        batch_size: 16,
        learning_rate: defaults.learning_rate,
        recipe: Recipe { augment: Augment::None, ..defaults.recipe },
        ..synthetic_config(&splits.classes, epochs)
    }
}
