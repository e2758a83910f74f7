//! What a training run is told to do: the recipe (optimiser, learning-rate schedule, label
//! smoothing, augmentation, weight averaging, early stopping), the defaults each model
//! trains with, and in [`table`] the one table of training settings from which the flags of
//! `classify train`, their defaults in `--help`, the SageMaker hyperparameters and the
//! resume rules all come.
//!
//! A leaf: it reads the model and augmentation names and nothing else, so the run folder
//! ([`crate::run`]) and the training loop ([`crate::train`]) both read it.
//!
//! Two named recipes exist. `original` is the Keras system's (Adam at a constant rate, no
//! augmentation), so `classify train --model seed` still reproduces it. `modern` brings in
//! what the fast CIFAR-10 recipes (airbench, Page's ResNet-9 DAWNBench entry) rely on:
//! random crops and flips, label smoothing, a warm-up then a decaying rate, and an
//! exponential moving average of the weights for evaluation.

use serde::{Deserialize, Serialize};

use crate::data::augment::{Augment, CROP_PADDING, CROP_RATIO, CROP_SCALE, Cropping, MAX_CROP_PADDING};
use crate::geometry::Framing;
use crate::kernels::Precision;
use crate::model::ModelKind;

pub mod table;

pub use table::{Given, OnResume, SETTINGS, Setting, SettingError};

/// Adam's settings; the defaults are Keras's, which the original system used.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    pub beta_1: f64,
    pub beta_2: f64,
    /// Keras's 1e-7, not burn's default of 1e-5.
    pub epsilon: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        AdamSettings { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7 }
    }
}

/// Seed for initialisation, shuffling, dropout and augmentation when none is given.
pub const DEFAULT_SEED: u64 = 42;
/// Fraction of each class held out for validation when none is given.
pub const DEFAULT_VAL_SPLIT: f64 = 0.1;

/// Every setting of a training run that a flag or a SageMaker hyperparameter sets, resolved:
/// what [`table::Given::resolve`] returns and a run's `config.json` records.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    pub model: ModelKind,
    /// The named defaults the rest started from.
    pub recipe_name: RecipeName,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub val_split: f64,
    /// Side of the square images the model takes (`--image-size`).
    pub image_size: usize,
    pub recipe: Recipe,
}

/// The largest `--image-size`: 1024 px (a batch of 64 such images is 800 MB as floats).
pub const MAX_IMAGE_SIZE: usize = 1024;

impl TrainSettings {
    /// Checks every value a user can set, naming the flag at fault: run before any data is
    /// read or downloaded, so a typo costs nothing.
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 {
            return Err("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(format!("--lr must be a positive number, got {}", self.learning_rate));
        }
        if !(0.0..1.0).contains(&self.val_split) {
            return Err(format!("--val-split must be a fraction in [0, 1), such as 0.1, got {}", self.val_split));
        }
        self.model.check_image_size(self.image_size)?;
        self.model.check_precision(self.recipe.precision)?;
        if !(32..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(format!("--image-size must be 32 to {MAX_IMAGE_SIZE} pixels, got {}", self.image_size));
        }
        if self.val_split == 0.0 && self.recipe.patience.is_some() {
            return Err("--patience stops on validation accuracy, and --val-split 0 leaves no \
                        validation images: pass a --val-split above 0, or leave --patience out"
                .into());
        }
        if self.recipe.freeze_epochs > self.epochs {
            return Err(format!(
                "--freeze-epochs {} is more than --epochs {}: the frozen epochs are the first of the run's",
                self.recipe.freeze_epochs, self.epochs
            ));
        }
        self.recipe.validate()
    }

