//! The one table of training settings, as airbench keeps its `hyp` dict: each row names a
//! setting once, and everything else is derived from it:
//!
//! - the `classify train --NAME` flag, its help and the defaults that help lists (read off
//!   the recipes themselves, so they cannot drift from what training does);
//! - the SageMaker hyperparameter `NAME` (values are strings, as SageMaker sends them; `_`
//!   may stand for `-`);
//! - what `--resume` does with it ([`OnResume`]);
//! - where its value goes in [`TrainSettings`].
//!
//! A new setting is one row here (and its field in [`TrainSettings`] or [`Recipe`]). The
//! command line and a SageMaker job both produce a [`Given`] (names and raw values), and
//! [`Given::resolve`] turns one into settings.

use std::collections::BTreeMap;
use std::str::FromStr;

use clap::builder::PossibleValue;
use clap::{Arg, ArgAction, ArgMatches, ValueEnum};

use super::{ClassWeights, Finetune, OptimizerKind, Recipe, RecipeName, Schedule, TrainSettings};
use crate::data::augment::Augment;
use crate::kernels::Precision;
use crate::model::ModelKind;

/// What `classify train --resume` does with a setting given on its command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnResume {
    /// The run keeps its saved value; the flag is named in a warning.
    Kept,
    /// The given value replaces the saved one (`--epochs`, to train a run further).
    Replaces,
}

/// The help's `[default: ...]` part.
#[derive(Clone, Copy)]
enum Defaults {
    /// Read off the recipes: the original recipe's value, then where `seed` with `modern`
    /// and `fast` (whose default recipe is `modern`) differ from it.
    Recipes(fn(&TrainSettings) -> String),
    /// Written out, for settings that choose the recipe themselves.
    Text(&'static str),
}

/// One training setting. See the module docs.
pub struct Setting {
    /// The flag's long name and the SageMaker hyperparameter's name.
    pub name: &'static str,
    /// The placeholder in `--help`.
    value_name: &'static str,
    /// What it does, without its defaults.
    help: &'static str,
    defaults: Defaults,
    /// The value implied by the flag given alone (`--ema` means `--ema 0.999`), if it may be.
    pub alone: Option<&'static str>,
    pub on_resume: OnResume,
    /// A valid value, for the tests and the examples.
    pub example: &'static str,
    /// The names a value may take, for settings that choose among names.
    choices: Option<fn() -> Vec<PossibleValue>>,
    /// Parses a raw value into its place in `settings`.
    apply: fn(&mut TrainSettings, &str) -> Result<(), String>,
}

/// A setting's value that does not parse, or a name that is no setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("{name} = {value:?} is not a valid value: {reason}")]
    Invalid { name: String, value: String, reason: String },
    #[error("unknown setting {0:?}")]
    Unknown(String),
}

