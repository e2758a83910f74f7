//! A trained model loaded from its run folder, ready to predict: what `eval`, `predict`,
//! reports and the server share.

use std::borrow::Cow;
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use crate::data::augment::{Tta, View, view_all};
use crate::kernels::{Precision, set_precision};
use crate::model::Network;
use crate::quantize::{Quantize, quantize};
use crate::run::{RunConfig, RunDir, RunError};
use crate::scores::{argmax, softmax};

/// A model rebuilt from a run folder's config and weights, in inference mode, with the
/// test-time augmentation its predictions use ([`Tta::None`] unless [`Classifier::with_tta`]
/// says otherwise).
pub struct Classifier {
    model: Network,
    config: RunConfig,
    device: Device,
    tta: Tta,
    precision: Quantize,
    /// The arithmetic of its convolutions' products on the CPU.
    products: Precision,
}

impl Classifier {
    /// Loads the run at `root` onto `device`.
    pub fn load(root: &Path, device: &Device) -> Result<Self, RunError> {
        let run = RunDir::new(root);
        let config = run.load_config()?;
        let weights = run.load_weights()?;
        let path = run.path(crate::run::WEIGHTS_FILE);
        let invalid = |reason: String| RunError::Invalid { path: path.clone(), reason };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights)).map_err(|e| {
            invalid(format!(
                "unreadable weights ({e}); the file is damaged or truncated: restore it from the \
                     run's checkpoint/ folder or a backup, or retrain with `classify train`"
            ))
        })?;
        let model = Network::init_revision(config.model, config.model_revision, config.classes.len(), device)
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
        Ok(Classifier {
            model,
            config,
            device: device.clone(),
            tta: Tta::None,
            precision: Quantize::None,
            products: Precision::Fp32,
        })
    }

    /// This classifier, predicting from the average of the class probabilities of every view
    /// of `tta` (the views are listed by [`Tta::views`]).
    pub fn with_tta(self, tta: Tta) -> Self {
        Classifier { tta, ..self }
    }

    /// This classifier with its weights at `precision` (see [`crate::quantize`]).
    pub fn with_quantization(self, precision: Quantize) -> Self {
        Classifier { model: quantize(self.model, precision), precision, ..self }
    }

    /// This classifier computing its convolutions' products at `products` (`--precision`).
    pub fn with_products(self, products: Precision) -> Self {
        Classifier { products, ..self }
    }

    /// The arithmetic of its convolutions' products.
    pub fn products(&self) -> Precision {
        self.products
    }

    /// The weight precision it predicts with.
    pub fn precision(&self) -> Quantize {
        self.precision
    }

    /// The test-time augmentation its predictions use.
    pub fn tta(&self) -> Tta {
        self.tta
    }

    /// The network it predicts with.
    pub fn model(&self) -> &Network {
        &self.model
    }

    /// The run's settings.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The shape of the images it takes (the run's).
    pub fn image_shape(&self) -> crate::geometry::ImageShape {
        self.config.image_shape()
    }

    /// Class names in label order.
    pub fn classes(&self) -> &[String] {
        &self.config.classes
    }

    /// Class probabilities for CHW uint8 images, one `Vec` per image: the softmax of the
    /// model's logits, averaged over the views of [`Classifier::tta`] when there are several.
    pub fn probabilities(&self, images: &[u8]) -> Vec<Vec<f32>> {
        let identity = View { flip: false, dx: 0, dy: 0 };
        let per_view: Vec<Vec<Vec<f32>>> = self
            .tta
            .views()
            .into_iter()
            .map(|view| {
                // The unchanged view reads the caller's images, so Tta::None copies nothing.
                let images = if view == identity {
                    Cow::Borrowed(images)
                } else {
                    Cow::Owned(view_all(images, self.image_shape(), view))
                };
                self.view_probabilities(&images)
            })
            .collect();
        average_views(per_view)
    }

    /// Softmax probabilities of the images exactly as given.
    fn view_probabilities(&self, images: &[u8]) -> Vec<Vec<f32>> {
        set_precision(self.products);
        let logits = self.model.logits(images, self.image_shape(), &self.device);
        let classes = self.classes().len();
        logits.chunks(classes).take(self.config.image_shape().count(images.len())).map(softmax).collect()
    }

    /// Each image's penultimate features ([`Network::embedding`]), one `Vec` per image, for
    /// CHW uint8 images as [`Classifier::probabilities`] takes them (the image as given: no
    /// test-time views).
    pub fn embeddings(&self, images: &[u8]) -> Vec<Vec<f32>> {
        let shape = self.image_shape();
        set_precision(self.products);
        let mut rows = Vec::new();
        for chunk in images.chunks(crate::model::predict_batch(shape) * shape.image_bytes()) {
            let out = self.model.embedding(crate::model::images_to_tensor(chunk, shape, &self.device));
            let width = out.dims()[1];
            let values = out.into_data().try_to_vec::<f32>().unwrap_or_default();
            rows.extend(values.chunks(width.max(1)).map(<[f32]>::to_vec));
        }
        rows
    }

    /// How many values [`Classifier::embeddings`] gives an image.
    pub fn embedding_width(&self) -> usize {
        let blank = vec![0u8; self.image_shape().image_bytes()];
        self.embeddings(&blank).first().map_or(0, Vec::len)
    }

    /// The most probable label of each image.
    pub fn predict(&self, images: &[u8]) -> Vec<u8> {
        self.probabilities(images).iter().map(|p| argmax(p) as u8).collect()
    }
}

/// The element-wise mean of several views' probabilities (`per_view[view][image][class]`),
/// one row per image; a single view is returned as it is.
pub fn average_views(per_view: Vec<Vec<Vec<f32>>>) -> Vec<Vec<f32>> {
    let n = per_view.len();
    let mut views = per_view.into_iter();
    let Some(mut mean) = views.next() else { return Vec::new() };
    if n == 1 {
        return mean;
    }
    for view in views {
        for (acc, row) in mean.iter_mut().zip(view) {
            for (a, p) in acc.iter_mut().zip(row) {
                *a += p;
            }
        }
    }
    for a in mean.iter_mut().flatten() {
        *a /= n as f32;
    }
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averaging_views_takes_the_mean_of_each_probability() {
        // Two images, two classes, three views; image 0 by hand: (0.9 + 0.5 + 0.4) / 3 = 0.6.
        let per_view = vec![
            vec![vec![0.9, 0.1], vec![0.2, 0.8]],
            vec![vec![0.5, 0.5], vec![0.3, 0.7]],
            vec![vec![0.4, 0.6], vec![0.7, 0.3]],
        ];
        let mean = average_views(per_view);
        let expected = [[0.6, 0.4], [0.4, 0.6]];
        assert_eq!(mean.len(), 2);
        for (row, want) in mean.iter().zip(expected) {
            assert_eq!(row.len(), 2);
            for (p, w) in row.iter().zip(want) {
                assert!((p - w).abs() < 1e-6, "{mean:?}");
            }
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn averaging_one_view_returns_it_unchanged() {
        let one = vec![vec![0.25f32, 0.75], vec![1.0, 0.0]];
        assert_eq!(average_views(vec![one.clone()]), one);
        assert!(average_views(Vec::new()).is_empty());
    }
}