    /// Sets what `--finetune full` does from pretrained weights (`pretrained`) unless `given`
    /// sets it: [`PRETRAINED_FREEZE_EPOCHS`] frozen epochs, then the backbone at
    /// [`PRETRAINED_BACKBONE_LR_SCALE`] times the rate. Without pretrained weights, or with
    /// `--finetune head`, there is no backbone to freeze or slow, and giving either setting
    /// is an error naming it.
    pub fn for_pretrained(&mut self, pretrained: bool, given: &Given) -> Result<(), String> {
        let settings = ["freeze-epochs", "backbone-lr-scale"];
        let full = self.recipe.finetune == Finetune::Full;
        if let Some(name) = settings.iter().find(|name| given.get(name).is_some())
            && !(pretrained && full)
        {
            return Err(if pretrained {
                format!("--{name} applies to --finetune full: --finetune head trains only the head already")
            } else {
                format!("--{name} applies to a --pretrained backbone: give --pretrained FILE, or leave --{name} out")
            });
        }
        if pretrained && full {
            if given.get(settings[0]).is_none() {
                // Leaves at least one epoch for the whole network.
                self.recipe.freeze_epochs = PRETRAINED_FREEZE_EPOCHS.min(self.epochs.saturating_sub(1));
            }
            if given.get(settings[1]).is_none() {
                self.recipe.backbone_lr_scale = PRETRAINED_BACKBONE_LR_SCALE;
            }
        }
        Ok(())
    }

    /// The defaults of `recipe_name` for `model`, with the default seed and split.
    pub fn defaults(model: ModelKind, recipe_name: RecipeName) -> Self {
        let d = recipe_name.defaults(model);
        TrainSettings {
            model,
            recipe_name,
            epochs: d.epochs,
            batch_size: d.batch_size,
            learning_rate: d.learning_rate,
            seed: DEFAULT_SEED,
            val_split: DEFAULT_VAL_SPLIT,
            image_size: d.image_size,
            recipe: d.recipe,
        }
    }

    /// How images become the model's input at these settings: photo framing (a margin for
    /// the random crops to sample from) under `random-resized-crop`, the image itself
    /// otherwise.
    pub fn framing(&self) -> Framing {
        match self.recipe.augment {
            Augment::RandomResizedCrop => Framing::photo(self.image_size),
            _ => Framing { size: self.image_size, resize: self.image_size },
        }
    }
}

/// The optimiser, chosen with `--optimizer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with Keras's defaults (betas 0.9/0.999, epsilon 1e-7).
    #[default]
    Adam,
    /// SGD with Nesterov momentum and decoupled weight decay.
    Sgd,
}

/// How the learning rate changes over the run, chosen with `--schedule`; every schedule
/// starts with a linear warm-up when `--warmup-epochs` is above zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Half a cosine from the base rate down to zero.
    Cosine,
    /// A straight line from the base rate down to zero (the triangle of one-cycle training).
    Onecycle,
}

/// How the loss weighs the classes, chosen with `--class-weights`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    /// Every image counts the same.
    #[default]
    None,
    /// Each class's images weigh `n / (classes * n_class)` (scikit-learn's "balanced"), so
    /// every class counts the same in the loss however many images it has.
    Balanced,
}

/// What of a pretrained network trains, chosen with `--finetune`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Finetune {
    /// Every layer (also what a network from random weights does).
    #[default]
    Full,
    /// Only the new classification head: the backbone stays as it was, BatchNorm statistics
    /// included, so each image's features are computed once, and the head learns from them
    /// (Create ML's feature extractor, the tutorial's "ConvNet as fixed feature extractor").
    Head,
}

/// Epochs of a pretrained backbone's fine-tuning that train only the new head first
/// (fastai's `fine_tune(freeze_epochs=1)`), unless `--freeze-epochs` says otherwise.
pub const PRETRAINED_FREEZE_EPOCHS: usize = 1;

/// The backbone's rate after the frozen epochs, as a multiple of the head's, unless
/// `--backbone-lr-scale` says otherwise. fastai spreads `slice(lr / 100, lr)` over its layer
/// groups; one factor for the whole backbone, at the middle of that range, measured on
/// hymenoptera (BENCHMARKS.md).
pub const PRETRAINED_BACKBONE_LR_SCALE: f64 = 0.1;

impl ClassWeights {
    /// The per-class loss weights for training images of `counts` per class, or `None` for
    /// equal weights. A class without images gets weight 1 (it never appears in the loss).
    pub fn weights(self, counts: &[usize]) -> Option<Vec<f32>> {
        match self {
            ClassWeights::None => None,
            ClassWeights::Balanced => {
                let total: usize = counts.iter().sum();
                let k = counts.len() as f64;
                Some(
                    counts.iter().map(|&n| if n == 0 { 1.0 } else { (total as f64 / (k * n as f64)) as f32 }).collect(),
                )
            }
        }
    }
}

