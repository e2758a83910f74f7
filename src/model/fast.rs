//! The `fast` model: a small VGG-style network with BatchNorm in the spirit of airbench
//! (Keller Jordan's `airbench94`) and Page's ResNet-9, sized for a 2-core CPU.
//!
//! ```text
//! whiten   2x2 conv, 3 -> 24, fixed to whiten the data's 2x2 patches   [24, 31, 31]
//! block 1  conv 3x3 -> 64,  max-pool 2, BN, ReLU, conv 3x3, BN, ReLU   [64, 15, 15]
//! block 2  conv 3x3 -> 128, max-pool 2, BN, ReLU, conv 3x3, BN, ReLU   [128, 7, 7]
//! block 3  conv 3x3 -> 256, max-pool 2, BN, ReLU, conv 3x3, BN, ReLU   [256, 3, 3]
//! head     global max-pool, dense 256 -> classes (no bias), x 1/9
//! ```
//!
//! Choices and their reasons:
//! - The first layer's filters are the data's whitening transform (eigenvectors of the 2x2
//!   patch covariance, scaled by 1/sqrt(eigenvalue), each with its negative so ReLU keeps
//!   both signs), computed from the training images by [`Fast::whiten`] before training and
//!   never trained: the network starts on decorrelated inputs, which airbench found worth
//!   several epochs. Its bias, which centres each output on the data's mean patch, is fixed
//!   too (airbench trains it for the first 3 epochs only): with the whole layer constant,
//!   block 1's first convolution needs no input gradient and on the CPU runs as an im2col
//!   product ([`crate::kernels::conv_of_constant`]); together a fifth of a CPU training step.
//! - airbench's widths are 64/256/256; 64/128/256 halves the cost of the two largest layers
//!   for about a point of accuracy, what a 2-core CPU can afford in an hour.
//! - ReLU instead of airbench's GELU: GELU's `erf` cost 7% of a CPU step, for little gain.
//! - As in airbench, each 3x3 convolution's first `min(in, out)` filters start as the
//!   identity, and BatchNorm's running statistics take 0.4 of each batch's (burn's default
//!   is 0.1). How the BatchNorm scales and shifts train is the recipe's business
//!   (`src/settings/mod.rs`).
//! - As in airbench, the whitening convolution is unpadded, so the maps are 31, 15, 7 and 3
//!   pixels wide. Runs saved before model revision 2 padded it by one pixel at the bottom
//!   and right (maps of 32, 16, 8 and 4) and load with that layout ([`Fast::padded_whitening`]);
//!   the unpadded layout measured 20-30% faster per training step here, since the six
//!   convolutions see 19% fewer pixels.
//! - Logits are scaled by 1/9, airbench's constant: with BatchNorm the features are O(1) and
//!   the scale keeps the initial softmax soft.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use std::fmt::Display;

use super::ops::{Compute, Ops, Pool};
use super::summary::{LayerRow, Summary};
use crate::geometry::{CHANNELS, IMAGE_BYTES, IMAGE_SIZE, PLANE_BYTES};
use crate::kernels::Bounds;

/// Side of the whitening patches.
const PATCH: usize = 2;
/// Values in one patch: 3 channels x 2 x 2.
const PATCH_DIM: usize = CHANNELS * PATCH * PATCH;
/// Channels out of the whitening layer: every direction with both signs.
const WHITE_CHANNELS: usize = 2 * PATCH_DIM;
/// Output channels of the three blocks.
const WIDTHS: [usize; 3] = [64, 128, 256];
/// Added to each eigenvalue before the inverse square root, so near-constant directions
/// (JPEG flattens some) are not blown up into noise. airbench uses 5e-4 on standardised
/// pixels; ours are in [0, 1], about 1/16 of that variance.
const WHITEN_EPS: f64 = 3e-5;
/// Logit scale (airbench's).
pub const LOGIT_SCALE: f64 = 1.0 / 9.0;
/// Training images sampled for the whitening statistics.
const WHITEN_SAMPLE: usize = 5000;

/// Hyper-parameters of [`Fast`].
#[derive(Config, Debug)]
pub struct FastConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// Pad the whitening layer's input so its maps stay 32x32 (model revision 1; see the
    /// module docs).
    #[config(default = false)]
    pub padded_whitening: bool,
}

/// One convolution block: conv, pool, BN, ReLU, conv, BN, ReLU.
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub pool: MaxPool2d,
    pub norm1: BatchNorm,
    pub conv2: Conv2d,
    pub norm2: BatchNorm,
}

