//! The training loop: shuffled, optionally augmented mini-batches, softmax cross-entropy
//! (optionally label-smoothed), Adam or Nesterov SGD on a schedule, an optional moving
//! average of the weights, a validation pass and a checkpoint after every epoch, and early
//! stopping.
//!
//! The default recipe is the original system's: inputs scaled to [0, 1], Adam with Keras's
//! defaults (lr 1e-3, betas 0.9/0.999, epsilon 1e-7), batch 32, reshuffled each epoch; see
//! [`crate::settings`] for the modern one.

pub mod adam;
pub mod ema;
mod head;
pub mod lookahead;
mod progress;
pub mod sgd;

pub use progress::{PAUSE_ENV, Progress, metric_line};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::data::{DataError, ImageSet, ImageShape, Images, Splits};
use crate::model::{Network, images_to_tensor, labels_to_tensor};
use crate::run::{Checkpoint, CheckpointParts, EpochMetrics, RunConfig, RunDir, RunError, best_epoch};
use crate::scores::{argmax, cross_entropy};
use crate::settings::{AdamSettings, Finetune, OptimizerKind, Recipe};
use ema::Ema;
use lookahead::Lookahead;

/// Set to stop training at the next batch (SIGTERM, see [`stop_on_sigterm`]).
static STOP: AtomicBool = AtomicBool::new(false);