/// A named set of defaults, chosen with `--recipe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RecipeName {
    /// The original Keras system's: Adam at a constant 1e-3, batch 32, no augmentation.
    Original,
    /// Augmentation, label smoothing, warm-up and decay, weight averaging.
    Modern,
}

/// How the weights are trained, beyond epochs, batch size and base learning rate; saved in
/// `config.json` under `recipe`. A run folder without it used the original recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    pub optimizer: OptimizerKind,
    /// SGD's Nesterov momentum.
    pub momentum: f64,
    /// SGD's decoupled weight decay: each step multiplies the weights by `1 - lr * decay`.
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Epochs of linear warm-up from `lr_start` times the base rate to the base rate.
    pub warmup_epochs: f64,
    /// The rate's factor at the first warm-up step (0: the warm-up starts from zero).
    pub lr_start: f64,
    /// The factor `cosine` and `onecycle` decay to by the last step (0: down to zero).
    pub lr_end: f64,
    /// BatchNorm biases (shifts) train at this multiple of the rate, with the weight decay
    /// per step of the other weights (airbench's bias scaler: the shifts are the only
    /// weights of a normalised network that are not scale-free, and learn slowly otherwise).
    pub norm_bias_lr_scale: f64,
    /// Keep every BatchNorm scale at its initial 1 (airbench): the following convolution
    /// can scale its input as well, so the scales only add a direction to drift in.
    pub freeze_norm_scale: bool,
    /// airbench's lookahead: every 5,120 images the weights are pulled back towards a slow
    /// copy of themselves, by a fraction that grows from 0 to 0.77 over the run as the cube
    /// of its progress; the last step ends on the slow weights. Replaces `ema`.
    pub lookahead: bool,
    /// Weight of the uniform distribution mixed into the one-hot targets (0 = none).
    pub label_smoothing: f64,
    /// How the loss weighs the classes (for imbalanced data).
    pub class_weights: ClassWeights,
    /// What of a pretrained network trains (`--finetune`).
    pub finetune: Finetune,
    /// `--finetune full` from pretrained weights: the first epochs train only the new head,
    /// the backbone frozen (its BatchNorm statistics too), fastai's `fine_tune`. 0 without
    /// pretrained weights.
    pub freeze_epochs: usize,
    /// `--finetune full` from pretrained weights: after the frozen epochs the backbone trains
    /// at this multiple of the head's rate (discriminative rates). 1 without pretrained
    /// weights.
    pub backbone_lr_scale: f64,
    pub augment: Augment,
    /// Reflect padding before a random crop, in pixels: the largest shift `flip-crop` makes.
    pub crop_padding: usize,
    /// `random-resized-crop`'s smallest box, as a fraction of the image's area.
    pub crop_scale: f64,
    /// `random-resized-crop`'s most oblong box (width / height; its inverse too).
    pub crop_ratio: f64,
    /// Decay per step of the exponential moving average of the weights that is evaluated
    /// and saved; `None` evaluates the trained weights themselves.
    pub ema: Option<f64>,
    /// Stop after this many epochs without a better validation accuracy, keeping the best
    /// epoch's weights as the run's model; `None` trains every epoch.
    pub patience: Option<usize>,
    /// The CPU's arithmetic for the convolutions' products (`--precision`); fp32 in run
    /// folders from before it existed.
    pub precision: Precision,
}

impl Default for Recipe {
    /// The original system's recipe.
    fn default() -> Self {
        Recipe {
            optimizer: OptimizerKind::Adam,
            momentum: 0.9,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            lr_start: 0.0,
            lr_end: 0.0,
            norm_bias_lr_scale: 1.0,
            freeze_norm_scale: false,
            lookahead: false,
            label_smoothing: 0.0,
            class_weights: ClassWeights::None,
            finetune: Finetune::Full,
            freeze_epochs: 0,
            backbone_lr_scale: 1.0,
            augment: Augment::None,
            crop_padding: CROP_PADDING,
            crop_scale: CROP_SCALE,
            crop_ratio: CROP_RATIO,
            ema: None,
            patience: None,
            precision: Precision::Fp32,
        }
    }
}

/// Everything a recipe name decides for one model: the recipe and the run's size.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainDefaults {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub image_size: usize,
    pub recipe: Recipe,
}

