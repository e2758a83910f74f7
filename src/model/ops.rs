//! The vocabulary every architecture's forward pass is written in, so each network is
//! described once: [`Compute`] runs the description on tensors (training, evaluation,
//! serving), and the ONNX writer (`crate::onnx`) runs the same description to write the
//! graph, node by node. A new architecture written against [`Ops`] exports without a line
//! of ONNX code; a new operation is one method here, one in [`Compute`] and one in the
//! writer.
//!
//! An operation takes the layer it runs (burn's `Conv2d`, `BatchNorm`, ...), which carries
//! its own kernel size, stride, padding and weights, and the layer's path in the module
//! (`blocks.3.expand_conv`), which names its weights in an exported graph. Paths are
//! `Display` values so that computing never formats them (`format_args!` costs nothing
//! until printed).
//!
//! Values are `Maps` (`[batch, channels, h, w]` activations) or `Rows` (`[batch, features]`).

use std::fmt::Display;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::nn::{BatchNorm, Dropout, Linear, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, PadMode};

use crate::kernels::{self, Bounds, Int8Dense};

/// How a global pool reduces each map to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Max,
    Average,
}

/// The operations a forward pass is made of; see the module docs.
pub trait Ops {
    /// `[batch, channels, h, w]` activations.
    type Maps: Clone;
    /// `[batch, features]` rows.
    type Rows: Clone;

    /// `(x - mean) / std` per channel, with fixed (never trained) `[3]` statistics.
    fn normalize(&mut self, mean: &Param<Tensor<1>>, std: &Param<Tensor<1>>, x: Self::Maps) -> Self::Maps;
    /// The trained convolution `conv` as configured (kernel, stride, padding, groups, bias).
    fn conv(&mut self, path: impl Display, conv: &Conv2d, x: Self::Maps) -> Self::Maps;
    /// [`Ops::conv`] of an input that carries no gradient (it comes from fixed layers only),
    /// so none is computed for it; the convolution is 3x3, stride 1, padding 1, no bias.
    fn conv_of_constant(&mut self, path: impl Display, conv: &Conv2d, x: Self::Maps) -> Self::Maps;
    /// A fixed (never trained) convolution: `conv`'s weight, bias, stride and groups, with
    /// `x` padded by `pads` (top, left, bottom, right) zeros instead of `conv`'s own padding.
    /// Kept in fp32 whatever the export precision.
    fn fixed_conv(&mut self, path: impl Display, conv: &Conv2d, pads: [usize; 4], x: Self::Maps) -> Self::Maps;
    /// `pool(relu(conv(x)))` for a 3x3 "same" convolution with a bias, of an input that
    /// carries no gradient (the images), and a 2x2 pool.
    fn conv_relu_pool(&mut self, path: impl Display, conv: &Conv2d, pool: &MaxPool2d, x: Self::Maps) -> Self::Maps;
    /// `norm(x)` clamped to `bounds` (ReLU, ReLU6 or none).
    fn batch_norm(&mut self, path: impl Display, norm: &BatchNorm, bounds: Bounds, x: Self::Maps) -> Self::Maps;
    /// The max pool `pool` as configured.
    fn max_pool(&mut self, pool: &MaxPool2d, x: Self::Maps) -> Self::Maps;
    fn relu(&mut self, x: Self::Maps) -> Self::Maps;
    fn add(&mut self, x: Self::Maps, y: Self::Maps) -> Self::Maps;
    /// Each map reduced to one value: `[batch, channels]`.
    fn global_pool(&mut self, pool: Pool, x: Self::Maps) -> Self::Rows;
    /// `[batch, channels * h * w]`, in (channel, row, column) order.
    fn flatten(&mut self, x: Self::Maps) -> Self::Rows;
    /// `x @ weight (+ bias)`; `int8`, where the layer has an integer form, for inference.
    fn dense(&mut self, path: impl Display, layer: &Linear, int8: Option<&Int8Dense>, x: Self::Rows) -> Self::Rows;
    fn relu_rows(&mut self, x: Self::Rows) -> Self::Rows;
    /// Dropout while training, the identity otherwise.
    fn dropout(&mut self, dropout: &Dropout, x: Self::Rows) -> Self::Rows;
    /// `x * factor`, a fixed constant named `path`.
    fn scale(&mut self, path: impl Display, factor: f32, x: Self::Rows) -> Self::Rows;
}

