//! `classify bench`: training and inference throughput, single-image latency and peak
//! memory, measured the way `../shared/peers/keras_seed.py --bench-steps` measures Keras
//! (20 warm-up steps, then timed steps; inference at batch 256), so the two sit side by side.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use serde::Serialize;

use crate::data::ImageSet;
use crate::geometry::ImageShape;
use crate::kernels::Precision;
use crate::model::{ModelKind, Network, images_to_tensor, labels_to_tensor};
use crate::quantize::{Quantize, quantize};
use crate::run::{RunConfig, RunDir};
use crate::settings::{AdamSettings, OptimizerKind, RecipeName, TrainSettings};
use crate::train::TrainError;

/// Untimed training steps before measuring, as in the Keras script.
pub const WARMUP_STEPS: usize = 20;
/// Batch size of the inference measurement, as in the Keras script.
pub const INFER_BATCH: usize = 256;

/// What to measure. Training steps use the optimiser, learning rate and label smoothing of
/// the model's default recipe (Adam for `seed`, airbench's SGD for `fast`), so the figures
/// are what training costs.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub model: ModelKind,
    /// Side of the square images, in pixels (`--image-size`).
    pub image_size: usize,
    /// Images per training step; [`BenchSettings::recipe_batch_size`] is the recipe's.
    pub batch_size: usize,
    /// Timed training steps.
    pub steps: usize,
    /// Images classified for the throughput figure.
    pub infer_images: usize,
    /// Single-image calls for the latency figures.
    pub latency_calls: usize,
    /// Weight precision of the trained model for the inference and latency figures.
    pub quantize: Quantize,
    /// Arithmetic of the convolutions' products, training and inference.
    pub precision: Precision,
}

impl BenchSettings {
    /// The batch size `model`'s default recipe trains with.
    pub fn recipe_batch_size(model: ModelKind) -> usize {
        TrainSettings::defaults(model, RecipeName::default_for(model)).batch_size
    }
}

/// The measurements; times in milliseconds unless named otherwise.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub model: String,
    /// Side of the square images, in pixels.
    pub image_size: usize,
    /// `fresh weights`, or the checkpoint the steps started from (`--from-run`).
    pub start: String,
    pub classify_version: String,
    /// CPU worker threads (rayon) the backend used.
    pub threads: usize,
    /// `synthetic` or the number of real images cycled through.
    pub data: String,
    pub batch_size: usize,
    pub steps: usize,
    /// The optimiser of the training steps (the model's recipe's).
    pub optimizer: OptimizerKind,
    /// The learning rate of the training steps (the recipe's base rate).
    pub learning_rate: f64,
    /// Weight precision of the inference and latency figures (`none` or `int8`).
    pub quantize: Quantize,
    pub train_images_per_s: f64,
    pub train_ms_per_step: f64,
    /// Gathering the batch and building its tensors.
    pub data_ms: f64,
    /// Forward pass and loss, up to reading the loss value.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    pub infer_images_per_s_batch256: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    /// Peak resident memory of the process (VmHWM), where the OS reports it.
    pub peak_rss_mb: Option<f64>,
    /// Whether the compute threads flush subnormal floats to zero (see [`crate::device`]).
    pub flushes_subnormals: bool,
    /// The arithmetic's precision: weights, activations and gradients.
    pub precision: String,
    /// What each hand-written CPU kernel ran on this CPU; empty off the CPU, where burn's
    /// own operations for the device do all the work.
    pub kernels: Vec<crate::kernels::KernelPath>,
}

/// A trained run's last checkpoint, to time steady-state steps from: an optimiser whose
/// moments have decayed over many steps (into the subnormal range, where a CPU that does
/// not flush them slows down), rather than a fresh one.
pub struct Checkpointed {
    /// The run's settings; its model and recipe replace [`BenchSettings::model`]'s.
    pub config: RunConfig,
    /// Epochs the checkpoint has trained.
    pub epoch: usize,
    pub model: Network,
    pub optimizer: ModuleOptimizer,
}