impl RecipeName {
    /// The recipe a model trains with when `--recipe` is not given.
    pub fn default_for(model: ModelKind) -> RecipeName {
        match model {
            ModelKind::Seed => RecipeName::Original,
            _ => RecipeName::Modern,
        }
    }

    /// The defaults of this recipe for `model`. Every constant was measured on CIFAR-10
    /// (BENCHMARKS.md).
    pub fn defaults(self, model: ModelKind) -> TrainDefaults {
        match (self, model) {
            // The Keras system, exactly: Adam 1e-3, batch 32, 30 epochs.
            (RecipeName::Original, _) => TrainDefaults {
                epochs: 30,
                batch_size: 32,
                learning_rate: 1e-3,
                image_size: model.default_image_size(),
                recipe: Recipe::default(),
            },
            // The seed network has no normalisation, so it keeps Adam; augmentation is what
            // stops its 4.2M-weight dense layer memorising the training set.
            // 15 epochs: with augmentation the seed network no longer peaks early, and the
            // cosine schedule lands at zero in half the original's time.
            (RecipeName::Modern, ModelKind::Seed) => TrainDefaults {
                epochs: 15,
                batch_size: 64,
                learning_rate: 1e-3,
                image_size: 32,
                recipe: Recipe {
                    schedule: Schedule::Cosine,
                    warmup_epochs: 1.0,
                    label_smoothing: 0.1,
                    augment: Augment::FlipCrop,
                    ema: Some(0.999),
                    ..Recipe::default()
                },
            },
            // airbench94's recipe (Keller Jordan), its constants per example carried to
            // batch 256: SGD-Nesterov at momentum 0.85 and 11.5 per 1,024 images (0.375
            // here), weight decay 0.0153 per 1,024 images (3.3e-3 of the weights per step),
            // BatchNorm shifts at 64x the rate and scales frozen, a warm-up from 0.2x over
            // 23% of the run and a linear decay to 0.07x, label smoothing 0.2, 2-pixel
            // translates with alternating flips, and lookahead instead of a moving average.
            // 17 epochs, a warm-up of 3.7 (22% of them; airbench's is 23%): with the unpadded
            // whitening layer (model revision 2) an epoch takes 165-210 s on 2 cores, and the
            // 17-epoch run took 50 minutes (90.0% with flip TTA); 15 in the padded layout
            // took 61 (BENCHMARKS.md).
            (RecipeName::Modern, ModelKind::Fast) => TrainDefaults {
                epochs: 17,
                batch_size: 256,
                learning_rate: 0.375,
                image_size: 32,
                recipe: Recipe {
                    optimizer: OptimizerKind::Sgd,
                    momentum: 0.85,
                    weight_decay: 0.0089,
                    schedule: Schedule::Onecycle,
                    warmup_epochs: 3.7,
                    lr_start: 0.2,
                    lr_end: 0.07,
                    norm_bias_lr_scale: 64.0,
                    freeze_norm_scale: true,
                    lookahead: true,
                    label_smoothing: 0.2,
                    augment: Augment::AltFlipCrop,
                    crop_padding: 2,
                    ema: None,
                    ..Recipe::default()
                },
            },
            // For photos from random weights (ResNets at 128 px): SGD-Nesterov at 0.05 for
            // batch 64 (twice the linear-scaling rule's 0.1 per 256: the one-cycle shape
            // tolerates it; 0.1 diverged in the first steps on hymenoptera) with a one-cycle
            // rate (a 1-epoch warm-up from 0.1x, then linear to zero), decoupled
            // weight decay 5e-5 per step of the rate (PyTorch's usual 5e-4 coupled, per unit
            // rate), label smoothing 0.1, and torchvision's random-resized crops with flips.
            // The EfficientNet-Lites take it too, at their ImageNet size.
            (RecipeName::Modern, _) => TrainDefaults {
                epochs: 20,
                batch_size: 64,
                learning_rate: 0.05,
                image_size: model.default_image_size(),
                recipe: Recipe {
                    optimizer: OptimizerKind::Sgd,
                    momentum: 0.9,
                    weight_decay: 5e-4,
                    schedule: Schedule::Onecycle,
                    warmup_epochs: 1.0,
                    lr_start: 0.1,
                    label_smoothing: 0.1,
                    augment: Augment::RandomResizedCrop,
                    ..Recipe::default()
                },
            },
        }
    }
}

