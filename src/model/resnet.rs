//! ResNet-18, -34 and -50 for photos, laid out exactly as torchvision's
//! `torchvision.models.resnet*`: the same module names (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0`, `fc`, ...), shapes and order, so a torchvision state dict maps
//! onto it name for name (`downsample.0`/`.1` are called `downsample.conv`/`.bn` here; see
//! [`TORCHVISION_KEY_MAP`]).
//!
//! ```text
//! conv1 7x7/2 -> bn1 -> ReLU -> max pool 3x3/2
//!   -> layer1 (width w)  -> layer2 (2w, /2) -> layer3 (4w, /2) -> layer4 (8w, /2)
//!   -> global average pool -> fc
//! ```
//!
//! ResNet-18 and -34 stack basic blocks (two 3x3 convolutions), ResNet-50 bottlenecks (1x1,
//! 3x3, 1x1 with four times the width out; the stride on the 3x3, torchvision's "v1.5").
//! The global pool makes any input size work; 128 px is the photo default, 224 ImageNet's.
//! The input is normalised per channel inside the network ([`ResNet::set_normalization`]),
//! with the training images' mean and deviation or a pretrained backbone's, so whatever
//! feeds the network (training, serving, ONNX) gives it `[0, 1]` images.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use std::fmt::Display;

use super::ops::{Compute, Ops, Pool};
use super::pretrained::{self, Head, LoadError};
use super::summary::{LayerRow, Summary};
use crate::kernels::Bounds;

/// How torchvision's state-dict keys become this module's paths: torchvision's shortcut is an
/// `nn.Sequential` whose members are numbered; here they have names.
pub const TORCHVISION_KEY_MAP: [(&str, &str); 2] =
    [(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.bn.")];

/// torchvision's ImageNet channel means and deviations (of `[0, 1]` RGB), the normalisation
/// its pretrained weights expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Depth {
    /// Basic blocks `[2, 2, 2, 2]`, 11.7M weights at width 64 with 1,000 classes.
    R18,
    /// Basic blocks `[3, 4, 6, 3]`, 21.8M weights.
    R34,
    /// Bottlenecks `[3, 4, 6, 3]`, 25.6M weights.
    R50,
}

impl Depth {
    /// Blocks in each of the four stages.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Depth::R18 => [2, 2, 2, 2],
            Depth::R34 | Depth::R50 => [3, 4, 6, 3],
        }
    }

    /// Whether the stages stack bottlenecks (ResNet-50) rather than basic blocks.
    pub fn bottleneck(self) -> bool {
        self == Depth::R50
    }

    /// Output channels of a block relative to its width: 4 for bottlenecks, else 1.
    pub fn expansion(self) -> usize {
        if self.bottleneck() { 4 } else { 1 }
    }

    /// `resnet18`, `resnet34`, `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Depth::R18 => "resnet18",
            Depth::R34 => "resnet34",
            Depth::R50 => "resnet50",
        }
    }
}

/// Hyper-parameters of [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    pub depth: Depth,
    /// Number of output classes.
    pub num_classes: usize,
    /// Channels of the stem and of the first stage (torchvision: 64); the stages are 1x, 2x,
    /// 4x and 8x this. Smaller widths make the small networks the tests compare.
    #[config(default = 64)]
    pub width: usize,
}

/// The shortcut of a block that changes width or resolution: a strided 1x1 convolution and
/// a BatchNorm (torchvision's `downsample.0` and `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

/// A basic block (`conv3`/`bn3` absent) or a bottleneck, with torchvision's field names.
#[derive(Module, Debug)]
pub struct Block {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Option<Conv2d>,
    pub bn3: Option<BatchNorm>,
    pub downsample: Option<Downsample>,
    /// The block's stride (on `conv1` of a basic block, `conv2` of a bottleneck).
    #[module(skip)]
    pub stride: usize,
}

