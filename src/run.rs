//! The run folder: everything a training run leaves behind, and how it is read back.
//!
//! ```text
//! runs/NAME/
//!   config.json        resolved settings (RunConfig), with a format version
//!   classes.txt        class names, one per line, in label order
//!   model.bpk          weights after the last completed epoch (burnpack)
//!   metrics.jsonl      one JSON object per completed epoch (EpochMetrics)
//!   checkpoint.json    the last complete checkpoint: epoch, files, metrics history
//!   checkpoint/        model and optimiser state of that epoch
//! ```
//!
//! Every file is written under a temporary name and renamed into place, and
//! `checkpoint.json` is renamed after the epoch's weights, optimiser state and published
//! `model.bpk`, so a run killed or failing at any moment resumes from the last checkpoint
//! that was completely written, and `model.bpk` is never older than that checkpoint.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::geometry::{Framing, ImageShape};
use crate::model::ModelKind;
use crate::settings::{AdamSettings, Recipe, RecipeName, TrainSettings};

/// Version of the run-folder layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

pub const CONFIG_FILE: &str = "config.json";
pub const CLASSES_FILE: &str = "classes.txt";
pub const WEIGHTS_FILE: &str = "model.bpk";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Errors reading or writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file of the run could not be written (full disk, permissions, a folder in the way).
    /// The file it would have replaced is untouched, so the last complete checkpoint is kept.
    #[error(
        "cannot write {}: {cause}; the last complete checkpoint is kept: free disk space or \
         fix the folder's permissions, then continue with `classify train --resume --out {}`",
        path.display(),
        run_folder_of(path).display()
    )]
    Write {
        path: PathBuf,
        /// The operating system's error, shown in the message (not chained, so it is not
        /// printed twice).
        cause: std::io::Error,
    },
    #[error("{}: {} ({source}); the run folder is damaged", path.display(), json_problem(source))]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{0} is not a run folder (no config.json): run `classify train --out {0}` first")]
    NotARun(PathBuf),
    #[error(
        "{path} was written by a newer classify (run format {found}, this build reads {FORMAT_VERSION}): upgrade classify"
    )]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("no weights in {0}: the run has not completed an epoch yet; run `classify train --resume --out {0}`")]
    NoWeights(PathBuf),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// What is wrong with a JSON file, in words: broken syntax, or valid JSON with a field of the
/// wrong type or missing.
fn json_problem(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Data => "a field has the wrong type or is missing",
        serde_json::error::Category::Eof => "the file ends early (not valid JSON)",
        _ => "not valid JSON",
    }
}

/// The run folder a file of a run lies in: its folder, or the one above `checkpoint/`.
fn run_folder_of(path: &Path) -> &Path {
    let folder = path.parent().unwrap_or(Path::new("."));
    match folder.file_name() {
        Some(name) if name == CHECKPOINT_DIR => folder.parent().unwrap_or(folder),
        _ => folder,
    }
}

/// The resolved settings of a training run, saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Run-folder format; see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Version of classify that started the run.
    pub classify_version: String,
    pub model: ModelKind,
    /// The model's layout revision ([`crate::model::MODEL_REVISION`] when the run started);
    /// absent in runs written before revisions existed, which are revision 1.
    #[serde(default = "first_revision")]
    pub model_revision: u32,
    /// The `--data` value the run was started with.
    pub data: String,
    /// Fraction of each class held out for validation.
    pub val_split: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub optimizer: AdamSettings,
    /// Optimiser choice, schedule, augmentation, averaging, early stopping; absent in runs
    /// written before recipes existed, which used the original recipe (the default).
    #[serde(default)]
    pub recipe: Recipe,
    /// How images become the model's input (`--image-size` and the resize before the
    /// centre crop); absent in runs written before sizes existed, which are CIFAR's 32x32.
    #[serde(default = "cifar_framing")]
    pub framing: Framing,
    /// The pretrained weights training started from (`--pretrained`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<Pretrained>,
    /// Device the run trained on (`cpu`, `wgpu`, `cuda`).
    pub device: String,
    /// Class names in label order.
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
}