/// The `fast` network.
#[derive(Module, Debug)]
pub struct Fast {
    /// 2x2 whitening convolution: 32x32 images in, 31x31 maps out. Fixed, weight and bias
    /// (see the module docs).
    pub whiten: Conv2d,
    /// Whether the whitening layer's input is padded by one pixel at the bottom and right so
    /// the maps stay 32x32: the layout of model revision 1. Not saved with the weights; the
    /// run's configuration says which layout its weights were trained with.
    pub padded_whitening: bool,
    pub blocks: Vec<Block>,
    /// Dense 256 -> classes, no bias.
    pub head: Linear,
}

/// A 3x3 convolution, no bias, whose first `min(in, out)` filters start as the identity
/// (airbench's partial Dirac initialisation; the rest keep burn's Kaiming-uniform draw): a
/// fresh network starts by passing its input through, and training fits what to add.
fn conv3x3(channels_in: usize, channels_out: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(false)
        .init(device);
    let shape = conv.weight.dims();
    let mut weight = conv.weight.val().into_data().try_into_vec_as::<f32>().unwrap_or_default();
    let filter = channels_in * 9;
    for i in 0..channels_in.min(channels_out) {
        let taps = &mut weight[i * filter..(i + 1) * filter];
        taps.fill(0.0);
        taps[i * 9 + 4] = 1.0; // channel i, centre tap
    }
    conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), device));
    conv
}

/// A BatchNorm layer with airbench's running-statistics momentum: 0.4 of each batch's
/// statistics (burn's default is 0.1), so the statistics used for evaluation follow the
/// weights closely through a short, high-rate run.
fn batch_norm(width: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(width).with_momentum(0.4).init(device)
}

impl FastConfig {
    /// Builds the network; the whitening layer starts as the identity-like default until
    /// [`Fast::whiten`] sets it from data.
    pub fn init(&self, device: &Device) -> Fast {
        let mut channels = WHITE_CHANNELS;
        let blocks = WIDTHS
            .iter()
            .map(|&width| {
                let block = Block {
                    conv1: conv3x3(channels, width, device),
                    pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
                    norm1: batch_norm(width, device),
                    conv2: conv3x3(width, width, device),
                    norm2: batch_norm(width, device),
                };
                channels = width;
                block
            })
            .collect();
        let pad = usize::from(self.padded_whitening);
        Fast {
            whiten: Conv2dConfig::new([CHANNELS, WHITE_CHANNELS], [PATCH, PATCH])
                .with_padding(PaddingConfig2d::Explicit(0, 0, pad, pad))
                .init(device),
            padded_whitening: self.padded_whitening,
            blocks,
            head: LinearConfig::new(channels, self.num_classes).with_bias(false).init(device),
        }
    }
}

impl Block {
    /// The block as [`Ops`], its weights under `path`.
    ///
    /// # Shapes
    /// - x: `[batch, in, h, w]`
    /// - output: `[batch, out, h / 2, w / 2]`
    ///
    /// `constant_input` says `x` carries no gradient (block 1, fed by the fixed whitening),
    /// so its first convolution needs no input gradient.
    fn forward_with<O: Ops>(&self, o: &mut O, path: impl Display, x: O::Maps, constant_input: bool) -> O::Maps {
        let x = if constant_input {
            o.conv_of_constant(format_args!("{path}.conv1"), &self.conv1, x)
        } else {
            o.conv(format_args!("{path}.conv1"), &self.conv1, x)
        }; // [batch, out, h, w]
        let x = o.max_pool(&self.pool, x); // [batch, out, h / 2, w / 2]
        let x = o.batch_norm(format_args!("{path}.norm1"), &self.norm1, Bounds::RELU, x);
        let x = o.conv(format_args!("{path}.conv2"), &self.conv2, x);
        o.batch_norm(format_args!("{path}.norm2"), &self.norm2, Bounds::RELU, x) // [batch, out, h / 2, w / 2]
    }
}

