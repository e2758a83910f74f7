//! BatchNorm followed by ReLU (or ReLU6, or nothing: [`Bounds`]), in training mode, as one
//! burn backend extension on the CPU.
//!
//! burn Flex runs a training BatchNorm as the backend's generic composition: the per-channel
//! mean and variance each through a transposing copy of the whole activation, then the
//! normalisation, then the ReLU as a layer of its own, and in the backward pass a dozen more
//! whole-tensor operations (three transposing copies among them). Each is a pass over an
//! activation of up to 17 MB at batch 256, and the fast model has six such layers. Here the
//! forward pass reads the input twice (statistics, then normalise-and-ReLU) and writes once,
//! and the backward pass reads input and output gradient twice and writes once, with the
//! ReLU's mask recomputed from the input rather than stored.
//!
//! The formulas are the textbook ones, with `x̂ = (x - mean) / sqrt(var + eps)`,
//! `z = gamma * x̂ + beta`, `y = max(z, 0)`, `g = dy` where `z > 0` and 0 elsewhere, and `M`
//! values per channel (ReLU6 clamps to `[0, 6]` and passes `g` where `0 < z < 6`; without an
//! activation `g = dy`):
//!
//! ```text
//! dbeta  = sum g          dgamma = sum g * x̂
//! dx     = gamma / sqrt(var + eps) * (g - dbeta / M - x̂ * dgamma / M)
//! ```
//!
//! The extension is routed for Flex and autodiff over Flex only; [`batch_norm_relu`] and
//! [`batch_norm_clamp`] use it there while training and burn's layers everywhere else.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;

use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::relu;
use rayon::prelude::*;

use super::{f32_values, flex_tensor, is_flex};

/// The extension: the fused forward pass (output, batch mean, biased batch variance) and its
/// gradients (input, gamma, beta).
#[backend_extension(Flex, Autodiff)]
pub trait BatchNormReluBackend: Backend {
    /// # Shapes
    /// - x: `[batch, channels, h, w]`, gamma and beta: `[channels]`
    /// - output: `[batch, channels, h, w]`; mean and variance: `[channels]`
    fn batch_norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        bounds: Bounds,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Gradients with respect to x, gamma and beta, given the forward pass's inputs, its
    /// statistics and the gradient with respect to its output.
    #[allow(clippy::too_many_arguments, reason = "the forward pass's three inputs, two statistics and two settings")]
    fn batch_norm_relu_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        bounds: Bounds,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl BatchNormReluBackend for Flex {
    fn batch_norm_relu(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
        bounds: Bounds,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        if [&x, &gamma, &beta].iter().any(|t| t.dtype() != DType::F32) {
            let result = Self::batch_norm_train(x, gamma, beta, epsilon);
            let output = Self::float_clamp(result.output, bounds.floor.into(), bounds.cap.into());
            return (output, result.mean, result.variance);
        }
        let dims: [usize; 4] = x.layout().shape().dims();
        let (x, gamma, beta) = (x.to_contiguous(), gamma.to_contiguous(), beta.to_contiguous());
        let slice = |t: &FlexTensor| f32_values(t).to_vec();
        let stats = statistics(f32_values(&x), dims);
        let out = normalise_clamp(f32_values(&x), dims, &slice(&gamma), &slice(&beta), &stats, epsilon, bounds);
        let channels = dims[1];
        (flex_tensor(out, dims), flex_tensor(stats.mean, [channels]), flex_tensor(stats.variance, [channels]))
    }

    fn batch_norm_relu_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        bounds: Bounds,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let dims: [usize; 4] = x.layout().shape().dims();
        let channels = dims[1];
        let tensors = [&x, &gamma, &beta, &mean, &variance, &output_grad].map(FlexTensor::to_contiguous);
        let [x, gamma, beta, mean, variance, output_grad] = tensors.each_ref().map(f32_values);
        let stats = Statistics { mean: mean.to_vec(), variance: variance.to_vec() };
        let (dx, dgamma, dbeta) = gradients(x, output_grad, dims, gamma, beta, &stats, epsilon, bounds);
        (flex_tensor(dx, dims), flex_tensor(dgamma, [channels]), flex_tensor(dbeta, [channels]))
    }
}