/// Asks every training loop in this process to stop before its next batch; the last
/// complete checkpoint stays as it is.
pub fn request_stop() {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGTERM (what `docker stop`, Kubernetes and SageMaker send) stop training cleanly
/// at the next batch instead of killing the process mid-step.
#[cfg(unix)]
pub fn stop_on_sigterm() {
    extern "C" fn on_sigterm(_: libc::c_int) {
        // Only an atomic store: async-signal-safe.
        STOP.store(true, Ordering::Relaxed);
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

/// SIGTERM handling is Unix-only; elsewhere the default applies.
#[cfg(not(unix))]
pub fn stop_on_sigterm() {}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{what} in {run}: {reason}")]
    Record { what: &'static str, run: String, reason: String },
    #[error("the training set is empty: check --data and --val-split")]
    NoTrainingData,
    #[error("the run's classes ({run}) differ from the data's ({data}): resume with the data the run started with")]
    ClassMismatch { run: String, data: String },
    #[error("the loss became {0} at epoch {1}: lower --lr")]
    Diverged(f64, usize),
    #[error("{0}")]
    Recipe(String),
    #[error("{} has no complete checkpoint: train it for an epoch first (`classify train --out {}`)", .0.display(), .0.display())]
    NoCheckpoint(std::path::PathBuf),
    #[error("stopped by a termination request during epoch {epoch}; the checkpoint of epoch {} is intact: continue with --resume", epoch - 1)]
    Stopped { epoch: usize },
    #[error(transparent)]
    Pretrained(#[from] crate::model::LoadError),
    #[error("epoch {epoch}: {source}; the checkpoint of epoch {} is intact: fix or remove the file (or pass --on-bad-image skip) and continue with --resume", epoch - 1)]
    Data { epoch: usize, source: DataError },
}

/// Training batches prepared ahead of the one training: while a step runs, the next
/// batches' images are decoded (when read from files) and augmented.
const PREFETCH: usize = 2;

/// Trains `config.model` on `splits.train`, validating on `splits.val` after each epoch and
/// checkpointing into `run`. With `resume`, continues from the run's last complete
/// checkpoint. Returns the metrics of every completed epoch.
pub fn train(
    splits: &Splits,
    config: &RunConfig,
    run: &RunDir,
    device: &Device,
    resume: bool,
    progress: &Progress,
) -> Result<Vec<EpochMetrics>, TrainError> {
    if splits.train.is_empty() {
        return Err(TrainError::NoTrainingData);
    }
    if splits.classes != config.classes {
        return Err(TrainError::ClassMismatch { run: config.classes.join(","), data: splits.classes.join(",") });
    }
    let record_err = |what: &'static str| move |e| record_error(run, what, e);

    config.recipe.validate().map_err(TrainError::Recipe)?;
    progress::pause_point("loaded");
    let recipe = &config.recipe;
    // This thread runs every forward and backward pass below.
    crate::kernels::set_precision(recipe.precision);

    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let mut model = Network::init_revision(config.model, config.model_revision, config.classes.len(), &train_device);
    let mut optimizer = optimizer(config, device);
    let mut ema = None;
    let mut history = Vec::new();
    let mut resumed = false;

    if !resume || !run.exists() {
        run.create()?;
        run.save_config(config)?;
    }
    if resume {
        let checkpoint = run.load_checkpoint()?;
        for path in run.remove_stale_files(checkpoint.as_ref())? {
            tracing::info!("removed {}, left by an interrupted run", path.display());
        }
        if checkpoint.is_none() {
            tracing::info!("{} has no complete checkpoint yet: training from epoch 1", run.root().display());
            run.create()?;
            run.save_metrics(&[])?;
        }
        if let Some(checkpoint) = checkpoint {
            (model, optimizer) = load_checkpoint_state(run, config, &checkpoint, device)?;
            resumed = true;
            if let (Some(decay), Some(name)) = (recipe.ema, &checkpoint.ema) {
                let averaged = load_network(run, config, name, "unreadable averaged weights", &train_device)?;
                ema = Some(Ema::new(decay, &averaged.valid()));
            }
            history = checkpoint.history;
            // Dropout masks after a resume differ from an uninterrupted run's; the shuffle
            // order and the augmentation do not, since they derive from the seed, the epoch
            // and the image alone.
            train_device.seed(config.seed.wrapping_add(history.len() as u64));
            run.save_metrics(&history)?;
            tracing::info!("resuming {} after epoch {}", run.root().display(), history.len());
        }
    }
    progress::pause_point("started");
    // A fresh start derives what the architecture takes from the data; a resumed model has it
    // in its weights. The average starts from the model it will follow.
    if !resumed {
        match &config.pretrained {
            Some(pretrained) => {
                model.load_pretrained(std::path::Path::new(&pretrained.file))?;
                tracing::info!("starting from the weights of {} with a new head", pretrained.file);
            }
            None => {
                let sample =
                    splits.train.statistics_sample().map_err(|source| TrainError::Data { epoch: 1, source })?;
                model.prepare(&sample.images, sample.shape);
            }
        }
    }
    if ema.is_none() {
        ema = recipe.ema.map(|decay| Ema::new(decay, &model.valid()));
    }
    let mut lookahead = recipe.lookahead.then(|| Lookahead::new(&model));

    let mut loss_config = CrossEntropyLossConfig::new();
    if recipe.label_smoothing > 0.0 {
        loss_config = loss_config.with_smoothing(Some(recipe.label_smoothing as f32));
    }
    loss_config =
        loss_config.with_weights(recipe.class_weights.weights(&splits.train.class_counts(config.classes.len())));
    if splits.train.is_streamed() {
        tracing::info!("training images are decoded from their files batch by batch, {PREFETCH} batches ahead");
    }
    let loss_fn = loss_config.init(&train_device);
    if recipe.finetune == Finetune::Head {
        return head::train_head(model, optimizer, history, &loss_fn, splits, config, run, device, progress);
    }
    let (cropping, input) = (recipe.cropping(), config.image_shape());
    let n = splits.train.len();
    let batches = n.div_ceil(config.batch_size);
    let total_steps = batches * config.epochs;
    // Fine-tuning a pretrained backbone: its parameters' ids, for their own rate, and the
    // frozen epochs' check that there is a head to train alone.
    let head = model.head().map(|head| ParamGroup::ids_from_module(head.clone()));
    if recipe.freeze_epochs > 0 && head.is_none() {
        return Err(TrainError::Recipe(format!(
            "--freeze-epochs needs a network with a classification head to train alone; {} has none",
            config.model
        )));
    }
    let sync_every = lookahead::every(config.batch_size, total_steps);
    let mut best = best_epoch(&history);
    for epoch in history.len() + 1..=config.epochs {
        if let (Some(patience), Some((best_epoch, _))) = (recipe.patience, best)
            && epoch - 1 - best_epoch >= patience
        {
            tracing::info!(
                "stopping early: no better validation accuracy for {patience} epochs; the run's \
                 model is epoch {best_epoch}'s"
            );
            break;
        }
        let started = Instant::now();
        // In the frozen epochs of a fine-tuning, the backbone runs without autodiff: no
        // gradients, and its BatchNorm layers use their running statistics and keep them.
        let frozen = (epoch <= recipe.freeze_epochs).then(|| model.valid());
        if recipe.freeze_epochs > 0 && epoch == recipe.freeze_epochs + 1 {
            tracing::info!(
                "epoch {epoch}: every layer trains from now on, the backbone at {} times the head's rate",
                recipe.backbone_lr_scale
            );
        }
        let bar = progress.epoch(epoch, config.epochs, batches as u64);
        let order = epoch_order(n, config.seed, epoch);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0u64, 0usize);
        // A producer thread prepares the batches (decoding files, cropping) up to PREFETCH
        // ahead; returning early drops the receiver, which ends it at its next send.
        model = std::thread::scope(|scope| -> Result<Network, TrainError> {
            let mut model = model;
            let (sender, batches_ahead) = std::sync::mpsc::sync_channel(PREFETCH);
            let (train, cropping, order) = (&splits.train, &cropping, &order);
            scope.spawn(move || {
                for indices in order.chunks(config.batch_size) {
                    let batch = train.train_batch(indices, cropping, input.size, config.seed, epoch);
                    if sender.send(batch).is_err() {
                        break;
                    }
                }
            });
            for (b, batch) in batches_ahead.iter().enumerate() {
                if STOP.load(Ordering::Relaxed) {
                    return Err(TrainError::Stopped { epoch });
                }
                let (pixels, labels) = batch.map_err(|source| TrainError::Data { epoch, source })?;
                if labels.is_empty() {
                    continue;
                }
                let step = (epoch - 1) * batches + b;
                let targets = labels_to_tensor(&labels, &train_device);
                let logits = match &frozen {
                    Some(backbone) => frozen_logits(&model, backbone, &pixels, input, device),
                    None => model.forward(images_to_tensor(&pixels, input, &train_device)),
                };
                let loss = loss_fn.forward(logits.clone(), targets);
                let batch_loss = f64::from(loss.clone().into_scalar::<f32>());
                correct += count_correct(&logits.into_data().try_to_vec::<f32>().unwrap_or_default(), &labels);
                loss_sum += batch_loss * labels.len() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let (cycle_step, cycle_steps) = cycle_position(step, batches, config.epochs, recipe.freeze_epochs);
                let lr = config.learning_rate * recipe.lr_factor(cycle_step, cycle_steps, batches);
                model = optimizer.step(step_rates(lr, recipe.backbone_lr_scale, head.as_ref()), model, grads);
                if let Some(slow) =
                    lookahead.as_mut().filter(|_| lookahead::syncs_after(step + 1, total_steps, sync_every))
                {
                    model = slow.sync(model, lookahead::decay_at(step + 1, total_steps));
                }
                if let Some(ema) = ema.as_mut().filter(|_| (step + 1).is_multiple_of(ema::EVERY)) {
                    ema.update(&model.valid(), step + 1);
                }
                seen += labels.len();
                bar.step(loss_sum / seen as f64, correct as f64 / seen as f64, seen);
            }
            Ok(model)
        })?;
        let trained = seen.max(1);
        let train_loss = loss_sum / trained as f64;
        if !train_loss.is_finite() {
            return Err(TrainError::Diverged(train_loss, epoch));
        }
        let evaluated = match &ema {
            Some(ema) => ema.apply(model.valid()),
            None => model.valid(),
        };
        let (val_loss, val_acc) =
            validate(&evaluated, &splits.val, device).map_err(|source| TrainError::Data { epoch, source })?;
        let metrics = EpochMetrics {
            epoch,
            seconds: round3(started.elapsed().as_secs_f64()),
            train_loss,
            train_acc: correct as f64 / trained as f64,
            val_loss,
            val_acc,
        };
        history.push(metrics.clone());
        let improved = best.is_none_or(|(_, acc)| val_acc > acc);
        if improved {
            best = Some((epoch, val_acc));
        }
        let weights = model.clone().into_record().into_bytes().map_err(record_err("cannot serialise weights"))?;
        let state = optimizer.into_bytes().map_err(record_err("cannot serialise optimiser state"))?;
        let averaged = match &ema {
            Some(_) => Some(evaluated.into_record().into_bytes().map_err(record_err("cannot serialise weights"))?),
            None => None,
        };
        let evaluated_bytes = averaged.as_deref().unwrap_or(&weights);
        let keep_best = recipe.patience.is_some();
        run.save_checkpoint_parts(
            &CheckpointParts {
                model: &weights,
                optimizer: &state,
                ema: averaged.as_deref(),
                publish: (!keep_best || improved).then_some(evaluated_bytes),
                best_epoch: best.filter(|_| keep_best).map(|(e, _)| e),
            },
            &history,
        )?;
        bar.finish(&metrics);
        progress.epoch_done(run, &history);
    }
    Ok(history)
}

/// Logits of a batch (CHW `u8` of `input`) with the backbone frozen: `backbone`, `model`
/// without autodiff on `device`, computes the features, so only `model`'s head gets
/// gradients. `model` has a head ([`Network::classify_pooled`]): `train` checks it first.
fn frozen_logits(
    model: &Network,
    backbone: &Network,
    pixels: &[u8],
    input: ImageShape,
    device: &Device,
) -> burn::tensor::Tensor<2> {
    let features = backbone.pooled(images_to_tensor(pixels, input, device)).map(|pooled| pooled.into_data());
    let train_device = device.clone().autodiff();
    features
        .and_then(|features| model.classify_pooled(burn::tensor::Tensor::from_data(features, &train_device)))
        .unwrap_or_else(|| model.forward(images_to_tensor(pixels, input, &train_device)))
}

/// Where `step` (0-based over the run's `epochs` of `batches` steps) is in its learning-rate
/// cycle, and that cycle's length: with `frozen` epochs of a fine-tuning first (and some
/// after), each phase has its own cycle, as fastai's `fine_tune` runs `fit_one_cycle` for
/// each; otherwise one cycle spans the run.
fn cycle_position(step: usize, batches: usize, epochs: usize, frozen: usize) -> (usize, usize) {
    let boundary = frozen * batches;
    if frozen == 0 || frozen >= epochs {
        (step, epochs * batches)
    } else if step < boundary {
        (step, boundary)
    } else {
        (step - boundary, (epochs - frozen) * batches)
    }
}

/// One step's rates: `lr` for the parameters of `head`, `lr * backbone_scale` for every
/// other (discriminative rates); `lr` for all when the scale is 1 or there is no head.
fn step_rates(lr: f64, backbone_scale: f64, head: Option<&ParamGroup>) -> ModuleLearningRate {
    match head {
        Some(head) if backbone_scale != 1.0 => {
            ModuleLrScheduler::new(lr * backbone_scale).with_group(head.clone(), lr).step()
        }
        _ => ModuleLearningRate::from(lr),
    }
}

/// The trained weights (on `device` with autodiff) and the optimiser state of `run`'s
/// `checkpoint`, ready to step: what `--resume` continues from, and what
/// `classify bench --from-run` times a steady-state step with.
pub fn load_checkpoint_state(
    run: &RunDir,
    config: &RunConfig,
    checkpoint: &Checkpoint,
    device: &Device,
) -> Result<(Network, ModuleOptimizer), TrainError> {
    let model =
        load_network(run, config, &checkpoint.model, "unreadable checkpoint weights", &device.clone().autodiff())?;
    let state = Bytes::from_bytes_vec(run.read(&checkpoint.optimizer)?);
    let optimizer =
        optimizer(config, device).from_bytes(state).map_err(|e| record_error(run, "unreadable optimiser state", e))?;
    Ok((model, optimizer))
}

/// The network of `run`'s config with the weights of its file `name` (relative to the run).
fn load_network(
    run: &RunDir,
    config: &RunConfig,
    name: &str,
    what: &'static str,
    device: &Device,
) -> Result<Network, TrainError> {
    let weights = Bytes::from_bytes_vec(run.read(name)?);
    let record = ModuleRecord::from_bytes(weights).map_err(|e| record_error(run, what, e))?;
    Network::init_revision(config.model, config.model_revision, config.classes.len(), device)
        .try_load_record(record)
        .map_err(|e| record_error(run, "checkpoint weights do not fit the model", e))
}

fn record_error(run: &RunDir, what: &'static str, e: burn::store::RecordError) -> TrainError {
    TrainError::Record { what, run: run.root().display().to_string(), reason: e.to_string() }
}

/// The optimiser a run's recipe asks for on `device`. BatchNorm layers are the fields named
/// `norm*` of the models here; their shifts (`beta`) and scales (`gamma`) get their own
/// groups when the recipe treats them apart.
fn optimizer(config: &RunConfig, device: &Device) -> ModuleOptimizer {
    optimizer_for(&config.recipe, &config.optimizer, device)
}

/// The optimiser `recipe` asks for on `device`, with its BatchNorm groups.
pub fn optimizer_for(recipe: &Recipe, adam: &AdamSettings, device: &Device) -> ModuleOptimizer {
    let mut optimizer = match recipe.optimizer {
        OptimizerKind::Adam => adam::optimizer(adam, device),
        OptimizerKind::Sgd => ModuleOptimizer::from(sgd::FusedSgd::new(recipe.momentum, recipe.weight_decay)),
    };
    if recipe.norm_bias_lr_scale != 1.0 && recipe.optimizer == OptimizerKind::Sgd {
        let shifts = sgd::FusedSgd::new(recipe.momentum, recipe.weight_decay).with_lr_scale(recipe.norm_bias_lr_scale);
        optimizer = optimizer.with_group(ParamGroup::from_predicates(vec![".norm", ".beta"]), shifts, None);
    }
    if recipe.freeze_norm_scale {
        optimizer = optimizer.with_group(ParamGroup::from_predicates(vec![".norm", ".gamma"]), sgd::Frozen, None);
    }
    optimizer
}

/// The order in which epoch `epoch` visits the `n` training images: a permutation seeded by
/// the run's seed and the epoch, so a resumed run sees the same batches.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// Images [`validate`] decodes and scores at a time when they are read from files.
const VALIDATION_CHUNK: usize = 512;

/// Mean cross-entropy and accuracy of `model` on `set`; (0, 0) for an empty set.
///
/// # Errors
/// A file that cannot be decoded, when `set` is read from files (see [`Images::fetch`]).
pub fn validate(model: &Network, set: &Images, device: &Device) -> Result<(f64, f64), DataError> {
    let (mut loss, mut correct, mut count) = (0.0f64, 0u64, 0usize);
    let mut score = |images: &ImageSet| {
        if images.is_empty() {
            return;
        }
        let logits = model.logits(&images.images, images.shape, device);
        let classes = logits.len() / images.len();
        loss += logits
            .chunks(classes)
            .zip(&images.labels)
            .map(|(row, &label)| cross_entropy(row, usize::from(label)))
            .sum::<f64>();
        correct += count_correct(&logits, &images.labels);
        count += images.len();
    };
    // Images in memory are scored where they are; files are decoded a chunk at a time.
    match set.memory() {
        Some(images) => score(images),
        None => {
            let all: Vec<usize> = (0..set.len()).collect();
            for indices in all.chunks(VALIDATION_CHUNK) {
                score(&set.fetch(indices)?.0);
            }
        }
    }
    if count == 0 {
        return Ok((0.0, 0.0));
    }
    Ok((loss / count as f64, correct as f64 / count as f64))
}

/// How many rows of `logits` have their maximum at the row's label.
fn count_correct(logits: &[f32], labels: &[u8]) -> u64 {
    if labels.is_empty() {
        return 0;
    }
    let classes = logits.len() / labels.len();
    logits.chunks(classes).zip(labels).filter(|(row, label)| argmax(row) == usize::from(**label)).count() as u64
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Fixtures shared by the optimisers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::{Device, Tensor, TensorData};

    /// Deterministic values in [-1, 1): tests run in parallel and burn's RNG is per process.
    pub fn wave<const D: usize>(shape: [usize; D], phase: f32, device: &Device) -> Tensor<D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + phase).sin()).collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// The values of `model`'s first parameter.
    pub fn first_weight(model: &crate::model::Network) -> Vec<f32> {
        use burn::module::{Module, ModuleVisitor, Param};
        struct First(Option<Vec<f32>>);
        impl ModuleVisitor for First {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.0.is_none() {
                    self.0 = Some(param.val().into_data().try_into_vec::<f32>().unwrap());
                }
            }
        }
        let mut first = First(None);
        model.visit(&mut first);
        first.0.unwrap()
    }

    /// The weights of a 1093 -> 64 dense layer (70k weights, more than one parallel chunk)
    /// after `steps` steps at `lr` on a squared loss.
    pub fn train_linear(optimizer: &mut ModuleOptimizer, steps: usize, lr: f64) -> Vec<f32> {
        let device = Device::flex().autodiff();
        let (d_in, d_out) = (70_000 / 64, 64);
        let mut linear: Linear = LinearConfig::new(d_in, d_out).init(&device);
        linear.weight = burn::module::Param::from_tensor(wave([d_in, d_out], 0.0, &device).mul_scalar(0.05));
        linear.bias = Some(burn::module::Param::from_tensor(wave([d_out], 2.0, &device)));
        let x = wave([8, d_in], 1.0, &device);
        for _ in 0..steps {
            let loss = (linear.forward(x.clone()) - 0.5).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &linear);
            linear = optimizer.step(lr, linear, grads);
        }
        linear.weight.val().into_data().try_into_vec::<f32>().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation_that_changes_each_epoch() {
        let a = epoch_order(100, 42, 1);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 42, 1));
        assert_ne!(a, epoch_order(100, 42, 2));
        assert_ne!(a, epoch_order(100, 43, 1));
    }

    #[test]
    fn batchnorm_shifts_step_at_their_scale_and_frozen_scales_stay_at_one() {
        use crate::model::ModelKind;
        use burn::prelude::*;
        let device = Device::flex().autodiff();
        let model = Network::init(ModelKind::Fast, 10, &device);
        let recipe = Recipe {
            optimizer: OptimizerKind::Sgd,
            momentum: 0.0,
            norm_bias_lr_scale: 64.0,
            freeze_norm_scale: true,
            ..Recipe::default()
        };
        let mut optimizer = optimizer_for(&recipe, &AdamSettings::default(), &device);
        let images = crate::train::testing::wave([4, 3, 32, 32], 0.3, &device).abs();
        let loss = model.forward(images).powi_scalar(2).mean();
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let Network::Fast(net) = &model else { unreachable!() };
        let norm = &net.blocks[1].norm1;
        let beta_grad = grads.get::<1>(norm.beta.id).unwrap().into_data().iter::<f32>().collect::<Vec<_>>();
        let conv_grad =
            grads.get::<4>(net.blocks[1].conv2.weight.id).unwrap().into_data().iter::<f32>().collect::<Vec<_>>();
        assert!(grads.get::<1>(norm.gamma.id).is_some(), "scales do get gradients");
        let values = |t: Tensor<1>| t.into_data().iter::<f32>().collect::<Vec<_>>();
        let (beta0, gamma0) = (values(norm.beta.val()), values(norm.gamma.val()));
        let conv0 = net.blocks[1].conv2.weight.val().into_data().iter::<f32>().collect::<Vec<_>>();
        let stepped = optimizer.step(0.01, model.clone(), std::mem::take(&mut grads));
        let Network::Fast(after) = &stepped else { unreachable!() };
        let norm = &after.blocks[1].norm1;
        assert_eq!(values(norm.gamma.val()), gamma0, "frozen scales must not move");
        for ((b, b0), g) in values(norm.beta.val()).iter().zip(&beta0).zip(&beta_grad) {
            assert!((b - (b0 - 0.64 * g)).abs() < 1e-5, "shift {b0} -> {b} with gradient {g}");
        }
        let conv = after.blocks[1].conv2.weight.val().into_data().iter::<f32>().collect::<Vec<_>>();
        for ((w, w0), g) in conv.iter().zip(&conv0).zip(&conv_grad).take(500) {
            assert!((w - (w0 - 0.01 * g)).abs() < 1e-6, "weight {w0} -> {w} with gradient {g}");
        }
        assert!(beta_grad.iter().any(|g| g.abs() > 1e-6), "the test needs non-zero shift gradients");
    }

    #[test]
    fn frozen_epochs_and_the_epochs_after_them_each_have_a_cycle() {
        // 3 epochs of 10 steps, the first frozen: a cycle of 10 steps, then one of 20.
        assert_eq!(cycle_position(0, 10, 3, 1), (0, 10));
        assert_eq!(cycle_position(9, 10, 3, 1), (9, 10));
        assert_eq!(cycle_position(10, 10, 3, 1), (0, 20));
        assert_eq!(cycle_position(29, 10, 3, 1), (19, 20));
        // No frozen epochs, or every epoch frozen: one cycle over the run.
        assert_eq!(cycle_position(15, 10, 3, 0), (15, 30));
        assert_eq!(cycle_position(15, 10, 3, 3), (15, 30));
    }

    /// A Lite0 at 32 px on the autodiff CPU device, the pixels of a batch of two images at
    /// that size, and the SGD of the photo recipe without momentum.
    fn fine_tuning_fixture() -> (Network, Vec<u8>, ImageShape, ModuleOptimizer) {
        use crate::model::ModelKind;
        let device = Device::flex().autodiff();
        let model = Network::init(ModelKind::EfficientnetLite0, 3, &device);
        let shape = ImageShape::square(32);
        let pixels: Vec<u8> = (0..2 * shape.image_bytes()).map(|i| (i * 7 % 251) as u8).collect();
        let recipe = Recipe { optimizer: OptimizerKind::Sgd, momentum: 0.0, ..Recipe::default() };
        (model, pixels, shape, optimizer_for(&recipe, &AdamSettings::default(), &device))
    }

    fn values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    fn loss_of(logits: burn::tensor::Tensor<2>) -> burn::tensor::Tensor<1> {
        let device = logits.device();
        CrossEntropyLossConfig::new().init(&device).forward(logits, labels_to_tensor(&[0, 2], &device))
    }

    #[test]
    fn a_frozen_backbone_keeps_its_weights_and_statistics_while_the_head_trains() {
        let (model, pixels, shape, mut optimizer) = fine_tuning_fixture();
        let device = Device::flex();
        let probe = images_to_tensor(&pixels, shape, &device);
        let features = |m: &Network| values(m.valid().pooled(probe.clone()).unwrap());
        let head_weights = |m: &Network| values(m.head().unwrap().weight.val());
        let (features0, head0) = (features(&model), head_weights(&model));
        let head = model.head().map(|h| ParamGroup::ids_from_module(h.clone()));

        let logits = frozen_logits(&model, &model.valid(), &pixels, shape, &device);
        let grads = GradientsParams::from_grads(loss_of(logits).backward(), &model);
        assert_eq!(grads.len(), 2, "only the head's weight and bias get gradients");
        let model = optimizer.step(step_rates(0.1, 0.1, head.as_ref()), model, grads);
        assert_eq!(features(&model), features0, "the backbone and its BatchNorm statistics are as they were");
        assert_ne!(head_weights(&model), head0, "the head trained");

        // The same step through the whole network moves the backbone and its statistics.
        let logits = model.forward(images_to_tensor(&pixels, shape, &device.autodiff()));
        let grads = GradientsParams::from_grads(loss_of(logits).backward(), &model);
        assert!(grads.len() > 100, "every layer gets gradients: {}", grads.len());
        let model = optimizer.step(step_rates(0.1, 0.1, head.as_ref()), model, grads);
        assert_ne!(features(&model), features0);
    }

    #[test]
    fn the_backbone_steps_at_its_scale_of_the_heads_rate() {
        let (model, pixels, shape, mut optimizer) = fine_tuning_fixture();
        let Network::EfficientNet(net) = &model else { unreachable!() };
        let (stem, fc) = (net.conv_stem.weight.clone(), net.fc.weight.clone());
        let head = model.head().map(|h| ParamGroup::ids_from_module(h.clone()));
        let logits = model.forward(images_to_tensor(&pixels, shape, &Device::flex().autodiff()));
        let grads = GradientsParams::from_grads(loss_of(logits).backward(), &model);
        let (stem_grad, fc_grad) = (values(grads.get::<4>(stem.id).unwrap()), values(grads.get::<2>(fc.id).unwrap()));
        let lr = 0.5;
        let stepped = optimizer.step(step_rates(lr, 0.1, head.as_ref()), model, grads);
        let Network::EfficientNet(after) = &stepped else { unreachable!() };
        let moved = |before: &[f32], after: Vec<f32>, grad: &[f32], rate: f64| {
            for ((b, a), g) in before.iter().zip(&after).zip(grad) {
                assert!((a - (b - rate as f32 * g)).abs() < 1e-6, "{b} -> {a} with gradient {g} at rate {rate}");
            }
            assert!(grad.iter().any(|g| g.abs() > 1e-5), "the test needs non-zero gradients");
        };
        moved(&values(stem.val()), values(after.conv_stem.weight.val()), &stem_grad, lr * 0.1);
        moved(&values(fc.val()), values(after.fc.weight.val()), &fc_grad, lr);
    }

    #[test]
    fn counts_rows_whose_maximum_is_the_label() {
        let logits = [0.1, 0.9, 0.8, 0.2, 0.3, 0.7];
        assert_eq!(count_correct(&logits, &[1, 0, 0]), 2);
    }
}
