//! A trained model loaded from its run folder, ready to predict: what `eval`, `predict`,
//! reports and the server share.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use crate::data::IMAGE_BYTES;
use crate::model::Network;
use crate::run::{RunConfig, RunDir, RunError};
use crate::train::predict_logits;

/// A model rebuilt from a run folder's config and weights, in inference mode.
pub struct Classifier {
    model: Network,
    config: RunConfig,
    device: Device,
}

impl Classifier {
    /// Loads the run at `root` onto `device`.
    pub fn load(root: &Path, device: &Device) -> Result<Self, RunError> {
        let run = RunDir::new(root);
        let config = run.load_config()?;
        let weights = run.load_weights()?;
        let path = run.path(crate::run::WEIGHTS_FILE);
        let invalid = |reason: String| RunError::Invalid { path: path.clone(), reason };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights))
            .map_err(|e| {
                invalid(format!(
                    "unreadable weights ({e}); the file is damaged or truncated: restore it from the \
                     run's checkpoint/ folder or a backup, or retrain with `classify train`"
                ))
            })?;
        let model = Network::init(config.model, config.classes.len(), device)
            .try_load_record(record)
            .map_err(|e| {
                invalid(format!(
                    "weights do not match the {} model with {} classes in config.json ({e}); \
                     config.json was edited or belongs to another run: restore the run's own \
                     config.json, or retrain with `classify train`",
                    config.model,
                    config.classes.len()
                ))
            })?
            .valid();
        Ok(Classifier { model, config, device: device.clone() })
    }

    /// The run's settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.config.classes
    }

    /// Class probabilities for CHW uint8 images, one `Vec` per image.
    pub fn probabilities(&self, images: &[u8]) -> Vec<Vec<f32>> {
        let logits = predict_logits(&self.model, images, &self.device);
        let classes = self.classes().len();
        logits.chunks(classes).take(images.len() / IMAGE_BYTES).map(softmax).collect()
    }

    /// The most probable label of each image.
    pub fn predict(&self, images: &[u8]) -> Vec<u8> {
        self.probabilities(images)
            .iter()
            .map(|p| crate::eval::argmax(p) as u8)
            .collect()
    }
}

/// Softmax of one row of logits.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[2] > p[1] && p[1] > p[0]);
        assert!((p[0] - 0.090_030_57).abs() < 1e-6);
    }
}