#[derive(Debug)]
struct BatchNormReluBackward;

impl<B: Backend + BatchNormReluBackend> Backward<B, 3> for BatchNormReluBackward {
    /// The checkpointed input, gamma and beta; the batch statistics as the forward pass
    /// computed them; epsilon and the bounds.
    type State = (NodeId, NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64, Bounds);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, beta_state, mean, variance, epsilon, bounds) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let beta = checkpointer.retrieve_node_output::<FloatTensor<B>>(beta_state);
        let (dx, dgamma, dbeta) = B::batch_norm_relu_backward(x, gamma, beta, mean, variance, epsilon, bounds, grad);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + BatchNormReluBackend, C: CheckpointStrategy> BatchNormReluBackend for Autodiff<B, C> {
    fn batch_norm_relu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        bounds: Bounds,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let forward = |x: FloatTensor<Self>, gamma: FloatTensor<Self>, beta: FloatTensor<Self>| {
            B::batch_norm_relu(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), epsilon, bounds)
        };
        let prepared =
            BatchNormReluBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful();
        let (out, mean, variance) = match prepared {
            OpsKind::Tracked(mut prep) => {
                let states = [prep.checkpoint(&x), prep.checkpoint(&gamma), prep.checkpoint(&beta)];
                let (out, mean, variance) = forward(x, gamma, beta);
                let [x_state, gamma_state, beta_state] = states;
                let state = (x_state, gamma_state, beta_state, mean.clone(), variance.clone(), epsilon, bounds);
                (prep.finish(state, out), mean, variance)
            }
            OpsKind::UnTracked(prep) => {
                let (out, mean, variance) = forward(x, gamma, beta);
                (prep.finish(out), mean, variance)
            }
        };
        (out, Self::from_inner(mean), Self::from_inner(variance))
    }

    fn batch_norm_relu_backward(
        _x: FloatTensor<Self>,
        _gamma: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _mean: FloatTensor<Self>,
        _variance: FloatTensor<Self>,
        _epsilon: f64,
        _bounds: Bounds,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }
}

/// What follows the normalisation: `y = min(max(z, floor), cap)`, with the gradient passed
/// where `floor < z < cap`. An infinite bound is no bound.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub floor: f32,
    pub cap: f32,
}

impl Bounds {
    /// ReLU.
    pub const RELU: Bounds = Bounds { floor: 0.0, cap: f32::INFINITY };
    /// ReLU6, the EfficientNet-Lites' and MobileNets' activation.
    pub const RELU6: Bounds = Bounds { floor: 0.0, cap: 6.0 };
    /// No activation: BatchNorm alone.
    pub const NONE: Bounds = Bounds { floor: f32::NEG_INFINITY, cap: f32::INFINITY };

    /// The bounds on burn's tensors (an infinite bound clamps nothing, as in the kernel).
    fn clamp_tensor(self, z: Tensor<4>) -> Tensor<4> {
        match self {
            Bounds::NONE => z,
            Bounds::RELU => relu(z),
            _ => z.clamp(self.floor, self.cap),
        }
    }

    #[inline(always)]
    fn apply(self, z: f32) -> f32 {
        z.max(self.floor).min(self.cap)
    }

    #[inline(always)]
    fn passes(self, z: f32) -> bool {
        z > self.floor && z < self.cap
    }
}

/// `relu(norm.forward(x))`; see [`batch_norm_clamp`].
///
/// # Shapes
/// - x: `[batch, channels, h, w]`
/// - output: `[batch, channels, h, w]`
pub fn batch_norm_relu(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    batch_norm_clamp(norm, x, Bounds::RELU)
}