/// Runs a description on burn tensors, each operation through the kernel
/// [`crate::kernels`] routes it to for the tensor's device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compute;

/// Whether `conv` is a 3x3, stride-1, padding-1 convolution without bias, one group:
/// what [`kernels::conv3x3`] computes.
fn is_plain_3x3(conv: &Conv2d) -> bool {
    let padded_one = matches!(conv.padding, PaddingConfig2d::Same | PaddingConfig2d::Explicit(1, 1, 1, 1));
    conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.bias.is_none()
        && padded_one
}

/// Whether `conv` is depthwise: one filter per input channel.
pub fn is_depthwise(conv: &Conv2d) -> bool {
    conv.groups > 1 && conv.groups == conv.weight.dims()[0] && conv.weight.dims()[1] == 1
}

impl Ops for Compute {
    type Maps = Tensor<4>;
    type Rows = Tensor<2>;

    fn normalize(&mut self, mean: &Param<Tensor<1>>, std: &Param<Tensor<1>>, x: Tensor<4>) -> Tensor<4> {
        let mean = mean.val().detach().reshape([1, 3, 1, 1]);
        let std = std.val().detach().reshape([1, 3, 1, 1]);
        (x - mean) / std
    }

    fn conv(&mut self, _: impl Display, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        if is_depthwise(conv) {
            kernels::depthwise_conv(x, conv)
        } else if is_plain_3x3(conv) {
            kernels::conv3x3(x, conv)
        } else {
            conv.forward(x)
        }
    }

    fn conv_of_constant(&mut self, _: impl Display, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        kernels::conv3x3_constant_input(x, conv)
    }

    fn fixed_conv(&mut self, _: impl Display, conv: &Conv2d, pads: [usize; 4], x: Tensor<4>) -> Tensor<4> {
        // Detached so the layer stays fixed whatever the optimiser or a loaded record says
        // about its gradient.
        let [top, left, bottom, right] = pads;
        let mut x = x.detach();
        if pads != [0; 4] {
            x = x.pad((left, right, top, bottom), PadMode::Constant(0.0));
        }
        let bias = conv.bias.as_ref().map(|b| b.val().detach());
        let options = ConvOptions::new(conv.stride, [0, 0], conv.dilation, conv.groups);
        conv2d(x, conv.weight.val().detach(), bias, options)
    }

    fn conv_relu_pool(&mut self, _: impl Display, conv: &Conv2d, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
        kernels::conv_relu_pool(x, conv, pool)
    }

    fn batch_norm(&mut self, _: impl Display, norm: &BatchNorm, bounds: Bounds, x: Tensor<4>) -> Tensor<4> {
        kernels::batch_norm_clamp(norm, x, bounds)
    }

    fn max_pool(&mut self, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
        let unpadded = matches!(pool.padding, PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0));
        if pool.kernel_size == [2, 2] && pool.stride == [2, 2] && pool.dilation == [1, 1] && unpadded {
            kernels::max_pool_2x2(x, pool)
        } else {
            pool.forward(x)
        }
    }

    fn relu(&mut self, x: Tensor<4>) -> Tensor<4> {
        relu(x)
    }

    fn add(&mut self, x: Tensor<4>, y: Tensor<4>) -> Tensor<4> {
        x + y
    }

    fn global_pool(&mut self, pool: Pool, x: Tensor<4>) -> Tensor<2> {
        let [batch, channels, h, w] = x.dims();
        let x: Tensor<3> = x.reshape([batch, channels, h * w]);
        let pooled = match pool {
            Pool::Max => x.max_dim(2),
            Pool::Average => x.mean_dim(2),
        };
        pooled.reshape([batch, channels])
    }

    fn flatten(&mut self, x: Tensor<4>) -> Tensor<2> {
        x.flatten(1, 3)
    }

    fn dense(&mut self, _: impl Display, layer: &Linear, int8: Option<&Int8Dense>, x: Tensor<2>) -> Tensor<2> {
        kernels::int8_dense(layer, int8, x)
    }

    fn relu_rows(&mut self, x: Tensor<2>) -> Tensor<2> {
        relu(x)
    }

    fn dropout(&mut self, dropout: &Dropout, x: Tensor<2>) -> Tensor<2> {
        dropout.forward(x)
    }

    fn scale(&mut self, _: impl Display, factor: f32, x: Tensor<2>) -> Tensor<2> {
        x.mul_scalar(factor)
    }
}