/// A ResNet with torchvision's layout; see the module docs.
#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub maxpool: MaxPool2d,
    pub layer1: Vec<Block>,
    pub layer2: Vec<Block>,
    pub layer3: Vec<Block>,
    pub layer4: Vec<Block>,
    pub fc: Linear,
    /// Per-channel mean subtracted from the `[0, 1]` input: fixed, never trained.
    pub input_mean: Param<Tensor<1>>,
    /// Per-channel deviation the input is divided by: fixed, never trained.
    pub input_std: Param<Tensor<1>>,
    #[module(skip)]
    pub depth: Depth,
}

/// A convolution without bias, initialised as torchvision does (Kaiming normal, fan-out,
/// ReLU gain).
fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true })
        .init(device)
}

/// BatchNorm with PyTorch's constants (epsilon 1e-5, momentum 0.1), scale 1 and shift 0.
fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).with_epsilon(1e-5).with_momentum(0.1).init(device)
}

impl ResNetConfig {
    /// Builds the network, initialised as torchvision initialises it, with the identity as
    /// input normalisation (mean 0, deviation 1) until [`ResNet::set_normalization`].
    pub fn init(&self, device: &Device) -> ResNet {
        let w = self.width;
        let expansion = self.depth.expansion();
        let mut channels = w;
        let mut stage = |width: usize, blocks: usize, stride: usize| -> Vec<Block> {
            (0..blocks)
                .map(|i| {
                    let stride = if i == 0 { stride } else { 1 };
                    let out = width * expansion;
                    let downsample = (stride != 1 || channels != out)
                        .then(|| Downsample { conv: conv([channels, out], 1, stride, device), bn: bn(out, device) });
                    let block = if self.depth.bottleneck() {
                        Block {
                            conv1: conv([channels, width], 1, 1, device),
                            bn1: bn(width, device),
                            conv2: conv([width, width], 3, stride, device),
                            bn2: bn(width, device),
                            conv3: Some(conv([width, out], 1, 1, device)),
                            bn3: Some(bn(out, device)),
                            downsample,
                            stride,
                        }
                    } else {
                        Block {
                            conv1: conv([channels, width], 3, stride, device),
                            bn1: bn(width, device),
                            conv2: conv([width, width], 3, 1, device),
                            bn2: bn(width, device),
                            conv3: None,
                            bn3: None,
                            downsample,
                            stride,
                        }
                    };
                    channels = out;
                    block
                })
                .collect()
        };
        let [b1, b2, b3, b4] = self.depth.blocks();
        let (layer1, layer2, layer3, layer4) =
            (stage(w, b1, 1), stage(2 * w, b2, 2), stage(4 * w, b3, 2), stage(8 * w, b4, 2));
        // torchvision leaves nn.Linear's own initialisation: uniform in +-1/sqrt(fan_in).
        let bound = 1.0 / (channels as f64).sqrt();
        let fc = LinearConfig::new(channels, self.num_classes)
            .with_initializer(Initializer::Uniform { min: -bound, max: bound })
            .init(device);
        ResNet {
            conv1: conv([3, w], 7, 2, device),
            bn1: bn(w, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc,
            input_mean: Param::from_tensor(Tensor::zeros([3], device)).set_require_grad(false),
            input_std: Param::from_tensor(Tensor::ones([3], device)).set_require_grad(false),
            depth: self.depth,
        }
    }
}

impl Block {
    /// The block as [`Ops`], its weights under `path` (`layer2.0`).
    ///
    /// # Shapes
    /// - x: `[batch, in, h, w]`
    /// - output: `[batch, out, h / stride, w / stride]`
    fn forward_with<O: Ops>(&self, o: &mut O, path: impl Display, x: O::Maps) -> O::Maps {
        let shortcut = match &self.downsample {
            Some(d) => {
                let s = o.conv(format_args!("{path}.downsample.conv"), &d.conv, x.clone());
                o.batch_norm(format_args!("{path}.downsample.bn"), &d.bn, Bounds::NONE, s)
            }
            None => x.clone(),
        };
        let y = o.conv(format_args!("{path}.conv1"), &self.conv1, x);
        let y = o.batch_norm(format_args!("{path}.bn1"), &self.bn1, Bounds::RELU, y);
        let y = o.conv(format_args!("{path}.conv2"), &self.conv2, y);
        let y = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let y = o.batch_norm(format_args!("{path}.bn2"), &self.bn2, Bounds::RELU, y);
                let y = o.conv(format_args!("{path}.conv3"), conv3, y);
                o.batch_norm(format_args!("{path}.bn3"), bn3, Bounds::NONE, y)
            }
            _ => o.batch_norm(format_args!("{path}.bn2"), &self.bn2, Bounds::NONE, y),
        };
        let sum = o.add(y, shortcut);
        o.relu(sum)
    }
}