impl Fast {
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&mut Compute, images)
    }

    /// [`Fast::forward`] as [`Ops`]: the network's one description.
    pub fn forward_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.pooled_with(o, images);
        let x = o.dense("head", &self.head, None, x);
        o.scale("logit_scale", LOGIT_SCALE as f32, x) // [batch, num_classes]
    }

    /// Block 3's output max-pooled over its maps, what the head reads.
    ///
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, 256]`
    pub fn pooled(&self, images: Tensor<4>) -> Tensor<2> {
        self.pooled_with(&mut Compute, images)
    }

    fn pooled_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.features_with(o, images);
        o.global_pool(Pool::Max, x) // [batch, 256]
    }

    /// Block 3's output, before the global pool.
    ///
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, 256, 3, 3]` (`[batch, 256, 4, 4]` with [`Fast::padded_whitening`])
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        self.features_with(&mut Compute, images)
    }

    fn features_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Maps {
        // Fixed: the layer stays the whitening transform whatever the optimiser or a loaded
        // record (older runs trained the bias) says about its gradient.
        let pad = usize::from(self.padded_whitening);
        let x = o.fixed_conv("whiten", &self.whiten, [0, 0, pad, pad], images);
        let mut x = o.relu(x); // [batch, 24, 31, 31]
        for (i, block) in self.blocks.iter().enumerate() {
            // [batch, 64, 15, 15] -> [batch, 128, 7, 7] -> [batch, 256, 3, 3]
            x = block.forward_with(o, format_args!("blocks.{i}"), x, i == 0);
        }
        x
    }

    /// Side of the whitening layer's output maps: 31, or 32 in the padded layout.
    pub fn whitened_side(&self) -> usize {
        IMAGE_SIZE - PATCH + 1 + usize::from(self.padded_whitening)
    }

    /// Sets the whitening layer from the 2x2 patch statistics of `images` (CHW `u8`, any
    /// number; an even sample of at most 5,000 is used). The bias centres each output on
    /// the data's mean patch.
    pub fn whiten(&mut self, images: &[u8]) {
        let n = images.len() / IMAGE_BYTES;
        if n == 0 {
            return;
        }
        let stride = n.div_ceil(WHITEN_SAMPLE);
        let (mean, cov) = patch_moments(images.chunks_exact(IMAGE_BYTES).step_by(stride));
        let (values, vectors) = symmetric_eigen(cov);
        let mut weight = vec![0f32; WHITE_CHANNELS * PATCH_DIM];
        let mut bias = vec![0f32; WHITE_CHANNELS];
        for k in 0..PATCH_DIM {
            let scale = 1.0 / (values[k].max(0.0) + WHITEN_EPS).sqrt();
            let filter: Vec<f64> = (0..PATCH_DIM).map(|i| vectors[i][k] * scale).collect();
            let centre: f64 = filter.iter().zip(&mean).map(|(f, m)| f * m).sum();
            for (sign, channel) in [(1.0, k), (-1.0, k + PATCH_DIM)] {
                for (i, f) in filter.iter().enumerate() {
                    weight[channel * PATCH_DIM + i] = (sign * f) as f32;
                }
                bias[channel] = (-sign * centre) as f32;
            }
        }
        let device = self.whiten.weight.device();
        let weight = Tensor::<4>::from_data(TensorData::new(weight, [WHITE_CHANNELS, CHANNELS, PATCH, PATCH]), &device);
        let bias = Tensor::<1>::from_data(TensorData::new(bias, [WHITE_CHANNELS]), &device);
        self.whiten.weight = Param::from_tensor(weight).set_require_grad(false);
        self.whiten.bias = Some(Param::from_tensor(bias).set_require_grad(false));
    }

    /// The layer table, counted as Keras counts: a BatchNorm layer's running mean and
    /// variance are parameters, non-trainable ones, as are the fixed whitening filters.
    pub(super) fn summary(&self) -> Summary {
        let classes = self.head.weight.dims()[1];
        let mut rows = vec![LayerRow::new(
            "whiten (Conv2D 2x2, fixed)",
            [WHITE_CHANNELS, self.whitened_side(), self.whitened_side()],
            self.whiten.num_params(),
        )];
        let mut non_trainable = self.whiten.num_params();
        let mut side = self.whitened_side();
        for (i, block) in self.blocks.iter().enumerate() {
            let width = block.conv1.weight.dims()[0];
            side /= 2;
            let params = block.conv1.num_params()
                + block.norm1.num_params()
                + block.conv2.num_params()
                + block.norm2.num_params();
            // Running mean and variance of each of the two BatchNorm layers.
            non_trainable += 2 * 2 * width;
            rows.push(LayerRow::new(
                &format!("block{} (Conv3x3, MaxPool, BN, ReLU, Conv3x3, BN, ReLU)", i + 1),
                [width, side, side],
                params,
            ));
        }
        let features = self.head.weight.dims()[0];
        rows.push(LayerRow::new("pool (global MaxPool)", [features], 0));
        rows.push(LayerRow::new("head (Dense, no bias, x 1/9)", [classes], self.head.num_params()));
        Summary::new("fast", rows).with_non_trainable(non_trainable)
    }
}