#[cfg(test)]
mod tests {
    use burn::store::ModuleSnapshot;
    use clap::ValueEnum;

    use super::*;
    use crate::model::{ModelKind, Network};

    /// Computes nothing: records the module path of every tensor a description reads.
    #[derive(Default)]
    struct Reads(Vec<String>);

    impl Reads {
        fn conv(&mut self, path: impl Display, conv: &Conv2d) {
            self.0.push(format!("{path}.weight"));
            if conv.bias.is_some() {
                self.0.push(format!("{path}.bias"));
            }
        }
    }

    impl Ops for Reads {
        type Maps = ();
        type Rows = ();

        fn normalize(&mut self, _: &Param<Tensor<1>>, _: &Param<Tensor<1>>, _: ()) {
            self.0.extend(["input_mean".into(), "input_std".into()]);
        }
        fn conv(&mut self, path: impl Display, conv: &Conv2d, _: ()) {
            Reads::conv(self, path, conv);
        }
        fn conv_of_constant(&mut self, path: impl Display, conv: &Conv2d, _: ()) {
            Reads::conv(self, path, conv);
        }
        fn fixed_conv(&mut self, path: impl Display, conv: &Conv2d, _: [usize; 4], _: ()) {
            Reads::conv(self, path, conv);
        }
        fn conv_relu_pool(&mut self, path: impl Display, conv: &Conv2d, _: &MaxPool2d, _: ()) {
            Reads::conv(self, path, conv);
        }
        fn batch_norm(&mut self, path: impl Display, _: &BatchNorm, _: Bounds, _: ()) {
            let names = ["gamma", "beta", "running_mean", "running_var"];
            self.0.extend(names.map(|name| format!("{path}.{name}")));
        }
        fn max_pool(&mut self, _: &MaxPool2d, _: ()) {}
        fn relu(&mut self, _: ()) {}
        fn add(&mut self, _: (), _: ()) {}
        fn global_pool(&mut self, _: Pool, _: ()) {}
        fn flatten(&mut self, _: ()) {}
        fn dense(&mut self, path: impl Display, layer: &Linear, _: Option<&Int8Dense>, _: ()) {
            self.0.push(format!("{path}.weight"));
            if layer.bias.is_some() {
                self.0.push(format!("{path}.bias"));
            }
        }
        fn relu_rows(&mut self, _: ()) {}
        fn dropout(&mut self, _: &Dropout, _: ()) {}
        fn scale(&mut self, _: impl Display, _: f32, _: ()) {}
    }

    /// What makes one description enough for training and export: it reads every tensor the
    /// module holds (weights, fixed layers, BatchNorm statistics), each once, under the
    /// module's own path, the name the exported graph gives it.
    #[test]
    fn each_architecture_s_description_reads_every_tensor_of_its_module_once_by_its_path() {
        let device = Device::flex();
        for &kind in ModelKind::value_variants() {
            let net = Network::init(kind, 3, &device);
            let mut reads = Reads::default();
            net.forward_with(&mut reads, ());
            let mut read = reads.0;
            read.sort();
            let mut held: Vec<String> = net.collect(None, None, true).into_iter().map(|t| t.name).collect();
            held.sort();
            assert_eq!(read, held, "{kind}");
        }
    }

    #[test]
    fn depthwise_and_plain_3x3_convolutions_are_told_apart_by_their_configuration() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex();
        let conv = |groups: usize, stride: usize, padding: PaddingConfig2d, bias: bool| {
            Conv2dConfig::new([8, 8], [3, 3])
                .with_groups(groups)
                .with_stride([stride, stride])
                .with_padding(padding)
                .with_bias(bias)
                .init(&device)
        };
        assert!(is_depthwise(&conv(8, 2, PaddingConfig2d::Same, false)));
        assert!(!is_depthwise(&conv(1, 1, PaddingConfig2d::Same, false)));
        assert!(is_plain_3x3(&conv(1, 1, PaddingConfig2d::Explicit(1, 1, 1, 1), false)));
        assert!(is_plain_3x3(&conv(1, 1, PaddingConfig2d::Same, false)));
        for other in [
            conv(1, 2, PaddingConfig2d::Same, false),
            conv(1, 1, PaddingConfig2d::Valid, false),
            conv(1, 1, PaddingConfig2d::Same, true),
            conv(8, 1, PaddingConfig2d::Same, false),
        ] {
            assert!(!is_plain_3x3(&other), "{other:?}");
        }
    }
}
