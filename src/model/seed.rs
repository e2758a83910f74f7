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
use burn::tensor::activation::relu;
use rayon::prelude::*;
use std::sync::Arc;

use super::conv::{conv_of_constant, conv3x3_relu_pool};
use super::conv_pool_op;
use super::dense_op::dense;
use super::int8_dense::Int8Dense;
use super::summary::{LayerRow, Summary};

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
    /// 2x2 max pooling, stride 2: 32x32 -> 16x16. On the CPU `forward` runs
    /// [`max_pool_2x2`] instead, which computes the same thing faster there.
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

/// 2x2 max pooling with stride 2, as a gather of each window's maximum.
///
/// The window maxima are found on the host in one pass and the output is `gather`ed from
/// them, so the backward pass is a scatter of the incoming gradient to those positions.
/// On the CPU this is several times faster than burn Flex's general max-pool-with-indices,
/// which took a third of inference time; [`Seed::pool`] keeps the layer's settings and the
/// tests compare the two. Ties go to the first maximum in row-major order.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`, h and w even
/// - output: `[batch, channels, h / 2, w / 2]`
pub fn max_pool_2x2(x: Tensor<4>) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    let (ph, pw) = (h / 2, w / 2);
    let data = x.to_data().convert::<f32>();
    let values = data.as_slice::<f32>().unwrap_or(&[]);
    let mut argmax = vec![0i64; batch * channels * ph * pw];
    argmax.par_chunks_mut(ph * pw).enumerate().for_each(|(plane, out)| {
        let v = &values[plane * h * w..(plane + 1) * h * w];
        for py in 0..ph {
            for px in 0..pw {
                let first = 2 * py * w + 2 * px;
                let mut best = first;
                for i in [first + 1, first + w, first + w + 1] {
                    if v[i] > v[best] {
                        best = i;
                    }
                }
                out[py * pw + px] = best as i64;
            }
        }
    });
    let argmax = Tensor::<2, Int>::from_data(TensorData::new(argmax, [batch * channels, ph * pw]), &x.device());
    x.reshape([batch * channels, h * w]).gather(1, argmax).reshape([batch, channels, ph, pw])
}

fn zero_bias(n: usize, device: &Device) -> Option<Param<Tensor<1>>> {
    Some(Param::from_tensor(Tensor::zeros([n], device)))
}

impl Seed {
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, num_classes]` logits
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let cpu = crate::device::is_cpu(&device);
        let x = if cpu && !device.is_autodiff() {
            self.conv_relu_pool_host(images) // [batch, 32, 16, 16]
        } else if conv_pool_op::fused_on(&self.conv, &device) {
            conv_pool_op::conv_relu_pool(images, &self.conv) // [batch, 32, 16, 16]
        } else {
            let x = relu(self.conv_forward(images)); // [batch, 32, 32, 32]
            // Finding the maxima on the host would mean a round trip from the GPU.
            if cpu { max_pool_2x2(x) } else { self.pool.forward(x) } // [batch, 32, 16, 16]
        };
        let x: Tensor<2> = x.flatten(1, 3); // [batch, 8192], (channel, row, column) order
        let x = relu(self.hidden_forward(x)); // [batch, 512]
        let x = self.dropout.forward(x);
        dense(&self.output, x) // [batch, num_classes]
    }

    /// The hidden layer before its ReLU: in integers when [`Seed::hidden_int8`] is set and
    /// this is CPU inference (falling back to fp32 for an input with negative values,
    /// which the seed's never has), else [`dense`].
    ///
    /// # Shapes
    /// - x: `[batch, 8192]`
    /// - output: `[batch, 512]`
    fn hidden_forward(&self, x: Tensor<2>) -> Tensor<2> {
        let device = x.device();
        let Some(int8) = self.hidden_int8.as_ref().filter(|_| crate::device::is_cpu(&device) && !device.is_autodiff())
        else {
            return dense(&self.hidden, x);
        };
        let [batch, inputs] = x.dims();
        let values = x.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        match int8.forward(&values) {
            Some(y) => Tensor::from_data(TensorData::new(y, [batch, HIDDEN]), &device),
            None => dense(&self.hidden, Tensor::from_data(TensorData::new(values, [batch, inputs]), &device)),
        }
    }

    /// The 3x3 "same" convolution as one matrix product per image ([`conv_of_constant`]):
    /// the images are never trainable, so their patch matrix is built outside the gradient
    /// graph, and the backward pass is two small matrix products instead of burn's
    /// direct-convolution kernels, which dominated the step on the CPU. Same result as
    /// `self.conv.forward(images)`.
    ///
    /// # Shapes
    /// - images: `[batch, 3, h, w]`
    /// - output: `[batch, 32, h, w]`
    pub fn conv_forward(&self, images: Tensor<4>) -> Tensor<4> {
        conv_of_constant(images, &self.conv)
    }

    /// Inference on the CPU: convolution, ReLU and pooling fused on the host
    /// ([`conv3x3_relu_pool`]); the same values as the three layers one by one.
    ///
    /// # Shapes
    /// - images: `[batch, 3, 32, 32]`
    /// - output: `[batch, 32, 16, 16]`
    fn conv_relu_pool_host(&self, images: Tensor<4>) -> Tensor<4> {
        let dims = images.dims();
        let host = |t: TensorData| t.convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        // `dequantize` reads int8 weights (`--quantize int8`) as floats; a no-op on fp32.
        let weight = host(self.conv.weight.val().dequantize().into_data());
        let bias = match &self.conv.bias {
            Some(bias) => host(bias.val().dequantize().into_data()),
            None => vec![0.0; CONV_FILTERS],
        };
        let pooled = conv3x3_relu_pool(&host(images.into_data()), dims, &weight, &bias);
        let [batch, _, h, w] = dims;
        Tensor::from_data(TensorData::new(pooled, [batch, CONV_FILTERS, h / 2, w / 2]), &self.conv.weight.device())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;

    #[test]
    fn gathered_max_pool_matches_burns_max_pool_forward_and_gradient() {
        let device = Device::flex().autodiff();
        // Distinct values, so both pick the same maximum in every window.
        let n = 2 * 3 * 8 * 6;
        let values: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 * 0.01 - 1.0).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values, [2, 3, 8, 6]), &device).require_grad();
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        let ours = max_pool_2x2(x.clone());
        let burns = pool.forward(x.clone());
        assert_eq!(ours.dims(), [2, 3, 4, 3]);
        assert_eq!(max_abs_diff(ours.clone(), burns.clone()), 0.0);
        let probe = Tensor::<4>::from_data(
            TensorData::new((0..72).map(|i| i as f32).collect::<Vec<f32>>(), [2, 3, 4, 3]),
            &device,
        );
        let g_ours = x.grad(&(ours * probe.clone()).sum().backward()).unwrap();
        let g_burn = x.grad(&(burns * probe).sum().backward()).unwrap();
        assert_eq!(max_abs_diff(g_ours, g_burn), 0.0);
    }
}
