//! The SageMaker training-job contract, so the same binary runs as a training job.
//!
//! SageMaker starts the container's `train` with everything under `/opt/ml`:
//!
//! ```text
//! /opt/ml/input/config/hyperparameters.json   {"epochs": "30", "batch-size": "64", ...} (values are strings)
//! /opt/ml/input/data/<channel>/               the data (channel `training` unless told otherwise)
//! /opt/ml/model/                              what to keep: here, the run folder
//! /opt/ml/output/failure                      why the job failed, shown in the console
//! ```
//!
//! and sends SIGTERM when the job is stopped. The root can be moved with
//! `CLASSIFY_SAGEMAKER_ROOT` (tests use a temp folder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::settings::{Given, SETTINGS};

/// Environment variable that moves the `/opt/ml` root.
pub const ROOT_ENV: &str = "CLASSIFY_SAGEMAKER_ROOT";
/// Where SageMaker mounts everything.
pub const DEFAULT_ROOT: &str = "/opt/ml";
/// Set by SageMaker in every training container; its presence turns job mode on.
pub const TRAINING_ENV: &str = "SM_TRAINING_ENV";
/// The data channel read unless the `channel` hyperparameter names another.
pub const DEFAULT_CHANNEL: &str = "training";

/// Hyperparameters a job may set besides the training settings of
/// [`crate::settings::SETTINGS`] (each under its flag name): the data channel, and what to
/// do with unreadable images.
pub const JOB_HYPERPARAMETERS: [&str; 2] = ["channel", "on-bad-image"];

/// Whether SageMaker itself added the hyperparameter `name` (automatic model tuning adds
/// `_tuning_objective_metric`; framework estimators add `sagemaker_program`,
/// `sagemaker_region` and others): a job ignores these rather than fail on them.
pub fn added_by_sagemaker(name: &str) -> bool {
    name.starts_with('_') || name.starts_with("sagemaker_") || name.starts_with("sagemaker-")
}

/// Every hyperparameter name a job takes, in flag spelling.
pub fn hyperparameter_names() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.name).chain(JOB_HYPERPARAMETERS).collect()
}

/// A problem with the job's configuration.
#[derive(Debug, thiserror::Error)]
pub enum SageMakerError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a JSON object of hyperparameters ({reason})")]
    Json { path: PathBuf, reason: String },
    #[error("unknown hyperparameter {name:?}: classify train takes {}", hyperparameter_names().join(", "))]
    Unknown { name: String },
    #[error("hyperparameter {name} = {value:?} is not a valid value{}", reason.as_ref().map_or_else(String::new, |r| format!(": {r}")))]
    Invalid { name: String, value: String, reason: Option<String> },
    #[error("no data channel {channel:?}: {path} does not exist; name the channel with the `channel` hyperparameter")]
    NoChannel { channel: String, path: PathBuf },
}

/// A training job's paths and hyperparameters.
#[derive(Debug, Clone)]
pub struct Job {
    root: PathBuf,
    /// The training settings it sets.
    settings: Given,
    /// The hyperparameters of [`JOB_HYPERPARAMETERS`] it sets.
    hyperparameters: BTreeMap<String, String>,
}

impl Job {
    /// Whether this process runs as a job: `--sagemaker`, or SageMaker's own variable.
    pub fn detected(flag: bool) -> bool {
        flag || std::env::var_os(TRAINING_ENV).is_some()
    }