impl ResNet {
    /// Loads a torchvision state dict (`torch.save(model.state_dict(), path)`, zip or
    /// legacy format, or a safetensors file of it) into the network, name for name
    /// ([`TORCHVISION_KEY_MAP`]); with [`Head::Replace`] the file's `fc` is left out and the
    /// network's own stays. The input normalisation, which torchvision keeps outside the
    /// network, is left as it is.
    ///
    /// # Errors
    /// If the file cannot be read, or lacks a tensor the network has, or a shape differs
    /// (see [`pretrained::load`]).
    pub fn load_torchvision(&mut self, path: &std::path::Path, head: Head) -> Result<(), LoadError> {
        let name = self.depth.name();
        pretrained::load(self, path, name, &TORCHVISION_KEY_MAP, ("fc", head)).map(|_| ())
    }

    /// Sets the per-channel normalisation of the `[0, 1]` input.
    pub fn set_normalization(&mut self, mean: [f32; 3], std: [f32; 3]) {
        let device = self.fc.weight.device();
        self.input_mean =
            Param::from_tensor(Tensor::from_data(TensorData::new(mean.to_vec(), [3]), &device)).set_require_grad(false);
        self.input_std =
            Param::from_tensor(Tensor::from_data(TensorData::new(std.to_vec(), [3]), &device)).set_require_grad(false);
    }

    /// The per-channel mean and deviation the input is normalised with.
    pub fn normalization(&self) -> ([f32; 3], [f32; 3]) {
        let read = |p: &Param<Tensor<1>>| {
            let v = p.val().into_data().try_to_vec::<f32>().unwrap_or_default();
            std::array::from_fn(|i| v.get(i).copied().unwrap_or(0.0))
        };
        (read(&self.input_mean), read(&self.input_std))
    }

    /// Sets the normalisation from the training images (CHW `u8`, `image_bytes` each): each
    /// channel's mean and deviation over every pixel of every image, in `[0, 1]` units.
    pub fn normalize_from(&mut self, images: &[u8], image_bytes: usize) {
        let plane = image_bytes / 3;
        let mut sums = [0f64; 3];
        let mut squares = [0f64; 3];
        for image in images.chunks_exact(image_bytes) {
            for (c, values) in image.chunks_exact(plane).enumerate() {
                let (s, q) =
                    values.iter().fold((0u64, 0u64), |(s, q), &v| (s + u64::from(v), q + u64::from(v) * u64::from(v)));
                sums[c] += s as f64;
                squares[c] += q as f64;
            }
        }
        let n = (images.len() / 3).max(1) as f64;
        let mean: [f64; 3] = std::array::from_fn(|c| sums[c] / n / 255.0);
        let std: [f32; 3] = std::array::from_fn(|c| {
            let variance = squares[c] / n / (255.0 * 255.0) - mean[c] * mean[c];
            (variance.max(0.0).sqrt() as f32).max(1e-3)
        });
        self.set_normalization(mean.map(|m| m as f32), std);
    }