/// `norm.forward(x)` clamped to `bounds` (ReLU, ReLU6, or none): while training on the CPU
/// through the fused extension above, with the running statistics updated as burn's
/// `BatchNorm` updates them; for inference on the CPU as one pass on the host (each
/// channel's `x * scale + shift` from the running statistics, clamped), where burn's layers
/// make six passes; on other devices through burn's layers.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`
/// - output: `[batch, channels, h, w]`
pub fn batch_norm_clamp(norm: &BatchNorm, x: Tensor<4>, bounds: Bounds) -> Tensor<4> {
    let device = x.device();
    if is_flex(&device) && !device.is_autodiff() && x.dtype() == DType::F32 {
        return inference(norm, x, bounds);
    }
    if !(is_flex(&device) && device.is_autodiff() && norm.training.is_enabled()) {
        return bounds.clamp_tensor(norm.forward(x));
    }
    let (out, mean, variance) = <Dispatch as BatchNormReluBackend>::batch_norm_relu(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
        bounds,
    );
    let (mean, variance) = (Tensor::<1>::from_dispatch(mean), Tensor::<1>::from_dispatch(variance));
    let momentum = norm.momentum;
    let update = |running: Tensor<1>, batch: Tensor<1>| {
        running.to_device(&device).mul_scalar(1.0 - momentum).add(batch.detach().mul_scalar(momentum)).detach()
    };
    norm.running_mean.update(update(norm.running_mean.value_sync(), mean));
    norm.running_var.update(update(norm.running_var.value_sync(), variance));
    Tensor::from_dispatch(out)
}

/// [`batch_norm_clamp`] without autodiff on the CPU: the running statistics, one pass.
fn inference(norm: &BatchNorm, x: Tensor<4>, bounds: Bounds) -> Tensor<4> {
    let (device, dims) = (x.device(), x.dims());
    let read = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 BatchNorm parameters");
    let stats = Statistics { mean: read(norm.running_mean.value()), variance: read(norm.running_var.value()) };
    let (gamma, beta) = (read(norm.gamma.val()), read(norm.beta.val()));
    let x = x.into_data();
    let values = x.as_slice::<f32>().expect("an f32 tensor");
    let out = normalise_clamp(values, dims, &gamma, &beta, &stats, norm.epsilon, bounds);
    Tensor::from_data(TensorData::new(out, dims), &device)
}

/// Per-channel batch mean and biased variance.
struct Statistics {
    mean: Vec<f32>,
    variance: Vec<f32>,
}

/// One plane is one image's map of one channel: `h * w` contiguous values.
fn planes_of(values: &[f32], [_, channels, h, w]: [usize; 4], channel: usize) -> impl Iterator<Item = &[f32]> {
    values.chunks_exact(h * w).skip(channel).step_by(channels)
}

/// The mean and biased variance of each channel, summed in f64 over one read of the input
/// (`sum x` and `sum x^2`: for activations of order 1 and up to a few million values per
/// channel, f64 keeps the difference exact to f32 precision).
fn statistics(x: &[f32], dims: [usize; 4]) -> Statistics {
    let [batch, channels, h, w] = dims;
    let count = (batch * h * w).max(1) as f64;
    let (mean, variance) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mut sum, mut squares) = (0f64, 0f64);
            for plane in planes_of(x, dims, c) {
                // f32 within a plane (at most 1,024 values), f64 across them.
                let (s, q) = plane.iter().fold((0f32, 0f32), |(s, q), &v| (s + v, q + v * v));
                sum += s as f64;
                squares += q as f64;
            }
            let mean = sum / count;
            (mean as f32, (squares / count - mean * mean).max(0.0) as f32)
        })
        .unzip();
    Statistics { mean, variance }
}

/// Per channel, `scale = gamma / sqrt(var + eps)` and `shift = beta - mean * scale`, so
/// that `z = x * scale + shift`.
fn scale_shift(gamma: &[f32], beta: &[f32], stats: &Statistics, epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    (0..gamma.len())
        .map(|c| {
            let scale = gamma[c] / (stats.variance[c] as f64 + epsilon).sqrt() as f32;
            (scale, beta[c] - stats.mean[c] * scale)
        })
        .unzip()
}