fn number<T: FromStr>(value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// `true` or `false`, in any case (SageMaker's Python SDK sends `str(True)`, `"True"`).
fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Stores a parsed value, or passes its parse error on.
fn set<T>(slot: &mut T, value: Result<T, String>) -> Result<(), String> {
    *slot = value?;
    Ok(())
}

fn name<E: ValueEnum>(value: &str) -> Result<E, String> {
    E::from_str(value.trim(), true).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|v| v.get_name().to_string())
            .collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn choices<E: ValueEnum>() -> Vec<PossibleValue> {
    E::value_variants().iter().filter_map(ValueEnum::to_possible_value).collect()
}

fn shown(value: impl ValueEnum) -> String {
    value.to_possible_value().map_or_else(String::new, |v| v.get_name().to_string())
}

/// Every training setting, in the order they are applied: a later row may override what an
/// earlier one implied (`--optimizer adam` resets the SGD-only `--norm-bias-lr-scale`, which
/// an explicit `--norm-bias-lr-scale` then sets; `--ema D` turns a recipe's lookahead off,
/// which an explicit `--lookahead` then sets).
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: "model",
        value_name: "NAME",
        help: "The architecture.",
        defaults: Defaults::Text("seed"),
        alone: None,
        on_resume: OnResume::Kept,
        example: "fast",
        choices: Some(choices::<ModelKind>),
        apply: |s, v| set(&mut s.model, name(v)),
    },
    Setting {
        name: "recipe",
        value_name: "NAME",
        help: "Named defaults for everything below: `original` (the Keras system: Adam 1e-3, batch 32, 30 \
               epochs, nothing else) or `modern` (augmentation, label smoothing, warm-up and decay, weight \
               averaging).",
        defaults: Defaults::Text("original for seed, modern for the others"),
        alone: None,
        on_resume: OnResume::Kept,
        example: "modern",
        choices: Some(choices::<RecipeName>),
        apply: |s, v| set(&mut s.recipe_name, name(v)),
    },
    Setting {
        name: "epochs",
        value_name: "N",
        help: "Passes over the training set (with --resume: the new total).",
        defaults: Defaults::Recipes(|s| s.epochs.to_string()),
        alone: None,
        on_resume: OnResume::Replaces,
        example: "3",
        choices: None,
        apply: |s, v| set(&mut s.epochs, number(v)),
    },
    Setting {
        name: "image-size",
        value_name: "PIXELS",
        help: "Side of the square images the model sees: each image's shorter side is resized and its centre \
               cut out (random crops while training). seed and fast take 32 only.",
        defaults: Defaults::Recipes(|s| s.image_size.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "32",
        choices: None,
        apply: |s, v| set(&mut s.image_size, number(v)),
    },
    Setting {
        name: "batch-size",
        value_name: "N",
        help: "Images per optimiser step.",
        defaults: Defaults::Recipes(|s| s.batch_size.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "8",
        choices: None,
        apply: |s, v| set(&mut s.batch_size, number(v)),
    },
    Setting {
        name: "lr",
        value_name: "F",
        help: "Base learning rate.",
        defaults: Defaults::Recipes(|s| s.learning_rate.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.002",
        choices: None,
        apply: |s, v| set(&mut s.learning_rate, number(v)),
    },
    Setting {
        name: "optimizer",
        value_name: "NAME",
        help: "Optimiser: `adam` (Keras's defaults) or `sgd` (Nesterov momentum, decoupled weight decay).",
        defaults: Defaults::Recipes(|s| shown(s.recipe.optimizer)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "sgd",
        choices: Some(choices::<OptimizerKind>),
        apply: |s, v| {
            s.recipe.optimizer = name(v)?;
            // A recipe's SGD-only setting does not follow `--optimizer adam`.
            if s.recipe.optimizer == OptimizerKind::Adam {
                s.recipe.norm_bias_lr_scale = Recipe::default().norm_bias_lr_scale;
            }
            Ok(())
        },
    },
    Setting {
        name: "momentum",
        value_name: "F",
        help: "SGD's Nesterov momentum.",
        defaults: Defaults::Recipes(|s| s.recipe.momentum.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.8",
        choices: None,
        apply: |s, v| set(&mut s.recipe.momentum, number(v)),
    },
    Setting {
        name: "weight-decay",
        value_name: "F",
        help: "SGD's decoupled weight decay per unit of learning rate.",
        defaults: Defaults::Recipes(|s| s.recipe.weight_decay.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.001",
        choices: None,
        apply: |s, v| set(&mut s.recipe.weight_decay, number(v)),
    },
    Setting {
        name: "schedule",
        value_name: "NAME",
        help: "Learning-rate schedule after the warm-up.",
        defaults: Defaults::Recipes(|s| shown(s.recipe.schedule)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "cosine",
        choices: Some(choices::<Schedule>),
        apply: |s, v| set(&mut s.recipe.schedule, name(v)),
    },
    Setting {
        name: "warmup-epochs",
        value_name: "F",
        help: "Epochs of linear learning-rate warm-up (fractions allowed).",
        defaults: Defaults::Recipes(|s| s.recipe.warmup_epochs.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.5",
        choices: None,
        apply: |s, v| set(&mut s.recipe.warmup_epochs, number(v)),
    },
    Setting {
        name: "lr-start",
        value_name: "F",
        help: "The learning rate's factor at the first warm-up step.",
        defaults: Defaults::Recipes(|s| s.recipe.lr_start.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.1",
        choices: None,
        apply: |s, v| set(&mut s.recipe.lr_start, number(v)),
    },
    Setting {
        name: "lr-end",
        value_name: "F",
        help: "The factor `cosine` and `onecycle` decay to by the last step.",
        defaults: Defaults::Recipes(|s| s.recipe.lr_end.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.05",
        choices: None,
        apply: |s, v| set(&mut s.recipe.lr_end, number(v)),
    },
    Setting {
        name: "norm-bias-lr-scale",
        value_name: "F",
        help: "SGD: BatchNorm shifts train at this multiple of the learning rate, with the same weight decay \
               per step.",
        defaults: Defaults::Recipes(|s| s.recipe.norm_bias_lr_scale.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "16",
        choices: None,
        apply: |s, v| set(&mut s.recipe.norm_bias_lr_scale, number(v)),
    },
    Setting {
        name: "freeze-norm-scale",
        value_name: "BOOL",
        help: "Keep BatchNorm scales fixed at 1 (`--freeze-norm-scale false` trains them).",
        defaults: Defaults::Recipes(|s| s.recipe.freeze_norm_scale.to_string()),
        alone: Some("true"),
        on_resume: OnResume::Kept,
        example: "true",
        choices: None,
        apply: |s, v| set(&mut s.recipe.freeze_norm_scale, boolean(v)),
    },
    Setting {
        name: "ema",
        value_name: "DECAY",
        help: "Evaluate and save an exponential moving average of the weights with this decay per step \
               (`--ema` alone: 0.999; `--ema 0`: off; given alone it replaces a recipe's lookahead).",
        defaults: Defaults::Recipes(|s| s.recipe.ema.map_or_else(|| "off".to_string(), |d| d.to_string())),
        alone: Some("0.999"),
        on_resume: OnResume::Kept,
        example: "0.99",
        choices: None,
        apply: |s, v| {
            let decay: f64 = number(v)?;
            s.recipe.ema = (decay != 0.0).then_some(decay);
            // Asking for a moving average replaces a recipe's lookahead.
            if s.recipe.ema.is_some() {
                s.recipe.lookahead = false;
            }
            Ok(())
        },
    },
    Setting {
        name: "lookahead",
        value_name: "BOOL",
        help: "airbench's lookahead: every 5,120 images pull the weights back towards a slow copy, more \
               strongly as the run ends, and end on the slow copy (`--lookahead false`: off).",
        defaults: Defaults::Recipes(|s| s.recipe.lookahead.to_string()),
        alone: Some("true"),
        on_resume: OnResume::Kept,
        example: "false",
        choices: None,
        apply: |s, v| set(&mut s.recipe.lookahead, boolean(v)),
    },
    Setting {
        name: "label-smoothing",
        value_name: "F",
        help: "Label smoothing: weight of the uniform distribution in the targets.",
        defaults: Defaults::Recipes(|s| s.recipe.label_smoothing.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.1",
        choices: None,
        apply: |s, v| set(&mut s.recipe.label_smoothing, number(v)),
    },
    Setting {
        name: "class-weights",
        value_name: "NAME",
        help: "How the loss weighs the classes: `balanced` makes every class count the same however many \
               images it has (for imbalanced data; `classify data inspect` warns about it).",
        defaults: Defaults::Recipes(|s| shown(s.recipe.class_weights)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "balanced",
        choices: Some(choices::<ClassWeights>),
        apply: |s, v| set(&mut s.recipe.class_weights, name(v)),
    },
    Setting {
        name: "finetune",
        value_name: "PART",
        help: "What of a --pretrained network trains: `full` (every layer) or `head` (only the new \
               classification head, on features computed once per image: the fast way on a CPU).",
        defaults: Defaults::Recipes(|s| shown(s.recipe.finetune)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "head",
        choices: Some(choices::<Finetune>),
        apply: |s, v| set(&mut s.recipe.finetune, name(v)),
    },
    Setting {
        name: "freeze-epochs",
        value_name: "N",
        help: "With --pretrained and --finetune full: the first N epochs train only the new head, the backbone \
               and its BatchNorm statistics frozen; then every layer trains (fastai's fine_tune).",
        defaults: Defaults::Text("1 with --pretrained, else 0"),
        alone: None,
        on_resume: OnResume::Kept,
        example: "2",
        choices: None,
        apply: |s, v| set(&mut s.recipe.freeze_epochs, number(v)),
    },
    Setting {
        name: "backbone-lr-scale",
        value_name: "F",
        help: "With --pretrained and --finetune full: the backbone's rate as a multiple of the head's \
               (discriminative rates; 1 trains every layer at the same rate).",
        defaults: Defaults::Text("0.1 with --pretrained, else 1"),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.2",
        choices: None,
        apply: |s, v| set(&mut s.recipe.backbone_lr_scale, number(v)),
    },
    Setting {
        name: "augment",
        value_name: "NAME",
        help: "Training-image augmentation.",
        defaults: Defaults::Recipes(|s| shown(s.recipe.augment)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "flip-crop",
        choices: Some(choices::<Augment>),
        apply: |s, v| set(&mut s.recipe.augment, name(v)),
    },
    Setting {
        name: "crop-padding",
        value_name: "N",
        help: "Reflect padding before flip-crop's random crop, i.e. the largest shift in pixels (at most 8).",
        defaults: Defaults::Recipes(|s| s.recipe.crop_padding.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "3",
        choices: None,
        apply: |s, v| set(&mut s.recipe.crop_padding, number(v)),
    },
    Setting {
        name: "crop-scale",
        value_name: "FRACTION",
        help: "Smallest box random-resized-crop cuts, as a fraction of the image's area (the largest is all of it).",
        defaults: Defaults::Recipes(|s| s.recipe.crop_scale.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.5",
        choices: None,
        apply: |s, v| set(&mut s.recipe.crop_scale, number(v)),
    },
    Setting {
        name: "crop-ratio",
        value_name: "RATIO",
        help: "Most oblong box random-resized-crop cuts, width over height: 0.75 allows 3:4 to 4:3.",
        defaults: Defaults::Recipes(|s| s.recipe.crop_ratio.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.5",
        choices: None,
        apply: |s, v| set(&mut s.recipe.crop_ratio, number(v)),
    },
    Setting {
        name: "patience",
        value_name: "N",
        help: "Stop after this many epochs without a better validation accuracy; the run's model is then the \
               best epoch's weights.",
        defaults: Defaults::Recipes(|s| s.recipe.patience.map_or_else(|| "off".to_string(), |p| p.to_string())),
        alone: None,
        on_resume: OnResume::Kept,
        example: "2",
        choices: None,
        apply: |s, v| set(&mut s.recipe.patience, number(v).map(Some)),
    },
    Setting {
        name: "seed",
        value_name: "N",
        help: "Seed for initialisation, shuffling, dropout and augmentation.",
        defaults: Defaults::Recipes(|s| s.seed.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "7",
        choices: None,
        apply: |s, v| set(&mut s.seed, number(v)),
    },
    Setting {
        name: "precision",
        value_name: "NAME",
        help: "Arithmetic of the 3x3 convolutions' products on the CPU: `fp32`, or `bf16` (operands rounded to \
               bfloat16, sums, weights and optimiser state fp32; AVX512-BF16 dot products where the CPU has \
               them, else emulated and slower than fp32). Other devices compute in fp32.",
        defaults: Defaults::Recipes(|s| shown(s.recipe.precision)),
        alone: None,
        on_resume: OnResume::Kept,
        example: "bf16",
        choices: Some(choices::<Precision>),
        apply: |s, v| set(&mut s.recipe.precision, name(v)),
    },
    Setting {
        name: "val-split",
        value_name: "F",
        help: "Fraction of each class held out for validation: the last F of its items in file-name (or \
               record) order.",
        defaults: Defaults::Recipes(|s| s.val_split.to_string()),
        alone: None,
        on_resume: OnResume::Kept,
        example: "0.25",
        choices: None,
        apply: |s, v| set(&mut s.val_split, number(v)),
    },
];

impl Setting {
    /// The row named `name` (flag spelling; `_` may stand for `-`).
    pub fn named(name: &str) -> Option<&'static Setting> {
        let name = name.replace('_', "-");
        SETTINGS.iter().find(|s| s.name == name)
    }

    /// Parses `value` into its place in `settings`, naming the setting when it does not parse.
    pub fn apply(&self, settings: &mut TrainSettings, value: &str) -> Result<(), SettingError> {
        (self.apply)(settings, value).map_err(|reason| SettingError::Invalid {
            name: self.name.to_string(),
            value: value.to_string(),
            reason,
        })
    }

    /// The help's `[default: ...]` text.
    pub fn defaults_text(&self) -> String {
        match self.defaults {
            Defaults::Text(text) => format!("[default: {text}]"),
            Defaults::Recipes(show) => {
                let base = show(&TrainSettings::defaults(ModelKind::Seed, RecipeName::Original));
                let mut text = format!("[default: {base}");
                for (label, model) in
                    [("seed modern", ModelKind::Seed), ("fast", ModelKind::Fast), ("resnet", ModelKind::Resnet18)]
                {
                    let value = show(&TrainSettings::defaults(model, RecipeName::Modern));
                    if value != base {
                        text.push_str(&format!("; {label}: {value}"));
                    }
                }
                text.push(']');
                text
            }
        }
    }

    /// The `classify train` flag.
    pub fn arg(&'static self) -> Arg {
        let check = move |value: &str| -> Result<String, String> {
            let mut scratch = TrainSettings::defaults(ModelKind::Seed, RecipeName::Original);
            (self.apply)(&mut scratch, value).map(|()| value.to_string())
        };
        let mut arg = Arg::new(self.name)
            .long(self.name)
            .value_name(self.value_name)
            .action(ArgAction::Set)
            .help(format!("{} {}", self.help, self.defaults_text()));
        arg = match self.choices {
            Some(choices) => arg.value_parser(clap::builder::PossibleValuesParser::new(choices())),
            None => arg.value_parser(check),
        };
        if let Some(alone) = self.alone {
            arg = arg.num_args(0..=1).default_missing_value(alone);
        }
        arg
    }
}

/// Settings given by name, with their raw values: from the command line, from a SageMaker
/// job, or both (see [`Given::or`]). Names are the table's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Given(BTreeMap<&'static str, String>);

impl Given {
    /// Records `value` for the setting `name` (`_` may stand for `-`).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> Result<(), SettingError> {
        let setting = Setting::named(name).ok_or_else(|| SettingError::Unknown(name.to_string()))?;
        self.0.insert(setting.name, value.into());
        Ok(())
    }

    /// The raw value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The settings given, each with its value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Setting, &str)> {
        SETTINGS.iter().filter_map(|s| self.get(s.name).map(|v| (s, v)))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// These settings, with `fallback`'s for those not given here.
    pub fn or(mut self, fallback: &Given) -> Given {
        for (name, value) in &fallback.0 {
            self.0.entry(name).or_insert_with(|| value.clone());
        }
        self
    }

    /// The settings of a new run: the defaults of the model's recipe (both given or their
    /// defaults), then every given value in table order.
    pub fn resolve(&self) -> Result<TrainSettings, SettingError> {
        let mut first = TrainSettings::defaults(ModelKind::Seed, RecipeName::Original);
        if let (Some(value), Some(setting)) = (self.get("model"), Setting::named("model")) {
            setting.apply(&mut first, value)?;
        }
        first.recipe_name = RecipeName::default_for(first.model);
        if let (Some(value), Some(setting)) = (self.get("recipe"), Setting::named("recipe")) {
            setting.apply(&mut first, value)?;
        }
        let mut settings = TrainSettings::defaults(first.model, first.recipe_name);
        for (setting, value) in self.iter() {
            setting.apply(&mut settings, value)?;
        }
        Ok(settings)
    }
}

impl clap::FromArgMatches for Given {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Given::default();
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<String>(setting.name) {
                given.0.insert(setting.name, value.clone());
            }
        }
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for Given {
    fn augment_args(command: clap::Command) -> clap::Command {
        command.args(SETTINGS.iter().map(Setting::arg))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(pairs: &[(&str, &str)]) -> Given {
        let mut given = Given::default();
        for (name, value) in pairs {
            given.insert(name, *value).unwrap();
        }
        given
    }

    #[test]
    fn nothing_given_is_the_seed_models_original_recipe() {
        let settings = Given::default().resolve().unwrap();
        assert_eq!(settings, TrainSettings::defaults(ModelKind::Seed, RecipeName::Original));
        assert_eq!((settings.epochs, settings.batch_size, settings.seed, settings.val_split), (30, 32, 42, 0.1));
    }

    #[test]
    fn the_model_picks_its_recipe_and_flags_override_it() {
        let fast = given(&[("model", "fast")]).resolve().unwrap();
        assert_eq!(fast, TrainSettings::defaults(ModelKind::Fast, RecipeName::Modern));
        let s =
            given(&[("model", "fast"), ("recipe", "original"), ("epochs", "3"), ("lr_end", "0.5")]).resolve().unwrap();
        assert_eq!((s.model, s.recipe_name, s.epochs), (ModelKind::Fast, RecipeName::Original, 3));
        assert_eq!(s.recipe, Recipe { lr_end: 0.5, ..Recipe::default() });
    }

    #[test]
    fn implied_settings_follow_the_flags_that_imply_them() {
        // `--optimizer adam` on the fast recipe drops its SGD-only shift scale...
        let s = given(&[("model", "fast"), ("optimizer", "adam")]).resolve().unwrap();
        assert_eq!(s.recipe.norm_bias_lr_scale, 1.0);
        // ...unless the scale is given too (and then validation refuses the pair).
        let s = given(&[("model", "fast"), ("optimizer", "adam"), ("norm-bias-lr-scale", "8")]).resolve().unwrap();
        assert_eq!(s.recipe.norm_bias_lr_scale, 8.0);
        assert!(s.recipe.validate().is_err());
        // `--ema D` replaces the fast recipe's lookahead; `--ema 0` turns averaging off.
        let s = given(&[("model", "fast"), ("ema", "0.99")]).resolve().unwrap();
        assert_eq!((s.recipe.ema, s.recipe.lookahead), (Some(0.99), false));
        let s = given(&[("model", "fast"), ("ema", "0")]).resolve().unwrap();
        assert_eq!((s.recipe.ema, s.recipe.lookahead), (None, true));
        let s = given(&[("model", "seed"), ("recipe", "modern"), ("ema", "0")]).resolve().unwrap();
        assert_eq!(s.recipe.ema, None);
    }

    #[test]
    fn bad_values_and_names_are_named() {
        let err = given(&[("epochs", "many")]).resolve().unwrap_err();
        assert!(err.to_string().contains("epochs = \"many\""), "{err}");
        let err = given(&[("lookahead", "maybe")]).resolve().unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
        assert!(given(&[("lookahead", "True"), ("freeze-norm-scale", "FALSE")]).resolve().is_ok());
        let err = given(&[("optimizer", "rmsprop")]).resolve().unwrap_err();
        assert!(err.to_string().contains("adam, sgd"), "{err}");
        assert_eq!(Given::default().insert("epochz", "3"), Err(SettingError::Unknown("epochz".into())));
    }

    #[test]
    fn every_example_is_a_valid_value() {
        for setting in SETTINGS {
            let resolved = given(&[(setting.name, setting.example)]).resolve();
            assert!(resolved.is_ok(), "{}: {resolved:?}", setting.name);
            if let Some(alone) = setting.alone {
                assert!(given(&[(setting.name, alone)]).resolve().is_ok(), "{}", setting.name);
            }
        }
    }

    #[test]
    fn help_lists_the_defaults_the_recipes_use() {
        let epochs = Setting::named("epochs").unwrap();
        assert_eq!(epochs.defaults_text(), "[default: 30; seed modern: 15; fast: 17; resnet: 20]");
        assert_eq!(Setting::named("lr").unwrap().defaults_text(), "[default: 0.001; fast: 0.375; resnet: 0.05]");
        assert_eq!(Setting::named("image-size").unwrap().defaults_text(), "[default: 32; resnet: 128]");
        assert_eq!(Setting::named("seed").unwrap().defaults_text(), "[default: 42]");
        assert_eq!(Setting::named("ema").unwrap().defaults_text(), "[default: off; seed modern: 0.999]");
    }

    #[test]
    fn pretrained_full_fine_tuning_freezes_an_epoch_and_slows_the_backbone_unless_told() {
        let resolved = |pairs: &[(&str, &str)], pretrained: bool| {
            let given = given(&[&[("model", "efficientnet-lite0")], pairs].concat());
            let mut settings = given.resolve().unwrap();
            settings.for_pretrained(pretrained, &given).map(|()| settings.recipe)
        };
        let recipe = resolved(&[], true).unwrap();
        assert_eq!((recipe.freeze_epochs, recipe.backbone_lr_scale), (1, 0.1));
        let recipe = resolved(&[("freeze-epochs", "3"), ("backbone-lr-scale", "1")], true).unwrap();
        assert_eq!((recipe.freeze_epochs, recipe.backbone_lr_scale), (3, 1.0));
        // One epoch trains every layer; from random weights nothing is frozen or slowed.
        assert_eq!(resolved(&[("epochs", "1")], true).unwrap().freeze_epochs, 0);
        let recipe = resolved(&[], false).unwrap();
        assert_eq!((recipe.freeze_epochs, recipe.backbone_lr_scale), (0, 1.0));
        let err = resolved(&[("freeze-epochs", "2")], false).unwrap_err();
        assert!(err.contains("--freeze-epochs applies to a --pretrained backbone"), "{err}");
        let err = resolved(&[("finetune", "head"), ("backbone-lr-scale", "0.5")], true).unwrap_err();
        assert!(err.contains("--backbone-lr-scale applies to --finetune full"), "{err}");
        // More frozen epochs than epochs, or a rate factor outside (0, 1], are named.
        let mut settings = given(&[("epochs", "2"), ("freeze-epochs", "3")]).resolve().unwrap();
        assert!(settings.validate().unwrap_err().contains("--freeze-epochs 3 is more than --epochs 2"));
        settings.recipe.freeze_epochs = 0;
        settings.recipe.backbone_lr_scale = 0.0;
        assert!(settings.validate().unwrap_err().contains("--backbone-lr-scale must be a factor in (0, 1]"));
    }

    #[test]
    fn the_command_line_wins_over_the_fallback() {
        let merged = given(&[("epochs", "3")]).or(&given(&[("epochs", "9"), ("seed", "5")]));
        assert_eq!((merged.get("epochs"), merged.get("seed")), (Some("3"), Some("5")));
    }
}