impl Recipe {
    /// What the training batches' augmentation reads.
    pub fn cropping(&self) -> Cropping {
        Cropping {
            augment: self.augment,
            padding: self.crop_padding,
            min_scale: self.crop_scale,
            min_ratio: self.crop_ratio,
        }
    }

    /// The factor applied to the base learning rate at `step` of `total` steps
    /// (0-based), with `steps_per_epoch` steps in an epoch.
    pub fn lr_factor(&self, step: usize, total: usize, steps_per_epoch: usize) -> f64 {
        let warmup = (self.warmup_epochs * steps_per_epoch as f64).round() as usize;
        let warmup = warmup.min(total);
        if step < warmup {
            return self.lr_start + (1.0 - self.lr_start) * (step + 1) as f64 / warmup as f64;
        }
        let decay_steps = total.saturating_sub(warmup).max(1) as f64;
        // Fraction of the decay phase done; the last step still trains at a non-zero rate.
        let done = (step - warmup) as f64 / decay_steps;
        let left = match self.schedule {
            Schedule::Constant => return 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
            Schedule::Onecycle => 1.0 - done,
        };
        self.lr_end + (1.0 - self.lr_end) * left
    }

    /// Checks the values a user can set, naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |v: f64| (0.0..1.0).contains(&v);
        if !in_unit(self.momentum) {
            return Err(format!("--momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!("--weight-decay must be zero or positive, got {}", self.weight_decay));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(format!("--warmup-epochs must be zero or positive, got {}", self.warmup_epochs));
        }
        if !(0.0..=1.0).contains(&self.lr_start) {
            return Err(format!("--lr-start must be a factor in [0, 1], got {}", self.lr_start));
        }
        if !(0.0..=1.0).contains(&self.lr_end) {
            return Err(format!("--lr-end must be a factor in [0, 1], got {}", self.lr_end));
        }
        if !(self.norm_bias_lr_scale > 0.0 && self.norm_bias_lr_scale.is_finite()) {
            return Err(format!("--norm-bias-lr-scale must be positive, got {}", self.norm_bias_lr_scale));
        }
        if self.norm_bias_lr_scale != 1.0 && self.optimizer != OptimizerKind::Sgd {
            return Err("--norm-bias-lr-scale applies to --optimizer sgd only".into());
        }
        if !(self.backbone_lr_scale > 0.0 && self.backbone_lr_scale <= 1.0) {
            return Err(format!(
                "--backbone-lr-scale must be a factor in (0, 1], such as 0.1, got {}",
                self.backbone_lr_scale
            ));
        }
        if self.lookahead && self.ema.is_some() {
            return Err(
                "--lookahead and --ema are two ways of averaging the weights: pass --ema 0 or --lookahead false".into(),
            );
        }
        if !in_unit(self.label_smoothing) {
            return Err(format!("--label-smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        if let Some(decay) = self.ema
            && !(decay > 0.0 && decay < 1.0)
        {
            return Err(format!("--ema must be a decay in (0, 1), such as 0.999, got {decay}"));
        }
        if self.crop_padding > MAX_CROP_PADDING {
            return Err(format!("--crop-padding must be at most {MAX_CROP_PADDING} pixels, got {}", self.crop_padding));
        }
        if !(self.crop_scale > 0.0 && self.crop_scale <= 1.0) {
            return Err(format!(
                "--crop-scale must be an area fraction in (0, 1], such as 0.35, got {}",
                self.crop_scale
            ));
        }
        if !(self.crop_ratio > 0.0 && self.crop_ratio <= 1.0) {
            return Err(format!(
                "--crop-ratio must be in (0, 1], such as 0.75 (for 3:4 to 4:3), got {}",
                self.crop_ratio
            ));
        }
        if self.patience == Some(0) {
            return Err("--patience must be at least 1 epoch".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(schedule: Schedule, warmup_epochs: f64) -> Recipe {
        Recipe { schedule, warmup_epochs, ..Recipe::default() }
    }

    #[test]
    fn only_the_resnets_take_other_image_sizes() {
        let seed = TrainSettings { image_size: 64, ..TrainSettings::defaults(ModelKind::Seed, RecipeName::Original) };
        let err = seed.validate().unwrap_err();
        assert!(err.contains("--model seed") && err.contains("--image-size 64"), "{err}");
        let resnet = TrainSettings::defaults(ModelKind::Resnet18, RecipeName::Modern);
        assert_eq!((resnet.image_size, resnet.validate()), (128, Ok(())));
        let huge = TrainSettings { image_size: 2048, ..resnet };
        assert!(huge.validate().unwrap_err().contains("32 to 1024"));
    }

    #[test]
    fn balanced_class_weights_make_every_class_count_the_same() {
        assert_eq!(ClassWeights::None.weights(&[10, 30]), None);
        let w = ClassWeights::Balanced.weights(&[10, 30, 0]).unwrap();
        // 40 images, 3 classes: 40 / (3 * 10) and 40 / (3 * 30); an empty class weighs 1.
        assert!((w[0] - 4.0 / 3.0).abs() < 1e-6 && (w[1] - 4.0 / 9.0).abs() < 1e-6 && w[2] == 1.0, "{w:?}");
        // Each class's total weight is then the same.
        assert!((w[0] * 10.0 - w[1] * 30.0).abs() < 1e-5);
    }

    #[test]
    fn the_original_recipe_is_the_keras_systems() {
        let d = RecipeName::Original.defaults(ModelKind::Seed);
        assert_eq!((d.epochs, d.batch_size, d.learning_rate), (30, 32, 1e-3));
        assert_eq!(d.recipe, Recipe::default());
        assert_eq!(d.recipe.augment, Augment::None);
        assert!((0..1000).all(|s| d.recipe.lr_factor(s, 1000, 100) == 1.0));
        assert_eq!(RecipeName::default_for(ModelKind::Seed), RecipeName::Original);
        assert_eq!(RecipeName::default_for(ModelKind::Fast), RecipeName::Modern);
    }

    #[test]
    fn warm_up_rises_linearly_then_each_schedule_decays_as_named() {
        // 10 steps per epoch, 1 warm-up epoch, 110 steps: warm-up ends at step 10.
        let cos = with(Schedule::Cosine, 1.0);
        assert!((cos.lr_factor(0, 110, 10) - 0.1).abs() < 1e-12);
        assert!((cos.lr_factor(4, 110, 10) - 0.5).abs() < 1e-12);
        assert_eq!(cos.lr_factor(10, 110, 10), 1.0);
        // Half-way through the decay: cos(pi/2) -> 0.5.
        assert!((cos.lr_factor(60, 110, 10) - 0.5).abs() < 1e-12);
        assert!(cos.lr_factor(109, 110, 10) > 0.0 && cos.lr_factor(109, 110, 10) < 0.001);

        let one = with(Schedule::Onecycle, 1.0);
        assert!((one.lr_factor(60, 110, 10) - 0.5).abs() < 1e-12);
        assert!((one.lr_factor(85, 110, 10) - 0.25).abs() < 1e-12);
        assert!((one.lr_factor(109, 110, 10) - 0.01).abs() < 1e-12);

        let constant = with(Schedule::Constant, 0.5);
        assert!((constant.lr_factor(0, 100, 10) - 0.2).abs() < 1e-12);
        assert_eq!(constant.lr_factor(5, 100, 10), 1.0);
        assert_eq!(with(Schedule::Cosine, 0.0).lr_factor(0, 100, 10), 1.0);
    }

    #[test]
    fn the_warm_up_can_start_and_the_decay_end_above_zero() {
        // airbench's shape: from 0.2 up to 1 over 10 steps, then linearly down to 0.07.
        let r = Recipe { lr_start: 0.2, lr_end: 0.07, ..with(Schedule::Onecycle, 1.0) };
        assert!((r.lr_factor(0, 110, 10) - 0.28).abs() < 1e-12);
        assert!((r.lr_factor(9, 110, 10) - 1.0).abs() < 1e-12);
        assert!((r.lr_factor(60, 110, 10) - (0.07 + 0.93 * 0.5)).abs() < 1e-12);
        assert!((r.lr_factor(109, 110, 10) - (0.07 + 0.93 * 0.01)).abs() < 1e-12);
        let cos = Recipe { lr_end: 0.1, ..with(Schedule::Cosine, 0.0) };
        assert!((cos.lr_factor(50, 100, 10) - (0.1 + 0.9 * 0.5)).abs() < 1e-12);
        // A constant rate ignores the end factor.
        assert_eq!(Recipe { lr_end: 0.5, ..with(Schedule::Constant, 0.0) }.lr_factor(99, 100, 10), 1.0);
    }

    #[test]
    fn a_warm_up_longer_than_the_run_still_gives_finite_rates() {
        let r = with(Schedule::Onecycle, 50.0);
        for s in 0..20 {
            let f = r.lr_factor(s, 20, 10);
            assert!(f > 0.0 && f <= 1.0, "step {s}: {f}");
        }
    }

    #[test]
    fn run_settings_are_checked_before_any_data_is_read() {
        let seed = TrainSettings::defaults(ModelKind::Seed, RecipeName::Original);
        assert!(seed.validate().is_ok());
        assert!(TrainSettings::defaults(ModelKind::Fast, RecipeName::Modern).validate().is_ok());
        let bad = |s: TrainSettings, flag: &str| {
            let err = s.validate().unwrap_err();
            assert!(err.contains(flag), "{err}");
        };
        bad(TrainSettings { epochs: 0, ..seed.clone() }, "--epochs");
        bad(TrainSettings { batch_size: 0, ..seed.clone() }, "--batch-size");
        bad(TrainSettings { learning_rate: -1.0, ..seed.clone() }, "--lr");
        bad(TrainSettings { val_split: 1.5, ..seed.clone() }, "--val-split");
        bad(TrainSettings { recipe: Recipe { momentum: 2.0, ..Recipe::default() }, ..seed.clone() }, "--momentum");
        // Early stopping needs validation images to stop on.
        let patient = Recipe { patience: Some(2), ..Recipe::default() };
        bad(TrainSettings { val_split: 0.0, recipe: patient.clone(), ..seed.clone() }, "--patience");
        assert!(TrainSettings { val_split: 0.0, ..seed.clone() }.validate().is_ok());
        assert!(TrainSettings { recipe: patient, ..seed }.validate().is_ok());
    }

    #[test]
    fn validation_names_the_flag() {
        assert!(Recipe::default().validate().is_ok());
        assert!(RecipeName::Modern.defaults(ModelKind::Fast).recipe.validate().is_ok());
        let bad = |r: Recipe, flag: &str| assert!(r.validate().unwrap_err().contains(flag));
        bad(Recipe { momentum: 1.0, ..Recipe::default() }, "--momentum");
        bad(Recipe { weight_decay: -1.0, ..Recipe::default() }, "--weight-decay");
        bad(Recipe { label_smoothing: 1.5, ..Recipe::default() }, "--label-smoothing");
        bad(Recipe { ema: Some(1.0), ..Recipe::default() }, "--ema");
        bad(Recipe { patience: Some(0), ..Recipe::default() }, "--patience");
        bad(Recipe { crop_padding: 9, ..Recipe::default() }, "--crop-padding");
        bad(Recipe { warmup_epochs: f64::NAN, ..Recipe::default() }, "--warmup-epochs");
        bad(Recipe { lr_start: 1.5, ..Recipe::default() }, "--lr-start");
        bad(Recipe { lr_end: -0.1, ..Recipe::default() }, "--lr-end");
        bad(Recipe { norm_bias_lr_scale: 0.0, ..Recipe::default() }, "--norm-bias-lr-scale");
        bad(Recipe { norm_bias_lr_scale: 64.0, ..Recipe::default() }, "--norm-bias-lr-scale");
        bad(Recipe { lookahead: true, ema: Some(0.99), ..Recipe::default() }, "--lookahead");
    }

    #[test]
    fn a_config_without_a_recipe_reads_as_the_original() {
        let r: Recipe = serde_json::from_str("{}").unwrap();
        assert_eq!(r, Recipe::default());
        let r: Recipe = serde_json::from_str(r#"{"optimizer":"sgd","augment":"flip-crop"}"#).unwrap();
        assert_eq!((r.optimizer, r.augment), (OptimizerKind::Sgd, Augment::FlipCrop));
    }
}