    /// `$CLASSIFY_SAGEMAKER_ROOT`, else `/opt/ml`.
    pub fn root_from_env() -> PathBuf {
        std::env::var_os(ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT))
    }

    /// Reads the job rooted at `root`; no hyperparameters file means none were given.
    pub fn load(root: &Path) -> Result<Self, SageMakerError> {
        let path = root.join("input/config/hyperparameters.json");
        let mut hyperparameters = BTreeMap::new();
        let mut settings = Given::default();
        if path.is_file() {
            let text =
                std::fs::read_to_string(&path).map_err(|source| SageMakerError::Io { path: path.clone(), source })?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| SageMakerError::Json { path: path.clone(), reason: e.to_string() })?;
            let object = value
                .as_object()
                .ok_or_else(|| SageMakerError::Json { path: path.clone(), reason: "not an object".into() })?;
            for (name, value) in object {
                // SageMaker sends strings; accept plain JSON numbers too.
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if added_by_sagemaker(name) {
                    tracing::info!("ignoring hyperparameter {name:?}: SageMaker adds it, classify does not read it");
                    continue;
                }
                let name = name.replace('_', "-");
                if JOB_HYPERPARAMETERS.contains(&name.as_str()) {
                    hyperparameters.insert(name, value);
                } else if settings.insert(&name, value).is_err() {
                    return Err(SageMakerError::Unknown { name });
                }
            }
        }
        Ok(Job { root: root.to_path_buf(), settings, hyperparameters })
    }

    /// The training settings the job sets, by flag name, with their raw values.
    pub fn settings(&self) -> &Given {
        &self.settings
    }

    /// The hyperparameter `name` of [`JOB_HYPERPARAMETERS`] parsed as `T`, if given.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, SageMakerError> {
        self.hyperparameters
            .get(name)
            .map(|value| {
                value.trim().parse().map_err(|_| SageMakerError::Invalid {
                    name: name.to_string(),
                    value: value.clone(),
                    reason: None,
                })
            })
            .transpose()
    }

    /// The data channel's folder, which must exist.
    pub fn data_dir(&self) -> Result<PathBuf, SageMakerError> {
        let channel = self.hyperparameters.get("channel").map_or(DEFAULT_CHANNEL, String::as_str);
        let path = self.root.join("input/data").join(channel);
        if path.is_dir() { Ok(path) } else { Err(SageMakerError::NoChannel { channel: channel.to_string(), path }) }
    }

    /// Where the run folder goes: everything SageMaker uploads as the model artefact.
    pub fn model_dir(&self) -> PathBuf {
        self.root.join("model")
    }
}

/// Records why the job rooted at `root` failed, where SageMaker shows it; best effort, since
/// the job is failing anyway.
pub fn write_failure(root: &Path, reason: &str) {
    let dir = root.join("output");
    let _ = std::fs::create_dir_all(&dir);
    let _ = crate::run::write_atomic(&dir.join("failure"), reason.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_with(json: &str) -> Result<Job, SageMakerError> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("input/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("hyperparameters.json"), json).unwrap();
        Job::load(dir.path())
    }

    #[test]
    fn string_values_parse_and_underscores_match_flags() {
        let job = job_with(r#"{"epochs": "12", "batch_size": "64", "lr": 0.01, "on_bad_image": "skip"}"#).unwrap();
        let settings = job.settings().resolve().unwrap();
        assert_eq!((settings.epochs, settings.batch_size, settings.learning_rate), (12, 64, 0.01));
        assert_eq!(job.settings().get("seed"), None);
        assert_eq!(job.get::<String>("on-bad-image").unwrap().as_deref(), Some("skip"));
    }

    #[test]
    fn bad_names_and_values_are_named() {
        let err = job_with(r#"{"epochz": "3"}"#).unwrap_err();
        assert!(err.to_string().contains("epochz"), "{err}");
        let job = job_with(r#"{"epochs": "many"}"#).unwrap();
        let err = job.settings().resolve().unwrap_err();
        assert!(err.to_string().contains("epochs = \"many\""), "{err}");
        assert!(job_with("[1, 2]").is_err());
    }

    #[test]
    fn every_training_setting_is_a_hyperparameter() {
        for setting in SETTINGS {
            let job = job_with(&format!(r#"{{"{}": "{}"}}"#, setting.name, setting.example))
                .unwrap_or_else(|e| panic!("{}: {e}", setting.name));
            assert_eq!(job.settings().get(setting.name), Some(setting.example), "{}", setting.name);
        }
        for name in ["lookahead", "lr-start", "lr_end", "norm-bias-lr-scale", "freeze_norm_scale"] {
            assert!(job_with(&format!(r#"{{"{name}": "true"}}"#)).is_ok(), "{name}");
        }
    }

    #[test]
    fn hyperparameters_sagemaker_adds_are_ignored_and_unknown_ones_refused() {
        let job = job_with(
            r#"{"_tuning_objective_metric": "val_acc", "sagemaker_program": "train.py",
                "sagemaker_region": "\"eu-west-1\"", "epochs": "2"}"#,
        )
        .unwrap();
        assert_eq!(job.settings().get("epochs"), Some("2"));
        assert_eq!(job.settings().iter().count(), 1);
        let err = job_with(r#"{"sagemaker": "1", "epochs": "2"}"#).unwrap_err();
        assert!(err.to_string().contains("\"sagemaker\""), "{err}");
    }

    #[test]
    fn missing_file_means_no_hyperparameters_and_missing_channel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job::load(dir.path()).unwrap();
        assert_eq!(job.get::<usize>("epochs").unwrap(), None);
        let err = job.data_dir().unwrap_err();
        assert!(err.to_string().contains("\"training\""), "{err}");
        assert_eq!(job.model_dir(), dir.path().join("model"));
    }
}
