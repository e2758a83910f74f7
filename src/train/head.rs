//! `--finetune head`: a pretrained backbone stays as it is, BatchNorm statistics included,
//! and only the new classification head trains. Each image's features (the backbone's
//! pooled last maps, of its centre crop) are computed once, so every epoch after that is a
//! logistic regression over a few thousand numbers per image: seconds, not minutes, on a
//! CPU. The head trains with the run's recipe (optimiser, schedule, label smoothing, class
//! weights); augmentation does not apply, since the features are of one view of each image.

use std::time::Instant;

use burn::module::Module;
use burn::nn::Linear;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::{Progress, TrainError, count_correct, epoch_order, record_error, round3};
use crate::data::{DataError, Images, Splits};
use crate::model::{Network, images_to_tensor, labels_to_tensor, predict_batch};
use crate::run::{CheckpointParts, EpochMetrics, RunConfig, RunDir};
use crate::scores::cross_entropy;

/// Features of a set: `dim` numbers per image, row-major, and the images' labels.
struct Features {
    values: Vec<f32>,
    labels: Vec<u8>,
    dim: usize,
}

impl Features {
    fn rows(&self, indices: &[usize]) -> Vec<f32> {
        indices.iter().flat_map(|&i| &self.values[i * self.dim..(i + 1) * self.dim]).copied().collect()
    }
}

/// The backbone's features of every image of `set`, cut to its centre `crop` square first
/// when the images are larger (training images are kept larger for random crops).
fn features(backbone: &Network, set: &Images, crop: usize, device: &Device) -> Result<Features, DataError> {
    let all: Vec<usize> = (0..set.len()).collect();
    let mut out = Features { values: Vec::new(), labels: Vec::new(), dim: 0 };
    for indices in all.chunks(predict_batch(set.shape())) {
        let (images, _) = set.fetch(indices)?;
        let images = images.center_crop(crop);
        if images.is_empty() {
            continue;
        }
        let Some(pooled) = backbone.pooled(images_to_tensor(&images.images, images.shape, device)) else {
            break;
        };
        out.dim = pooled.dims()[1];
        out.values.extend(pooled.into_data().try_to_vec::<f32>().unwrap_or_default());
        out.labels.extend(&images.labels);
    }
    Ok(out)
}

/// Trains `model`'s head for the epochs `history` does not hold yet, checkpointing after
/// each as the full training loop does (the checkpoint is the whole network, the backbone
/// unchanged, so `--resume`, eval, predict, serve and export take it as any run).
#[allow(clippy::too_many_arguments, reason = "the training loop's own state, handed over once")]
pub(super) fn train_head(
    mut model: Network,
    mut optimizer: ModuleOptimizer,
    mut history: Vec<EpochMetrics>,
    loss_fn: &CrossEntropyLoss,
    splits: &Splits,
    config: &RunConfig,
    run: &RunDir,
    device: &Device,
    progress: &Progress,
) -> Result<Vec<EpochMetrics>, TrainError> {
    if model.head().is_none() || config.pretrained.is_none() && history.is_empty() {
        return Err(TrainError::Recipe(
            "--finetune head trains only the classification head of pretrained weights: give --pretrained FILE \
             (and --model efficientnet-lite0, or a resnet), or use --finetune full"
                .into(),
        ));
    }
    let train_device = device.clone().autodiff();
    let started = Instant::now();
    let backbone = model.valid();
    let size = config.framing.size;
    let data_error = |source| TrainError::Data { epoch: history.len() + 1, source };
    let train = features(&backbone, &splits.train, size, device).map_err(data_error)?;
    let val = features(&backbone, &splits.val, size, device).map_err(data_error)?;
    drop(backbone);
    tracing::info!(
        "computed the backbone's features of {} training and {} validation images in {:.1}s; training the head",
        train.labels.len(),
        val.labels.len(),
        started.elapsed().as_secs_f64()
    );
    let mut head: Linear = model.head().cloned().ok_or(TrainError::NoTrainingData)?;
    let recipe = &config.recipe;
    let n = train.labels.len();
    if n == 0 {
        return Err(TrainError::NoTrainingData);
    }
    let batches = n.div_ceil(config.batch_size);
    let total_steps = batches * config.epochs;
    for epoch in history.len() + 1..=config.epochs {
        let started = Instant::now();
        let bar = progress.epoch(epoch, config.epochs, batches as u64);
        let order = epoch_order(n, config.seed, epoch);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0usize);
        for (b, indices) in order.chunks(config.batch_size).enumerate() {
            if super::STOP.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(TrainError::Stopped { epoch });
            }
            let step = (epoch - 1) * batches + b;
            let labels: Vec<u8> = indices.iter().map(|&i| train.labels[i]).collect();
            let x =
                Tensor::<2>::from_data(TensorData::new(train.rows(indices), [indices.len(), train.dim]), &train_device);
            let logits = head.forward(x);
            let loss = loss_fn.forward(logits.clone(), labels_to_tensor(&labels, &train_device));
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * labels.len() as f64;
            correct += count_correct(&logits.into_data().try_to_vec::<f32>().unwrap_or_default(), &labels);
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            let lr = config.learning_rate * recipe.lr_factor(step, total_steps, batches);
            head = optimizer.step(lr, head, grads);
            seen += labels.len();
            bar.step(loss_sum / seen as f64, correct as f64 / seen as f64, seen);
        }
        let train_loss = loss_sum / seen.max(1) as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged(train_loss, epoch));
        }
        let (val_loss, val_acc) = score(&head.valid(), &val, device);
        let metrics = EpochMetrics {
            epoch,
            seconds: round3(started.elapsed().as_secs_f64()),
            train_loss,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss,
            val_acc,
        };
        history.push(metrics.clone());
        model.set_head(head.clone());
        let record_err = |what: &'static str| move |e| record_error(run, what, e);
        let weights = model.clone().into_record().into_bytes().map_err(record_err("cannot serialise weights"))?;
        let state = optimizer.into_bytes().map_err(record_err("cannot serialise optimiser state"))?;
        run.save_checkpoint_parts(
            &CheckpointParts {
                model: &weights,
                optimizer: &state,
                ema: None,
                publish: Some(&weights),
                best_epoch: None,
            },
            &history,
        )?;
        bar.finish(&metrics);
        progress.epoch_done(run, &history);
    }
    Ok(history)
}

/// Mean cross-entropy and accuracy of `head` on `features`; (0, 0) when there are none.
fn score(head: &Linear, features: &Features, device: &Device) -> (f64, f64) {
    let n = features.labels.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let x = Tensor::<2>::from_data(TensorData::new(features.values.clone(), [n, features.dim]), device);
    let logits = head.forward(x).into_data().try_to_vec::<f32>().unwrap_or_default();
    let classes = logits.len() / n;
    let loss: f64 =
        logits.chunks(classes).zip(&features.labels).map(|(row, &label)| cross_entropy(row, usize::from(label))).sum();
    (loss / n as f64, count_correct(&logits, &features.labels) as f64 / n as f64)
}