    /// # Shapes
    /// - images: `[batch, 3, h, w]`, values in `[0, 1]`, any size from 32 px
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&mut Compute, images)
    }

    /// [`ResNet::forward`] as [`Ops`]: the network's one description.
    pub fn forward_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.pooled_with(o, images);
        self.classify_with(o, x)
    }

    /// The head alone: `fc` on [`ResNet::pooled`]'s features.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classify_with(&mut Compute, pooled)
    }

    fn classify_with<O: Ops>(&self, o: &mut O, pooled: O::Rows) -> O::Rows {
        o.dense("fc", &self.fc, None, pooled)
    }

    /// layer4's output averaged over the image: what `fc` reads.
    ///
    /// # Shapes
    /// - images: `[batch, 3, h, w]`
    /// - output: `[batch, 8 * width * expansion]`
    pub fn pooled(&self, images: Tensor<4>) -> Tensor<2> {
        self.pooled_with(&mut Compute, images)
    }

    fn pooled_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.features_with(o, images);
        o.global_pool(Pool::Average, x)
    }

    /// layer4's output, before the global pool.
    ///
    /// # Shapes
    /// - images: `[batch, 3, h, w]`
    /// - output: `[batch, 8 * width * expansion, h / 32, w / 32]` (rounded up)
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        self.features_with(&mut Compute, images)
    }

    fn features_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Maps {
        let x = o.normalize(&self.input_mean, &self.input_std, images);
        let x = o.conv("conv1", &self.conv1, x);
        let x = o.batch_norm("bn1", &self.bn1, Bounds::RELU, x);
        let mut x = o.max_pool(&self.maxpool, x);
        for (stage, layer) in [&self.layer1, &self.layer2, &self.layer3, &self.layer4].into_iter().enumerate() {
            for (i, block) in layer.iter().enumerate() {
                x = block.forward_with(o, format_args!("layer{}.{i}", stage + 1), x);
            }
        }
        x
    }

    /// Every residual block, in order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.layer1.iter().chain(&self.layer2).chain(&self.layer3).chain(&self.layer4)
    }

    pub(super) fn summary(&self, size: usize) -> Summary {
        let side = |s: usize| s.div_ceil(2);
        let stem = side(side(size));
        let mut rows = vec![
            LayerRow::new(
                "conv1 + bn1 (Conv2D 7x7/2, BatchNorm, ReLU)",
                [self.bn1.gamma.dims()[0], side(size), side(size)],
                self.conv1.num_params() + self.bn1.num_params(),
            ),
            LayerRow::new("maxpool (MaxPool 3x3/2)", [self.bn1.gamma.dims()[0], stem, stem], 0),
        ];
        let mut s = stem;
        for (name, layer) in
            [("layer1", &self.layer1), ("layer2", &self.layer2), ("layer3", &self.layer3), ("layer4", &self.layer4)]
        {
            if layer.first().is_some_and(|b| b.stride == 2) {
                s = side(s);
            }
            let out = layer.last().map_or(0, |b| b.bn3.as_ref().unwrap_or(&b.bn2).gamma.dims()[0]);
            let kind = if self.depth.bottleneck() { "bottleneck" } else { "basic" };
            let params: usize = layer.iter().map(Module::num_params).sum();
            rows.push(LayerRow::new(&format!("{name} ({} {kind} blocks)", layer.len()), [out, s, s], params));
        }
        let features = self.fc.weight.dims()[0];
        rows.push(LayerRow::new("avgpool (GlobalAveragePooling)", [features], 0));
        rows.push(LayerRow::new("fc (Dense, softmax)", [self.fc.weight.dims()[1]], self.fc.num_params()));
        // BatchNorm's running mean and variance are counted in the rows, as Keras does, but
        // are not trained.
        let norms = std::iter::once(&self.bn1).chain(self.blocks().flat_map(|b| {
            [Some(&b.bn1), Some(&b.bn2), b.bn3.as_ref(), b.downsample.as_ref().map(|d| &d.bn)].into_iter().flatten()
        }));
        let running: usize = norms.map(|n| 2 * n.gamma.dims()[0]).sum();
        Summary::new(self.depth.name(), rows).with_non_trainable(running)
    }
}