impl Checkpointed {
    /// The last complete checkpoint of the run at `root`, on `device`.
    pub fn load(root: &Path, device: &Device) -> Result<Self, TrainError> {
        let run = RunDir::new(root);
        let config = run.load_config()?;
        let checkpoint = run.load_checkpoint()?.ok_or_else(|| TrainError::NoCheckpoint(root.to_path_buf()))?;
        let (model, optimizer) = crate::train::load_checkpoint_state(&run, &config, &checkpoint, device)?;
        Ok(Checkpointed { config, epoch: checkpoint.epoch, model, optimizer })
    }
}

/// Runs the measurements on `images` (cycled) or on synthetic images, from fresh weights or
/// from a run's checkpoint.
pub fn run(
    settings: &BenchSettings,
    images: Option<&ImageSet>,
    start: Option<Checkpointed>,
    device: &Device,
) -> BenchResult {
    let shape = ImageShape::square(settings.image_size);
    let mut data = match images {
        Some(set) if !set.is_empty() => set.clone().center_crop(shape.size.min(set.shape.size)),
        // As many pixels as 4,096 CIFAR images, and a batch at least.
        _ => synthetic((4096 * 1024 / (shape.size * shape.size)).max(settings.batch_size), shape),
    };
    let data_name = match images {
        Some(set) if !set.is_empty() => format!("{} images", set.len()),
        _ => "synthetic".to_string(),
    };
    // This thread runs every pass measured below.
    crate::kernels::set_precision(settings.precision);
    let train_device = device.clone().autodiff();
    train_device.seed(0);
    let (mut model, mut optimizer, recipe, start_name) = match start {
        Some(start) => {
            let classes = start.config.classes.len().max(1);
            for label in &mut data.labels {
                *label %= classes as u8;
            }
            let name = format!("checkpoint of epoch {}", start.epoch);
            (start.model, start.optimizer, start.config.settings(), name)
        }
        None => {
            let recipe = TrainSettings::defaults(settings.model, RecipeName::default_for(settings.model));
            let optimizer = crate::train::optimizer_for(&recipe.recipe, &AdamSettings::default(), device);
            (Network::init(settings.model, 10, &train_device), optimizer, recipe, "fresh weights".to_string())
        }
    };
    let mut loss_config = CrossEntropyLossConfig::new();
    if recipe.recipe.label_smoothing > 0.0 {
        loss_config = loss_config.with_smoothing(Some(recipe.recipe.label_smoothing as f32));
    }
    let loss_fn = loss_config.init(&train_device);
    let bs = settings.batch_size;
    let mut phases = [0.0f64; 4];
    let mut timed_s = 0.0;
    for step in 0..WARMUP_STEPS + settings.steps {
        let indices: Vec<usize> = (step * bs..(step + 1) * bs).map(|i| i % data.len()).collect();
        let t0 = Instant::now();
        let batch = data.select(&indices);
        let x = images_to_tensor(&batch.images, data.shape, &train_device);
        let y = labels_to_tensor(&batch.labels, &train_device);
        let t1 = Instant::now();
        let loss = loss_fn.forward(model.forward(x), y);
        let _ = loss.clone().into_scalar::<f32>();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let _ = train_device.sync();
        let t3 = Instant::now();
        model = optimizer.step(recipe.learning_rate, model, grads);
        let _ = train_device.sync();
        let t4 = Instant::now();
        if step >= WARMUP_STEPS {
            for (acc, (a, b)) in phases.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)]) {
                *acc += (b - a).as_secs_f64();
            }
            timed_s += (t4 - t0).as_secs_f64();
        }
    }
    let steps = settings.steps as f64;
    let per_step_ms = |s: f64| round2(1000.0 * s / steps);

    let model = quantize(model.valid(), settings.quantize);
    let infer: Vec<u8> = (0..settings.infer_images).flat_map(|i| data.image(i % data.len()).iter().copied()).collect();
    let bytes = data.shape.image_bytes();
    model.logits(&infer[..bytes * INFER_BATCH.min(settings.infer_images)], data.shape, device);
    let t = Instant::now();
    for chunk in infer.chunks(INFER_BATCH * bytes) {
        model.logits(chunk, data.shape, device);
    }
    let infer_s = t.elapsed().as_secs_f64();

    let mut latencies: Vec<f64> = Vec::with_capacity(settings.latency_calls);
    for i in 0..settings.latency_calls + WARMUP_STEPS {
        let t = Instant::now();
        model.logits(data.image(i % data.len()), data.shape, device);
        if i >= WARMUP_STEPS {
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);

    BenchResult {
        model: recipe.model.to_string(),
        image_size: data.shape.size,
        start: start_name,
        classify_version: env!("CARGO_PKG_VERSION").to_string(),
        threads: rayon::current_num_threads(),
        data: data_name,
        batch_size: bs,
        steps: settings.steps,
        optimizer: recipe.recipe.optimizer,
        learning_rate: recipe.learning_rate,
        quantize: settings.quantize,
        train_images_per_s: round1(steps * bs as f64 / timed_s),
        train_ms_per_step: per_step_ms(timed_s),
        data_ms: per_step_ms(phases[0]),
        forward_ms: per_step_ms(phases[1]),
        backward_ms: per_step_ms(phases[2]),
        optimizer_ms: per_step_ms(phases[3]),
        infer_images_per_s_batch256: round1(settings.infer_images as f64 / infer_s),
        latency_ms_p50: round2(percentile(&latencies, 0.50)),
        latency_ms_p99: round2(percentile(&latencies, 0.99)),
        peak_rss_mb: peak_rss_mb(),
        flushes_subnormals: rayon::broadcast(|_| crate::device::flushes_subnormals()).into_iter().all(|f| f),
        precision: match (settings.precision, settings.quantize) {
            (Precision::Fp32, Quantize::None) => "fp32 throughout (weights, activations, gradients, optimiser state)",
            (Precision::Fp32, Quantize::Int8) => "fp32 training; int8 weights for inference",
            (Precision::Bf16, Quantize::None) => {
                "bf16 operands in the 3x3 convolutions' products, fp32 sums, weights, BatchNorm and optimiser state"
            }
            (Precision::Bf16, Quantize::Int8) => {
                "bf16 operands in the 3x3 convolutions' products while training; int8 weights for inference"
            }
        }
        .to_string(),
        kernels: if crate::device::is_cpu(device) { crate::kernels::paths() } else { Vec::new() },
    }
}