/// The file of pretrained weights a run started from, as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pretrained {
    /// The path given to `--pretrained`.
    pub file: String,
    /// SHA-256 of its bytes, hex: says which weights these were once the file is gone.
    pub sha256: String,
}

/// SHA-256 of `bytes`, as lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn first_revision() -> u32 {
    1
}

fn cifar_framing() -> Framing {
    Framing::CIFAR
}

impl RunConfig {
    /// The config of a new run of `settings` on `data` (the `--data` value) with `classes`,
    /// trained on `device` (its name).
    pub fn new(
        settings: &TrainSettings,
        data: String,
        device: &str,
        classes: Vec<String>,
        [train_images, val_images]: [usize; 2],
    ) -> Self {
        RunConfig {
            format_version: FORMAT_VERSION,
            classify_version: env!("CARGO_PKG_VERSION").to_string(),
            model: settings.model,
            model_revision: crate::model::MODEL_REVISION,
            data,
            val_split: settings.val_split,
            epochs: settings.epochs,
            batch_size: settings.batch_size,
            learning_rate: settings.learning_rate,
            seed: settings.seed,
            optimizer: AdamSettings::default(),
            recipe: settings.recipe.clone(),
            framing: settings.framing(),
            pretrained: None,
            device: device.to_string(),
            classes,
            train_images,
            val_images,
        }
    }

    /// The run's training settings (the recipe name is not saved: it reads as the model's
    /// default, and only ever named where the other settings started).
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            model: self.model,
            recipe_name: RecipeName::default_for(self.model),
            epochs: self.epochs,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            seed: self.seed,
            val_split: self.val_split,
            image_size: self.framing.size,
            recipe: self.recipe.clone(),
        }
    }

    /// Takes `settings` (a resumed run's changed epoch count, say) into the config.
    pub fn set_settings(&mut self, settings: &TrainSettings) {
        self.model = settings.model;
        self.epochs = settings.epochs;
        self.batch_size = settings.batch_size;
        self.learning_rate = settings.learning_rate;
        self.seed = settings.seed;
        self.val_split = settings.val_split;
        self.recipe = settings.recipe.clone();
        self.framing = settings.framing();
    }

    /// The shape of the images the run's model takes.
    pub fn image_shape(&self) -> ImageShape {
        self.framing.input()
    }
}

/// Metrics of one completed epoch: one line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Wall-clock seconds of the epoch's training and validation.
    pub seconds: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

/// The epoch with the highest validation accuracy (the first, on ties) and that accuracy:
/// the epoch `--patience` keeps and the report calls best.
pub fn best_epoch(history: &[EpochMetrics]) -> Option<(usize, f64)> {
    history.iter().fold(None, |best: Option<(usize, f64)>, m| match best {
        Some((_, acc)) if acc >= m.val_acc => best,
        _ => Some((m.epoch, m.val_acc)),
    })
}

/// The last complete checkpoint, saved as `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Epochs completed.
    pub epoch: usize,
    /// Model weights, relative to the run folder.
    pub model: String,
    /// Optimiser state, relative to the run folder.
    pub optimizer: String,
    /// Metrics of every completed epoch, so `metrics.jsonl` can be rebuilt on resume.
    pub history: Vec<EpochMetrics>,
    /// The averaged weights (`--ema`), relative to the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<String>,
    /// With `--patience`: the epoch whose weights `model.bpk` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// SHA-256 (hex) of `model.bpk` as this checkpoint published it: loading checks it, so a
    /// damaged or swapped weights file is refused instead of served. Absent in runs written
    /// before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// What one checkpoint writes; see [`RunDir::save_checkpoint_parts`].
#[derive(Debug, Clone, Copy)]
pub struct CheckpointParts<'a> {
    /// The trained weights, to resume from.
    pub model: &'a [u8],
    pub optimizer: &'a [u8],
    /// The averaged weights, when the recipe keeps an average.
    pub ema: Option<&'a [u8]>,
    /// The weights to publish as `model.bpk` (what eval, predict and serve load), or `None`
    /// to keep the current `model.bpk` (an epoch worse than the best, under `--patience`).
    pub publish: Option<&'a [u8]>,
    pub best_epoch: Option<usize>,
}

