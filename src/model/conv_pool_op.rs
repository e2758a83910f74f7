//! The seed model's first three layers (3x3 "same" convolution with bias, ReLU, 2x2 max
//! pool) as one burn backend extension, so that a training step on the CPU runs them as one
//! pass per image instead of a dozen tensor operations.
//!
//! Through burn the three layers build a patch matrix from nine shifted copies of the
//! padded images, multiply, add the bias, apply the ReLU, copy the 32x32 maps to the host
//! to find each window's maximum, and gather; the backward pass scatters, masks and takes
//! two products. That was over half of the forward pass of a seed training step. Here the
//! forward pass is [`conv3x3_relu_pool_sources`], which keeps each image's maps in cache and
//! notes where every pooled value came from; the backward pass puts each pooled gradient
//! back on that one pixel and takes the weight gradient over the sparse map
//! ([`conv3x3_relu_pool_grads`]). The images get no gradient: they are never trainable.
//!
//! The extension is routed for Flex and autodiff over Flex only; [`conv_relu_pool`] uses it
//! there and burn's layers on every other device.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;

use super::conv::{conv3x3_relu_pool_grads, conv3x3_relu_pool_sources};
use super::conv_op::{f32_values, flex_tensor};

/// The extension: the fused forward pass and the parameter gradients.
#[backend_extension(Flex, Autodiff)]
pub trait ConvReluPoolBackend: Backend {
    /// `max_pool_2x2(relu(conv(images) + bias))`, and for each pooled value the index of
    /// the pixel it came from in its `h * w` map, or -1 where the ReLU zeroed it.
    ///
    /// # Shapes
    /// - images: `[batch, channels, h, w]` (h and w even), weight: `[filters, channels, 3, 3]`,
    ///   bias: `[filters]`
    /// - output and sources: `[batch, filters, h / 2, w / 2]`
    fn conv_relu_pool(
        images: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// The weight and bias gradients, given the images, the sources and the gradient with
    /// respect to the output.
    fn conv_relu_pool_grads(
        images: FloatTensor<Self>,
        sources: IntTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl ConvReluPoolBackend for Flex {
    fn conv_relu_pool(images: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> (FlexTensor, FlexTensor) {
        let dims: [usize; 4] = images.layout().shape().dims();
        let filters = weight.layout().shape().dims::<4>()[0];
        let [images, weight, bias] = [images, weight, bias].map(|t| t.to_contiguous());
        let (pooled, sources) =
            conv3x3_relu_pool_sources(f32_values(&images), dims, f32_values(&weight), f32_values(&bias));
        let shape = [dims[0], filters, dims[2] / 2, dims[3] / 2];
        (flex_tensor(pooled, shape), FlexTensor::from_data(TensorData::new(sources, shape)))
    }

    fn conv_relu_pool_grads(
        images: FlexTensor,
        sources: FlexTensor,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor) {
        let dims: [usize; 4] = images.layout().shape().dims();
        let filters = output_grad.layout().shape().dims::<4>()[1];
        let [images, sources, output_grad] = [images, sources, output_grad].map(|t| t.to_contiguous());
        let (weight_grad, bias_grad) = conv3x3_relu_pool_grads(
            f32_values(&images),
            dims,
            sources.as_slice::<i32>().expect("i32 sources from `conv_relu_pool`"),
            f32_values(&output_grad),
            filters,
        );
        (flex_tensor(weight_grad, [filters, dims[1], 3, 3]), flex_tensor(bias_grad, [filters]))
    }
}

#[derive(Debug)]
struct ConvReluPoolBackward;

impl<B: Backend + ConvReluPoolBackend> Backward<B, 2> for ConvReluPoolBackward {
    /// The images and where each pooled value came from.
    type State = (FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (images, sources) = ops.state;
        let (weight_grad, bias_grad) = B::conv_relu_pool_grads(images, sources, grad);
        for (node, grad) in [(node_weight, weight_grad), (node_bias, bias_grad)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + ConvReluPoolBackend, C: CheckpointStrategy> ConvReluPoolBackend for Autodiff<B, C> {
    fn conv_relu_pool(
        images: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        // The images are constant: only the weight and bias are parents in the graph.
        let images = images.into_primitive();
        let prepared = ConvReluPoolBackward.prepare::<C>([weight.node(), bias.node()]).compute_bound().stateful();
        let (weight, bias) = (weight.into_primitive(), bias.into_primitive());
        match prepared {
            OpsKind::Tracked(prep) => {
                let (pooled, sources) = B::conv_relu_pool(images.clone(), weight, bias);
                (prep.finish((images, sources.clone()), pooled), sources)
            }
            OpsKind::UnTracked(prep) => {
                let (pooled, sources) = B::conv_relu_pool(images, weight, bias);
                (prep.finish(pooled), sources)
            }
        }
    }

    fn conv_relu_pool_grads(
        _images: FloatTensor<Self>,
        _sources: IntTensor<Self>,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }
}

/// Whether [`conv_relu_pool`] runs `conv`'s layers fused on this device: on the CPU, for a
/// 3x3 convolution with a bias and f32 (not int8) weights.
pub fn fused_on(conv: &Conv2d, device: &Device) -> bool {
    crate::device::is_cpu(device)
        && conv.weight.dims()[2..] == [3, 3]
        && conv.bias.as_ref().is_some_and(|b| b.val().dtype() == DType::F32)
        && conv.weight.val().dtype() == DType::F32
}

/// `max_pool_2x2(relu(conv.forward(images)))` through the extension, for a 3x3 "same"
/// convolution with a bias whose input needs no gradient (the caller checks [`fused_on`]).
///
/// # Shapes
/// - images: `[batch, channels, h, w]`, h and w even
/// - output: `[batch, filters, h / 2, w / 2]`
pub fn conv_relu_pool(images: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let bias = conv.bias.as_ref().expect("`fused_on` checked the bias").val();
    let (pooled, _sources) = <Dispatch as ConvReluPoolBackend>::conv_relu_pool(
        images.detach().into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(pooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use crate::model::max_pool_2x2;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    /// Same output and same weight and bias gradients as burn's convolution, ReLU and the
    /// gathered max pool, one by one; with a bias spread around zero, so that some windows
    /// are all negative and the ReLU's zero gradient is exercised. 32x32 images with 8
    /// filters take the register-blocked row kernel where the CPU has one (AVX-512); 8x6
    /// images with 6 filters take the plain loop.
    #[test]
    fn matches_the_layers_one_by_one_forward_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(11);
        for (filters, [h, w]) in [(8, [32, 32]), (6, [8, 6])] {
            let conv = Conv2dConfig::new([3, filters], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
            let bias = Tensor::random([filters], Distribution::Normal(0.0, 0.5), &device);
            let conv = Conv2d { bias: Some(burn::module::Param::from_tensor(bias)), ..conv };
            assert!(fused_on(&conv, &device));
            let images = Tensor::<4>::random([3, 3, h, w], Distribution::Default, &device);
            let ours = conv_relu_pool(images.clone(), &conv);
            let layers = max_pool_2x2(relu(conv.forward(images)));
            let pooled = [3, filters, h / 2, w / 2];
            assert_eq!(ours.dims(), pooled);
            assert!(max_abs_diff(ours.clone(), layers.clone()) < 1e-5);
            let zeros = layers.clone().equal_elem(0.0).int().sum().into_scalar::<i64>();
            let all = pooled.iter().product::<usize>() as i64;
            assert!(zeros > 0 && zeros < all, "the ReLU must zero some values and not all ({zeros} of {all})");

            let probe = Tensor::<4>::random(pooled, Distribution::Normal(0.0, 1.0), &device);
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_layers = (layers * probe).sum().backward();
            let w = &conv.weight;
            assert!(max_abs_diff(w.grad(&g_ours).unwrap(), w.grad(&g_layers).unwrap()) < 1e-3);
            let b = conv.bias.as_ref().unwrap();
            assert!(max_abs_diff(b.grad(&g_ours).unwrap(), b.grad(&g_layers).unwrap()) < 1e-3);
        }
    }

    #[test]
    fn int8_weights_are_not_fused() {
        let device = Device::flex();
        let conv = Conv2dConfig::new([3, 4], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        assert!(fused_on(&conv, &device));
        let weight = crate::quantize::quantize_tensor(conv.weight.val());
        let quantized = Conv2d { weight: burn::module::Param::from_tensor(weight), ..conv };
        assert!(!fused_on(&quantized, &device));
    }
}