/// Mean and covariance of the 2x2 patches (pixels scaled to [0, 1]) of `images`, in the
/// (channel, row, column) order of a convolution's weight.
fn patch_moments<'a>(images: impl Iterator<Item = &'a [u8]>) -> ([f64; PATCH_DIM], [[f64; PATCH_DIM]; PATCH_DIM]) {
    let mut sum = [0f64; PATCH_DIM];
    let mut outer = [[0f64; PATCH_DIM]; PATCH_DIM];
    let mut count = 0f64;
    let mut patch = [0f64; PATCH_DIM];
    for image in images {
        for y in 0..IMAGE_SIZE - 1 {
            for x in 0..IMAGE_SIZE - 1 {
                for c in 0..CHANNELS {
                    for dy in 0..PATCH {
                        for dx in 0..PATCH {
                            let v = image[c * PLANE_BYTES + (y + dy) * IMAGE_SIZE + x + dx];
                            patch[(c * PATCH + dy) * PATCH + dx] = f64::from(v) / 255.0;
                        }
                    }
                }
                for i in 0..PATCH_DIM {
                    sum[i] += patch[i];
                    for j in i..PATCH_DIM {
                        outer[i][j] += patch[i] * patch[j];
                    }
                }
                count += 1.0;
            }
        }
    }
    let mean = sum.map(|s| s / count);
    let mut cov = [[0f64; PATCH_DIM]; PATCH_DIM];
    for i in 0..PATCH_DIM {
        for j in i..PATCH_DIM {
            let c = outer[i][j] / count - mean[i] * mean[j];
            cov[i][j] = c;
            cov[j][i] = c;
        }
    }
    (mean, cov)
}