/// A run folder on disk.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// A handle on `root`; nothing is read or created.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether the folder holds a run (a `config.json`).
    pub fn exists(&self) -> bool {
        self.path(CONFIG_FILE).is_file()
    }

    /// Creates the folder (and `checkpoint/`) if needed.
    pub fn create(&self) -> Result<(), RunError> {
        let dir = self.path(CHECKPOINT_DIR);
        fs::create_dir_all(&dir).map_err(|source| RunError::Io { path: dir, source })
    }

    /// Writes `config.json` and `classes.txt`.
    pub fn save_config(&self, config: &RunConfig) -> Result<(), RunError> {
        write_json(&self.path(CONFIG_FILE), config)?;
        let mut names = config.classes.join("\n");
        names.push('\n');
        write_atomic(&self.path(CLASSES_FILE), names.as_bytes())
    }

    /// Reads and checks `config.json`.
    pub fn load_config(&self) -> Result<RunConfig, RunError> {
        let path = self.path(CONFIG_FILE);
        if !path.is_file() {
            return Err(RunError::NotARun(self.root.clone()));
        }
        let text = read_string(&path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| RunError::Json { path: path.clone(), source })?;
        let Some(found) = value.get("format_version").and_then(|v| v.as_u64()) else {
            return Err(RunError::Invalid {
                path,
                reason: format!(
                    "no format_version number (this build reads run format {FORMAT_VERSION}); the \
                     file was not written by classify or was edited: restore it, or train a new \
                     run with `classify train`"
                ),
            });
        };
        if found > u64::from(FORMAT_VERSION) {
            return Err(RunError::NewerFormat { path, found: u32::try_from(found).unwrap_or(u32::MAX) });
        }
        if found != u64::from(FORMAT_VERSION) {
            return Err(RunError::Invalid {
                path,
                reason: format!(
                    "unknown run format version {found}; this build reads version {FORMAT_VERSION}: \
                     train a new run with `classify train`, or use the classify that wrote it"
                ),
            });
        }
        let config: RunConfig =
            serde_json::from_value(value).map_err(|source| RunError::Json { path: path.clone(), source })?;
        if config.classes.is_empty() {
            return Err(RunError::Invalid { path, reason: "no class names".into() });
        }
        let mut names: Vec<&str> = config.classes.iter().map(String::as_str).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(RunError::Invalid {
                path,
                reason: format!(
                    "the class {:?} is named twice; labels would be ambiguous: restore the run's own config.json",
                    twice[0]
                ),
            });
        }
        Ok(config)
    }

    /// Writes the final or latest weights, atomically.
    pub fn save_weights(&self, bytes: &[u8]) -> Result<(), RunError> {
        write_atomic(&self.path(WEIGHTS_FILE), bytes)
    }

    /// Reads the weights file, checked against the checksum `checkpoint.json` keeps of it.
    pub fn load_weights(&self) -> Result<Vec<u8>, RunError> {
        let path = self.path(WEIGHTS_FILE);
        if !path.is_file() {
            return Err(RunError::NoWeights(self.root.clone()));
        }
        let bytes = fs::read(&path).map_err(|source| RunError::Io { path: path.clone(), source })?;
        let expected = self.load_checkpoint()?.and_then(|c| c.weights_sha256);
        if let Some(expected) = expected {
            let found = sha256_hex(&bytes);
            if found != expected {
                return Err(RunError::Invalid {
                    path,
                    reason: format!(
                        "its SHA-256 is {found}, not the {expected} that checkpoint.json recorded when it was \
                         written: the file is damaged or was replaced. Copy the run folder again from where it \
                         was trained, or rebuild it there with `classify train --resume --out {}`",
                        self.root.display()
                    ),
                });
            }
        }
        Ok(bytes)
    }

    /// Reads `checkpoint.json`, or `None` when no epoch has completed.
    pub fn load_checkpoint(&self) -> Result<Option<Checkpoint>, RunError> {
        let path = self.path(CHECKPOINT_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = read_string(&path)?;
        serde_json::from_str(&text).map(Some).map_err(|source| RunError::Json { path, source })
    }

    /// Saves a complete checkpoint for `history.last()`'s epoch whose trained weights are
    /// also the published ones (no averaging, no early stopping).
    pub fn save_checkpoint(&self, model: &[u8], optimizer: &[u8], history: &[EpochMetrics]) -> Result<(), RunError> {
        let parts = CheckpointParts { model, optimizer, ema: None, publish: Some(model), best_epoch: None };
        self.save_checkpoint_parts(&parts, history)
    }

    /// Saves a complete checkpoint for `history.last()`'s epoch: the model, optimiser and
    /// average files first, then `model.bpk`, then `checkpoint.json` (the commit point), then
    /// `metrics.jsonl`; last, the previous checkpoint's files are removed.
    pub fn save_checkpoint_parts(&self, parts: &CheckpointParts, history: &[EpochMetrics]) -> Result<(), RunError> {
        let epoch = history.last().map_or(0, |m| m.epoch);
        let previous = self.load_checkpoint()?;
        let weights_sha256 = match parts.publish {
            Some(bytes) => Some(sha256_hex(bytes)),
            None => previous.as_ref().and_then(|old| old.weights_sha256.clone()),
        };
        let checkpoint = Checkpoint {
            weights_sha256,
            epoch,
            model: format!("{CHECKPOINT_DIR}/model-{epoch:04}.bpk"),
            optimizer: format!("{CHECKPOINT_DIR}/optimizer-{epoch:04}.bpk"),
            history: history.to_vec(),
            ema: parts.ema.map(|_| format!("{CHECKPOINT_DIR}/ema-{epoch:04}.bpk")),
            best_epoch: parts.best_epoch,
        };
        write_atomic(&self.path(&checkpoint.model), parts.model)?;
        write_atomic(&self.path(&checkpoint.optimizer), parts.optimizer)?;
        if let (Some(name), Some(bytes)) = (&checkpoint.ema, parts.ema) {
            write_atomic(&self.path(name), bytes)?;
        }
        // The published weights go before `checkpoint.json`, the commit point: if writing
        // them fails (a full disk), the last checkpoint is still the previous epoch's, which
        // is what `model.bpk` then holds, and a resume trains this epoch again.
        if let Some(bytes) = parts.publish {
            self.save_weights(bytes)?;
        }
        write_json(&self.path(CHECKPOINT_FILE), &checkpoint)?;
        self.save_metrics(history)?;
        if let Some(old) = previous.filter(|old| old.epoch != epoch) {
            // Best effort: a stale file costs disk space, not correctness.
            let _ = fs::remove_file(self.path(&old.model));
            let _ = fs::remove_file(self.path(&old.optimizer));
            if let Some(ema) = &old.ema {
                let _ = fs::remove_file(self.path(ema));
            }
        }
        Ok(())
    }

    /// Removes what an interrupted run can leave behind: temporary files (`*.tmp-*`) in the
    /// run folder and `checkpoint/`, and checkpoint files that `keep` (the last complete
    /// checkpoint) does not name, written by an epoch that did not finish checkpointing.
    /// Returns the paths removed. Only files this module names are touched.
    pub fn remove_stale_files(&self, keep: Option<&Checkpoint>) -> Result<Vec<PathBuf>, RunError> {
        let mut removed = Vec::new();
        for dir in [self.root.clone(), self.path(CHECKPOINT_DIR)] {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RunError::Io { path: dir, source }),
            };
            for entry in entries {
                let entry = entry.map_err(|source| RunError::Io { path: dir.clone(), source })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let temporary = name.starts_with('.') && name.contains(".tmp-");
                let relative = format!("{CHECKPOINT_DIR}/{name}");
                let checkpoint_file = dir != self.root
                    && (name.starts_with("model-") || name.starts_with("optimizer-") || name.starts_with("ema-"))
                    && name.ends_with(".bpk")
                    && keep.is_none_or(|k| {
                        k.model != relative && k.optimizer != relative && k.ema.as_deref() != Some(relative.as_str())
                    });
                if (temporary || checkpoint_file) && entry.path().is_file() {
                    fs::remove_file(entry.path()).map_err(|cause| RunError::Write { path: entry.path(), cause })?;
                    removed.push(entry.path());
                }
            }
        }
        Ok(removed)
    }

    /// Rewrites `metrics.jsonl` from `history`.
    pub fn save_metrics(&self, history: &[EpochMetrics]) -> Result<(), RunError> {
        let mut text = String::new();
        for m in history {
            // EpochMetrics holds only numbers: serialising it cannot fail.
            text.push_str(&serde_json::to_string(m).unwrap_or_default());
            text.push('\n');
        }
        write_atomic(&self.path(METRICS_FILE), text.as_bytes())
    }

    /// Reads `metrics.jsonl`; a missing file is an empty history.
    pub fn load_metrics(&self) -> Result<Vec<EpochMetrics>, RunError> {
        let path = self.path(METRICS_FILE);
        if !path.is_file() {
            return Ok(Vec::new());
        }
        read_string(&path)?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|source| RunError::Json { path: path.clone(), source }))
            .collect()
    }

    /// Reads a file of the run, named relative to its root.
    pub fn read(&self, name: &str) -> Result<Vec<u8>, RunError> {
        let path = self.path(name);
        fs::read(&path).map_err(|source| RunError::Io { path, source })
    }
}

