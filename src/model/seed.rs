//! The `seed` model: the CNN of the original Keras system, layer for layer.
//!
//! Keras: `Conv2D(32, 3x3, same, relu) -> MaxPool2D(2x2) -> Flatten -> Dense(512, relu)
//! -> Dropout(0.3) -> Dense(10, softmax)`, 4,200,842 parameters. Weights start as Keras's do
//! (Glorot-uniform kernels, zero biases) so the two train alike from the first step.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use std::sync::Arc;

use super::ops::{Compute, Ops};
use super::summary::{LayerRow, Summary};
use crate::kernels::Int8Dense;

/// Filters of the one convolution.
const CONV_FILTERS: usize = 32;
/// Width of the hidden dense layer.
const HIDDEN: usize = 512;
/// Side of the feature map after 2x2 pooling of a 32x32 input.
const POOLED_SIDE: usize = 16;
/// Features entering the hidden layer: 32 channels x 16 x 16.
const FLAT_FEATURES: usize = CONV_FILTERS * POOLED_SIDE * POOLED_SIDE;

/// Hyper-parameters of [`Seed`].
#[derive(Config, Debug)]
pub struct SeedConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// Dropout before the output layer, as in the original (0.3).
    #[config(default = 0.3)]
    pub dropout: f64,
}

/// The original system's CNN.
#[derive(Module, Debug)]
pub struct Seed {
    /// 3x3 convolution, 3 -> 32 channels, zero "same" padding; ReLU follows.
    pub conv: Conv2d,
    /// 2x2 max pooling, stride 2: 32x32 -> 16x16.
    pub pool: MaxPool2d,
    /// Dense 8192 -> 512; ReLU follows. Its input is flattened in (channel, row, column) order.
    pub hidden: Linear,
    /// Dropout 0.3, active only while training.
    pub dropout: Dropout,
    /// Dense 512 -> classes, giving logits.
    pub output: Linear,
    /// The hidden layer in integer form, set by [`crate::quantize::quantize`] when its
    /// weights are int8; CPU inference then runs it with [`Int8Dense`]. Not saved.
    #[module(skip)]
    pub hidden_int8: Option<Arc<Int8Dense>>,
}

impl SeedConfig {
    /// Builds the network with Keras's default initialisation.
    pub fn init(&self, device: &Device) -> Seed {
        let glorot = Initializer::XavierUniform { gain: 1.0 };
        let conv = Conv2dConfig::new([3, CONV_FILTERS], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .with_initializer(glorot.clone())
            .init(device);
        let hidden = LinearConfig::new(FLAT_FEATURES, HIDDEN).with_initializer(glorot.clone()).init(device);
        let output = LinearConfig::new(HIDDEN, self.num_classes).with_initializer(glorot).init(device);
        Seed {
            conv: Conv2d { bias: zero_bias(CONV_FILTERS, device), ..conv },
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: Linear { bias: zero_bias(HIDDEN, device), ..hidden },
            dropout: DropoutConfig::new(self.dropout).init(),
            output: Linear { bias: zero_bias(self.num_classes, device), ..output },
            hidden_int8: None,
        }
    }
}

fn zero_bias(n: usize, device: &Device) -> Option<Param<Tensor<1>>> {
    Some(Param::from_tensor(Tensor::zeros([n], device)))
}

impl Seed {
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(&mut Compute, images)
    }

    /// [`Seed::forward`] as [`Ops`]: the network's one description.
    pub fn forward_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = self.embedding_with(o, images); // [batch, 512]
        let x = o.dropout(&self.dropout, x);
        o.dense("output", &self.output, None, x) // [batch, num_classes]
    }

    /// The hidden layer's activations, what the output layer reads: the image's features.
    ///
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, 512]`
    pub fn embedding(&self, images: Tensor<4>) -> Tensor<2> {
        self.embedding_with(&mut Compute, images)
    }

    fn embedding_with<O: Ops>(&self, o: &mut O, images: O::Maps) -> O::Rows {
        let x = o.conv_relu_pool("conv", &self.conv, &self.pool, images); // [batch, 32, 16, 16]
        let x = o.flatten(x); // [batch, 8192], (channel, row, column) order
        let x = o.dense("hidden", &self.hidden, self.hidden_int8.as_deref(), x);
        o.relu_rows(x) // [batch, 512]
    }

    pub(super) fn summary(&self) -> Summary {
        let classes = self.output.weight.dims()[1];
        Summary::new(
            "seed",
            vec![
                LayerRow::new("conv (Conv2D 3x3, same, ReLU)", [CONV_FILTERS, 32, 32], self.conv.num_params()),
                LayerRow::new("pool (MaxPool 2x2)", [CONV_FILTERS, POOLED_SIDE, POOLED_SIDE], 0),
                LayerRow::new("flatten (Flatten)", [FLAT_FEATURES], 0),
                LayerRow::new("hidden (Dense, ReLU)", [HIDDEN], self.hidden.num_params()),
                LayerRow::new("dropout (Dropout 0.3)", [HIDDEN], 0),
                LayerRow::new("output (Dense, softmax)", [classes], self.output.num_params()),
            ],
        )
    }
}