/// Eigenvalues and eigenvectors (as the columns of the second result) of a symmetric
/// matrix, by cyclic Jacobi rotations: exact to rounding for the 12x12 case here.
#[allow(clippy::needless_range_loop, reason = "a rotation reads and writes rows p and q of the same matrix")]
fn symmetric_eigen<const N: usize>(mut a: [[f64; N]; N]) -> ([f64; N], [[f64; N]; N]) {
    let mut v = [[0f64; N]; N];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..N)
            .flat_map(|i| (0..N).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..N {
            for q in p + 1..N {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..N {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..N {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    (std::array::from_fn(|i| a[i][i]), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_the_eigen_decomposition() {
        let a = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 1.0]];
        let (values, v) = symmetric_eigen(a);
        for i in 0..3 {
            for j in 0..3 {
                // A = V diag(values) V^T, and V is orthonormal.
                let rebuilt: f64 = (0..3).map(|k| v[i][k] * values[k] * v[j][k]).sum();
                assert!((rebuilt - a[i][j]).abs() < 1e-10, "({i},{j})");
                let dot: f64 = (0..3).map(|k| v[k][i] * v[k][j]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
        // Trace is preserved.
        assert!((values.iter().sum::<f64>() - 8.0).abs() < 1e-10);
    }

    #[test]
    fn the_first_filters_start_as_the_identity() {
        let device = Device::flex();
        let (channels_in, channels_out) = (4, 6);
        let conv = conv3x3(channels_in, channels_out, &device);
        let x = Tensor::<4>::random([2, channels_in, 5, 5], burn::tensor::Distribution::Default, &device);
        let y = conv.forward(x.clone());
        let passed = y.clone().slice([0..2, 0..channels_in]);
        let diff = (passed - x).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "the first {channels_in} filters must copy their channel: {diff}");
        // The remaining filters keep their random draw.
        let rest = y.slice([0..2, channels_in..channels_out]).abs().max().into_scalar::<f32>();
        assert!(rest > 1e-3, "the other filters must not be zero");
    }

    /// Images with strongly correlated neighbouring pixels and channels, as photos have.
    fn smooth_images(n: usize) -> Vec<u8> {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut out = Vec::with_capacity(n * IMAGE_BYTES);
        for _ in 0..n {
            let (base, slope) = (next() * 200.0, next() * 3.0);
            let tint = [next() * 40.0, next() * 40.0, next() * 40.0];
            for t in tint {
                for y in 0..IMAGE_SIZE {
                    for x in 0..IMAGE_SIZE {
                        let v = base + t + slope * (x + y) as f64 + next() * 8.0;
                        out.push(v.clamp(0.0, 255.0) as u8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_whitening_layer_decorrelates_patches() {
        let images = smooth_images(40);
        let (_, cov) = patch_moments(images.chunks_exact(IMAGE_BYTES));
        assert!(cov[0][1] > 0.5 * cov[0][0], "test data must be correlated");
        let device = Device::flex();
        let mut net = FastConfig::new(10).init(&device);
        net.whiten(&images);
        let w = net.whiten.weight.val().into_data().try_into_vec::<f32>().unwrap();
        let b = net.whiten.bias.as_ref().unwrap().val().into_data().try_into_vec::<f32>().unwrap();
        let (mean, _) = patch_moments(images.chunks_exact(IMAGE_BYTES));
        // The first 12 outputs: W C W^T is near the identity (the eps keeps it below 1),
        // and each output is centred on the mean patch.
        for i in 0..PATCH_DIM {
            for j in 0..PATCH_DIM {
                let wcw: f64 = (0..PATCH_DIM)
                    .flat_map(|p| (0..PATCH_DIM).map(move |q| (p, q)))
                    .map(|(p, q)| f64::from(w[i * PATCH_DIM + p]) * cov[p][q] * f64::from(w[j * PATCH_DIM + q]))
                    .sum();
                if i == j {
                    assert!(wcw > 0.3 && wcw < 1.0 + 1e-6, "variance of output {i}: {wcw}");
                } else {
                    assert!(wcw.abs() < 1e-4, "covariance of outputs {i},{j}: {wcw}");
                }
            }
            let centred: f64 =
                (0..PATCH_DIM).map(|p| f64::from(w[i * PATCH_DIM + p]) * mean[p]).sum::<f64>() + f64::from(b[i]);
            assert!(centred.abs() < 1e-3, "output {i} not centred: {centred}");
            // The second 12 are the negatives.
            for p in 0..PATCH_DIM {
                assert_eq!(w[(i + PATCH_DIM) * PATCH_DIM + p], -w[i * PATCH_DIM + p]);
            }
        }
    }

    #[test]
    fn shapes_and_summary() {
        let device = Device::flex();
        let net = FastConfig::new(10).init(&device);
        let out = net.forward(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(out.dims(), [2, 10]);
        let summary = net.summary();
        assert_eq!(summary.total_params(), net.num_params());
        // The fixed whitening layer, and mean and variance for 2 x (64 + 128 + 256) channels.
        assert_eq!(summary.non_trainable, WHITE_CHANNELS * (PATCH_DIM + 1) + 2 * 2 * (64 + 128 + 256));
        assert_eq!(summary.rows.last().unwrap().output_shape, vec![10]);
    }

    #[test]
    fn the_whitening_layer_is_unpadded_and_revision_1_runs_keep_their_padding() {
        let device = Device::flex();
        let images = Tensor::<4>::from_data(
            TensorData::new(smooth_images(2).iter().map(|&v| f32::from(v) / 255.0).collect(), [2, 3, 32, 32]),
            &device,
        );
        let side = |net: &Fast| {
            let dims = net.features(images.clone()).dims();
            let summary = net.summary();
            let shapes: Vec<usize> = summary.rows[..4].iter().map(|row| row.output_shape[1]).collect();
            (dims[1..].to_vec(), shapes)
        };
        let unpadded = FastConfig::new(10).init(&device);
        assert_eq!(side(&unpadded), (vec![256, 3, 3], vec![31, 15, 7, 3]));
        let mut padded = crate::model::Network::init_revision(crate::model::ModelKind::Fast, 1, 10, &device);
        let crate::model::Network::Fast(padded_net) = &mut padded else { unreachable!() };
        assert_eq!(side(padded_net), (vec![256, 4, 4], vec![32, 16, 8, 4]));
        // The layouts are the same weights seen differently: loading one's record into the
        // other keeps each its own layout, and their logits differ.
        let record = unpadded.clone().into_record();
        let reloaded = padded_net.clone().load_record(record);
        assert!(reloaded.padded_whitening);
        let difference = (reloaded.forward(images.clone()) - unpadded.forward(images)).abs().max().into_scalar::<f32>();
        assert!(difference > 1e-4, "padding changed nothing: {difference}");
    }

    #[test]
    fn the_whitening_layer_gets_no_gradient_and_block_one_does() {
        let device = Device::flex().autodiff();
        let mut net = FastConfig::new(4).init(&device);
        net.whiten(&smooth_images(4));
        let images = Tensor::<4>::ones([2, 3, 32, 32], &device).mul_scalar(0.5);
        let grads = net.forward(images).sum().backward();
        assert!(net.whiten.weight.grad(&grads).is_none());
        assert!(net.whiten.bias.as_ref().unwrap().grad(&grads).is_none());
        assert!(net.blocks[0].conv1.weight.grad(&grads).is_some());
        assert!(net.head.weight.grad(&grads).is_some());
    }
}