fn read_string(path: &Path) -> Result<String, RunError> {
    fs::read_to_string(path).map_err(|source| RunError::Io { path: path.to_path_buf(), source })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RunError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|source| RunError::Json { path: path.to_path_buf(), source })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// [`write_file_atomic`] for a file of a training run: a failure says the last complete
/// checkpoint is kept and how to continue.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    write_file_atomic(path, bytes).map_err(|cause| RunError::Write { path: path.to_path_buf(), cause })
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced and renamed
/// into place, so `path` is either its old content or the complete new one. On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run rewrites metrics.jsonl from the checkpoint's history, so every float
    /// must read back as the value that was written. serde_json's default parser can miss
    /// by one unit in the last place (this loss, from a real run, came back as ...656 and
    /// changed a logged line); the `float_roundtrip` feature makes it exact.
    #[test]
    fn logged_floats_read_back_exactly() {
        let written = 1.8930928508440654_f64;
        let read: f64 = serde_json::from_str(&serde_json::to_string(&written).unwrap()).unwrap();
        assert_eq!(read.to_bits(), written.to_bits());
    }

    fn config(classes: &[&str]) -> RunConfig {
        RunConfig {
            format_version: FORMAT_VERSION,
            classify_version: "test".into(),
            model: ModelKind::Seed,
            model_revision: crate::model::MODEL_REVISION,
            data: "x".into(),
            val_split: 0.1,
            epochs: 2,
            batch_size: 4,
            learning_rate: 0.001,
            seed: 1,
            optimizer: AdamSettings::default(),
            recipe: Default::default(),
            framing: Framing::CIFAR,
            pretrained: None,
            device: "cpu".into(),
            classes: classes.iter().map(|s| s.to_string()).collect(),
            train_images: 10,
            val_images: 2,
        }
    }

    fn metrics(epoch: usize) -> EpochMetrics {
        EpochMetrics { epoch, seconds: 1.0, train_loss: 1.0, train_acc: 0.5, val_loss: 1.0, val_acc: 0.5 }
    }

    #[test]
    fn wrong_types_and_twice_named_classes_are_called_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut value = serde_json::to_value(config(&["a", "b"])).unwrap();
        value["epochs"] = serde_json::json!("two");
        fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
        let err = run.load_config().unwrap_err().to_string();
        assert!(err.contains("wrong type") && !err.contains("not valid JSON"), "{err}");
        fs::write(run.path(CONFIG_FILE), "{\"format_version\": 1,").unwrap();
        assert!(run.load_config().unwrap_err().to_string().contains("not valid JSON"));
        let value = serde_json::to_value(config(&["cat", "dog", "cat"])).unwrap();
        fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
        let err = run.load_config().unwrap_err().to_string();
        assert!(err.contains("\"cat\" is named twice"), "{err}");
    }

    #[test]
    fn a_failed_write_names_the_run_to_resume_and_its_cause_once() {
        let cause = || std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device");
        for (file, run) in [("runs/x/checkpoint/model-0002.bpk", "runs/x"), ("runs/y/model.bpk", "runs/y")] {
            let err = RunError::Write { path: PathBuf::from(file), cause: cause() };
            let text = format!("{:#}", anyhow::Error::from(err));
            assert!(text.contains(&format!("--resume --out {run}`")), "{text}");
            assert_eq!(text.matches("no space left").count(), 1, "{text}");
        }
    }

    #[test]
    fn the_best_epoch_is_the_first_with_the_highest_accuracy() {
        let m = |epoch, val_acc| EpochMetrics { val_acc, ..metrics(epoch) };
        assert_eq!(best_epoch(&[]), None);
        assert_eq!(best_epoch(&[m(1, 0.5), m(2, 0.7), m(3, 0.7), m(4, 0.6)]), Some((2, 0.7)));
    }

    #[test]
    fn config_round_trips_and_writes_class_names() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        let cfg = config(&["cat", "dog"]);
        run.save_config(&cfg).unwrap();
        assert_eq!(run.load_config().unwrap(), cfg);
        assert_eq!(fs::read_to_string(run.path(CLASSES_FILE)).unwrap(), "cat\ndog\n");
    }

    #[test]
    fn a_config_without_a_model_revision_reads_as_revision_1() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut value = serde_json::to_value(config(&["a"])).unwrap();
        value.as_object_mut().unwrap().remove("model_revision");
        fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
        assert_eq!(run.load_config().unwrap().model_revision, 1);
        assert_eq!(config(&["a"]).model_revision, crate::model::MODEL_REVISION);
    }

    #[test]
    fn newer_format_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut value = serde_json::to_value(config(&["a"])).unwrap();
        value["format_version"] = (FORMAT_VERSION + 1).into();
        fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
        let err = run.load_config().unwrap_err();
        assert!(matches!(err, RunError::NewerFormat { .. }), "{err}");
        assert!(err.to_string().contains("upgrade classify"));
    }

    #[test]
    fn unknown_or_missing_format_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let mut value = serde_json::to_value(config(&["a"])).unwrap();
        for version in [serde_json::json!(0), serde_json::json!("1"), serde_json::json!(-1), serde_json::Value::Null] {
            value["format_version"] = version.clone();
            fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
            let err = run.load_config().unwrap_err();
            assert!(matches!(err, RunError::Invalid { .. }), "{version}: {err}");
            assert!(err.to_string().contains("classify train"), "{version}: {err}");
        }
        value["format_version"] = u64::MAX.into();
        fs::write(run.path(CONFIG_FILE), value.to_string()).unwrap();
        let err = run.load_config().unwrap_err();
        assert!(matches!(err, RunError::NewerFormat { .. }), "{err}");
    }

    #[test]
    fn stale_files_of_an_interrupted_run_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        run.save_checkpoint(b"m1", b"o1", &[metrics(1)]).unwrap();
        let keep = run.load_checkpoint().unwrap();
        for name in [".model.bpk.tmp-123", "checkpoint/.model-0002.bpk.tmp-9", "checkpoint/model-0002.bpk"] {
            fs::write(run.path(name), b"x").unwrap();
        }
        fs::write(run.path("notes.txt"), b"mine").unwrap();
        fs::write(run.path("checkpoint/notes.txt"), b"mine").unwrap();
        let mut removed = run.remove_stale_files(keep.as_ref()).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                run.path(".model.bpk.tmp-123"),
                run.path("checkpoint/.model-0002.bpk.tmp-9"),
                run.path("checkpoint/model-0002.bpk"),
            ]
        );
        assert!(run.path("notes.txt").is_file() && run.path("checkpoint/notes.txt").is_file());
        assert_eq!(run.read("checkpoint/model-0001.bpk").unwrap(), b"m1");
        assert_eq!(run.read("checkpoint/optimizer-0001.bpk").unwrap(), b"o1");
    }

    #[test]
    fn missing_config_says_to_train_first() {
        let dir = tempfile::tempdir().unwrap();
        let err = RunDir::new(dir.path().join("nope")).load_config().unwrap_err();
        assert!(err.to_string().contains("classify train"), "{err}");
    }

    /// A full disk while publishing `model.bpk` (here: a folder in its way) must not leave a
    /// checkpoint newer than the published weights, or a resume would skip the epoch and
    /// keep the stale `model.bpk`.
    #[test]
    fn a_failed_publish_leaves_the_previous_checkpoint_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        run.save_checkpoint(b"m1", b"o1", &[metrics(1)]).unwrap();
        fs::remove_file(run.path(WEIGHTS_FILE)).unwrap();
        fs::create_dir_all(run.path(WEIGHTS_FILE).join("in-the-way")).unwrap();
        let err = run.save_checkpoint(b"m2", b"o2", &[metrics(1), metrics(2)]).unwrap_err();
        assert!(matches!(err, RunError::Write { .. }), "{err}");
        assert_eq!(run.load_checkpoint().unwrap().unwrap().epoch, 1, "epoch 2 is not committed");
        assert_eq!(run.load_metrics().unwrap(), vec![metrics(1)]);
        // A resume removes epoch 2's orphaned files and trains that epoch again.
        let removed = run.remove_stale_files(run.load_checkpoint().unwrap().as_ref()).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
    }

    #[test]
    fn checkpoint_replaces_the_previous_one_and_rewrites_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        run.save_checkpoint(b"m1", b"o1", &[metrics(1)]).unwrap();
        run.save_checkpoint(b"m2", b"o2", &[metrics(1), metrics(2)]).unwrap();
        let ckpt = run.load_checkpoint().unwrap().unwrap();
        assert_eq!(ckpt.epoch, 2);
        assert_eq!(run.read(&ckpt.model).unwrap(), b"m2");
        assert_eq!(run.read(&ckpt.optimizer).unwrap(), b"o2");
        assert!(!run.path("checkpoint/model-0001.bpk").exists());
        assert_eq!(run.load_weights().unwrap(), b"m2");
        assert_eq!(run.load_metrics().unwrap(), vec![metrics(1), metrics(2)]);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    /// Four flipped bytes in `model.bpk` used to load without complaint.
    #[test]
    fn damaged_weights_are_refused_and_an_unpublished_epoch_keeps_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        run.create().unwrap();
        run.save_checkpoint(b"weights-1", b"o1", &[metrics(1)]).unwrap();
        // An epoch worse than the best (`--patience`) leaves model.bpk and its checksum as they were.
        let parts = CheckpointParts { model: b"m2", optimizer: b"o2", ema: None, publish: None, best_epoch: Some(1) };
        run.save_checkpoint_parts(&parts, &[metrics(1), metrics(2)]).unwrap();
        assert_eq!(run.load_weights().unwrap(), b"weights-1");
        fs::write(run.path(WEIGHTS_FILE), b"weixhts-1").unwrap();
        let err = run.load_weights().unwrap_err().to_string();
        assert!(err.contains("model.bpk") && err.contains("SHA-256") && err.contains("damaged"), "{err}");
        // A run from before the checksum was kept still loads.
        let mut old = run.load_checkpoint().unwrap().unwrap();
        old.weights_sha256 = None;
        write_json(&run.path(CHECKPOINT_FILE), &old).unwrap();
        assert_eq!(run.load_weights().unwrap(), b"weixhts-1");
    }
}