/// `n` deterministic pseudo-random images of `shape` with labels `i % 10`.
pub fn synthetic(n: usize, shape: ImageShape) -> ImageSet {
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut set = ImageSet::with_capacity(shape, n);
    let mut img = vec![0u8; shape.image_bytes()];
    for i in 0..n {
        for v in img.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *v = (state >> 56) as u8;
        }
        set.push(&img, (i % 10) as u8);
    }
    set
}

/// The `q` quantile of sorted `values` (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident set size in MiB, from `/proc/self/status` (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(round1(kb / 1024.0))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "classify {} bench, model {} at {} px ({}), {} threads, {} data, subnormals {}",
            self.classify_version,
            self.model,
            self.image_size,
            self.start,
            self.threads,
            self.data,
            if self.flushes_subnormals { "flushed to zero" } else { "kept (IEEE)" }
        )?;
        let optimizer = match self.optimizer {
            OptimizerKind::Adam => "Adam",
            OptimizerKind::Sgd => "SGD-Nesterov",
        };
        writeln!(
            f,
            "training, batch {} over {} steps ({optimizer}, lr {}, the model's recipe):",
            self.batch_size, self.steps, self.learning_rate
        )?;
        writeln!(f, "  {:>10.1} images/s   {:.2} ms/step", self.train_images_per_s, self.train_ms_per_step)?;
        writeln!(
            f,
            "  data {:.2} ms, forward {:.2} ms, backward {:.2} ms, optimizer {:.2} ms",
            self.data_ms, self.forward_ms, self.backward_ms, self.optimizer_ms
        )?;
        let precision = if self.quantize == Quantize::Int8 { ", int8 weights" } else { "" };
        writeln!(f, "inference, batch {INFER_BATCH}{precision}: {:.1} images/s", self.infer_images_per_s_batch256)?;
        writeln!(f, "single-image latency: p50 {:.2} ms, p99 {:.2} ms", self.latency_ms_p50, self.latency_ms_p99)?;
        writeln!(f, "precision: {}", self.precision)?;
        if self.kernels.is_empty() {
            writeln!(f, "kernels: burn's own operations for the device")?;
        } else {
            writeln!(f, "kernels on this CPU:")?;
            for k in &self.kernels {
                writeln!(f, "  {}: {}", k.operation, k.path)?;
            }
        }
        match self.peak_rss_mb {
            Some(mb) => write!(f, "peak resident memory: {mb:.1} MiB"),
            None => write!(f, "peak resident memory: not reported on this OS"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_model_is_benched_with_its_recipes_sgd() {
        let settings = BenchSettings {
            model: ModelKind::Fast,
            image_size: 32,
            batch_size: 2,
            steps: 1,
            infer_images: 2,
            latency_calls: 1,
            quantize: Quantize::None,
            precision: Precision::Fp32,
        };
        let r = run(&settings, Some(&synthetic(4, ImageShape::CIFAR)), None, &Device::flex());
        assert_eq!((r.optimizer, r.learning_rate), (OptimizerKind::Sgd, 0.375));
        assert_eq!(BenchSettings::recipe_batch_size(ModelKind::Fast), 256);
        assert_eq!(BenchSettings::recipe_batch_size(ModelKind::Seed), 32);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn synthetic_images_are_deterministic_and_labelled_round_robin() {
        let a = synthetic(12, ImageShape::CIFAR);
        assert_eq!(a, synthetic(12, ImageShape::CIFAR));
        assert_eq!(a.len(), 12);
        assert_eq!(a.labels[11], 1);
        assert_ne!(a.image(0), a.image(1));
    }

    #[test]
    fn bench_reports_every_figure_on_a_tiny_run() {
        let settings = BenchSettings {
            model: ModelKind::Seed,
            image_size: 32,
            batch_size: 4,
            steps: 2,
            infer_images: 8,
            latency_calls: 3,
            quantize: Quantize::None,
            precision: Precision::Fp32,
        };
        let r = run(&settings, Some(&synthetic(16, ImageShape::CIFAR)), None, &Device::flex());
        assert_eq!(r.steps, 2);
        assert_eq!(r.data, "16 images");
        for v in [
            r.train_images_per_s,
            r.train_ms_per_step,
            r.forward_ms,
            r.backward_ms,
            r.optimizer_ms,
            r.infer_images_per_s_batch256,
            r.latency_ms_p50,
        ] {
            assert!(v > 0.0 && v.is_finite(), "{r:?}");
        }
        assert!(r.latency_ms_p99 >= r.latency_ms_p50);
        assert_eq!((r.optimizer, r.learning_rate), (OptimizerKind::Adam, 0.001));
        let phases = r.data_ms + r.forward_ms + r.backward_ms + r.optimizer_ms;
        assert!((phases - r.train_ms_per_step).abs() <= 0.05 + 0.01 * r.train_ms_per_step, "{r:?}");
        if cfg!(target_os = "linux") {
            assert!(r.peak_rss_mb.unwrap() > 1.0);
        }
        let int8 = run(
            &BenchSettings { quantize: Quantize::Int8, ..settings },
            Some(&synthetic(16, ImageShape::CIFAR)),
            None,
            &Device::flex(),
        );
        assert_eq!(int8.quantize, Quantize::Int8);
        assert!(int8.infer_images_per_s_batch256 > 0.0 && int8.latency_ms_p50 > 0.0, "{int8:?}");
    }
}