fn normalise_clamp(
    x: &[f32],
    dims: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    stats: &Statistics,
    epsilon: f64,
    bounds: Bounds,
) -> Vec<f32> {
    let [_, channels, h, w] = dims;
    let (scale, shift) = scale_shift(gamma, beta, stats, epsilon);
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(h * w).zip(x.par_chunks(h * w)).enumerate().for_each(|(plane, (out, x))| {
        let (scale, shift) = (scale[plane % channels], shift[plane % channels]);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = bounds.apply(v * scale + shift);
        }
    });
    out
}

/// `(dx, dgamma, dbeta)`; see the module docs for the formulas.
#[allow(clippy::too_many_arguments, reason = "the forward pass's inputs, statistics and settings, as slices")]
fn gradients(
    x: &[f32],
    dy: &[f32],
    dims: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    stats: &Statistics,
    epsilon: f64,
    bounds: Bounds,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [batch, channels, h, w] = dims;
    let count = (batch * h * w).max(1) as f32;
    let (scale, shift) = scale_shift(gamma, beta, stats, epsilon);
    let inv_std: Vec<f32> = stats.variance.iter().map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32).collect();
    // g = dy where z = x * scale + shift lies strictly inside the bounds.
    let (dgamma, dbeta): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .map(|c| {
            let (mut dgamma, mut dbeta) = (0f64, 0f64);
            for (x, dy) in planes_of(x, dims, c).zip(planes_of(dy, dims, c)) {
                let (g_sum, gx_sum) = x.iter().zip(dy).fold((0f32, 0f32), |(g_sum, gx_sum), (&x, &dy)| {
                    let g = if bounds.passes(x * scale[c] + shift[c]) { dy } else { 0.0 };
                    (g_sum + g, gx_sum + g * x)
                });
                dbeta += g_sum as f64;
                // sum g * x̂ = inv_std * (sum g x - mean * sum g)
                dgamma += gx_sum as f64 - stats.mean[c] as f64 * g_sum as f64;
            }
            ((dgamma * inv_std[c] as f64) as f32, dbeta as f32)
        })
        .unzip();
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(h * w).zip(x.par_chunks(h * w).zip(dy.par_chunks(h * w))).enumerate().for_each(
        |(plane, (dx, (x, dy)))| {
            let c = plane % channels;
            let (scale_c, shift_c, inv_std_c) = (scale[c], shift[c], inv_std[c]);
            let (mean_c, dbeta_mean, dgamma_mean) = (stats.mean[c], dbeta[c] / count, dgamma[c] / count);
            for ((d, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                let g = if bounds.passes(x * scale_c + shift_c) { dy } else { 0.0 };
                let x_hat = (x - mean_c) * inv_std_c;
                *d = gamma[c] * inv_std_c * (g - dbeta_mean - x_hat * dgamma_mean);
            }
        },
    );
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::BatchNormConfig;
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    /// Output, gradients and running statistics against burn's `BatchNorm` then `relu`
    /// (then `clamp(0, 6)`, then nothing), on a layer whose gamma and beta are not the
    /// identity (so the bounds cut at different places per channel) and with an output
    /// gradient that is not uniform.
    #[test]
    fn matches_burns_batch_norm_and_relu() {
        for bounds in [Bounds::RELU, Bounds::RELU6, Bounds::NONE] {
            matches_burns_batch_norm_then(bounds);
        }
    }

    fn matches_burns_batch_norm_then(bounds: Bounds) {
        let device = Device::flex().autodiff();
        let [batch, channels, h, w] = [6, 5, 4, 3];
        let gamma = Tensor::<1>::random([channels], Distribution::Uniform(1.0, 4.0), &device);
        let beta = Tensor::<1>::random([channels], Distribution::Normal(0.0, 0.5), &device);
        let x = Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(1.0, 2.0), &device);
        let probe = Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            // A fresh layer per run: clones would share the running statistics.
            let mut norm = BatchNormConfig::new(channels).init(&device);
            norm.gamma = Param::from_tensor(gamma.clone());
            norm.beta = Param::from_tensor(beta.clone());
            let x = x.clone().require_grad();
            let out = if ours {
                batch_norm_clamp(&norm, x.clone(), bounds)
            } else {
                let z = norm.forward(x.clone());
                match bounds {
                    Bounds::RELU => relu(z),
                    Bounds::RELU6 => z.clamp(0.0, 6.0),
                    _ => z,
                }
            };
            let grads = (out.clone() * probe.clone()).sum().backward();
            [
                values(out.inner()),
                values(x.grad(&grads).unwrap()),
                values(norm.gamma.val().grad(&grads).unwrap()),
                values(norm.beta.val().grad(&grads).unwrap()),
                values(norm.running_mean.value()),
                values(norm.running_var.value()),
            ]
        };
        let (ours, theirs) = (run(true), run(false));
        for (name, (a, b)) in ["output", "x grad", "gamma grad", "beta grad", "running mean", "running var"]
            .iter()
            .zip(ours.iter().zip(&theirs))
        {
            assert_eq!(a.len(), b.len(), "{name}");
            assert!(max_abs_diff(a, b) < 1e-4, "{bounds:?}: {name} differs: {a:?} against {b:?}");
        }
        // The bounds did cut somewhere, and the gradient is not trivially zero.
        let out = &ours[0];
        match bounds {
            Bounds::RELU => assert!(out.contains(&0.0) && out.iter().any(|&v| v > 6.0)),
            Bounds::RELU6 => assert!(out.contains(&0.0) && out.contains(&6.0)),
            _ => assert!(out.iter().any(|&v| v < 0.0)),
        }
        assert!(ours[1].iter().any(|&v| v.abs() > 1e-3));
    }

    /// The one-pass inference path against burn's layer without autodiff, then the bounds,
    /// with running statistics, gamma and beta all away from the identity.
    #[test]
    fn inference_matches_burns_layer() {
        let device = Device::flex();
        let channels = 5;
        let mut norm = BatchNormConfig::new(channels).init(&device);
        let random = |low: f64, high: f64| Tensor::<1>::random([channels], Distribution::Uniform(low, high), &device);
        norm.gamma = Param::from_tensor(random(-2.0, 3.0));
        norm.beta = Param::from_tensor(random(-1.0, 1.0));
        norm.running_mean = burn::module::RunningState::new(random(-1.0, 1.0));
        norm.running_var = burn::module::RunningState::new(random(0.2, 3.0));
        let x = Tensor::<4>::random([3, channels, 4, 6], Distribution::Normal(0.5, 2.0), &device);
        for bounds in [Bounds::RELU, Bounds::RELU6, Bounds::NONE] {
            let ours = values(batch_norm_clamp(&norm, x.clone(), bounds));
            let theirs = values(bounds.clamp_tensor(norm.forward(x.clone())));
            assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{bounds:?}");
            assert!(ours.iter().any(|&v| v != 0.0 && v != 6.0), "{bounds:?}: nothing passed");
        }
    }

    /// Without autodiff (inference) the layer uses the running statistics, as burn's does.
    #[test]
    fn inference_uses_the_running_statistics() {
        let device = Device::flex();
        let norm = BatchNormConfig::new(2).init(&device);
        let x = Tensor::<4>::from_floats([[[[3.0, -1.0]], [[0.5, 2.0]]]], &device);
        // Fresh running statistics are mean 0, variance 1: the layer is ReLU up to epsilon.
        let out = values(batch_norm_relu(&norm, x));
        let expected = [3.0, 0.0, 0.5, 2.0].map(|v: f32| v / (1.0f32 + 1e-5).sqrt());
        assert!(max_abs_diff(&out, &expected) < 1e-6, "{out:?}");
    }
}
