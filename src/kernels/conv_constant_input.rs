//! Convolution of an input that needs no gradient (the images, or a fixed first layer's
//! output), as one matrix product per image over its patch matrix (im2col), written in
//! burn's own tensor operations; [`conv3x3_constant_input`] routes to it on the CPU.
//!
//! On the CPU this trains faster than burn Flex's convolution, which computes the weight
//! gradient as another convolution whose "kernel" is the whole output gradient: a product
//! only 9 columns wide that repacks that gradient once per input channel. With the patch
//! matrix built outside the graph, the weight gradient is `output gradient @ patches^T` per
//! image, summed over the batch. The price is that the input gets no gradient, so this only
//! serves layers whose input is constant; and the per-image weight gradients are held at
//! once (`batch x filters x channels*9` floats), so it suits layers with few input channels.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;

use super::{conv3x3, is_flex};

/// `conv.forward(input)` for a stride-1 convolution with an odd kernel and "same" zero
/// padding, computed as `weight [filters, channels*kh*kw] @ patches [channels*kh*kw, h*w]`
/// per image. `input` is detached: no gradient flows back into it, while the weight and
/// bias get theirs as usual.
///
/// # Shapes
/// - input: `[batch, channels, h, w]`
/// - output: `[batch, filters, h, w]`
pub fn conv_of_constant(input: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let [batch, channels, height, width] = input.dims();
    let [filters, _, kh, kw] = conv.weight.dims();
    let padded = input.detach().pad((kw / 2, kw / 2, kh / 2, kh / 2), PadMode::Constant(0.0));
    // Rows in (channel, kernel row, kernel column) order: the layout of the weight.
    let shifts = (0..kh)
        .flat_map(|dy| (0..kw).map(move |dx| (dy, dx)))
        .map(|(dy, dx)| padded.clone().slice([0..batch, 0..channels, dy..dy + height, dx..dx + width]))
        .collect();
    let patches = Tensor::stack::<5>(shifts, 2).reshape([batch, channels * kh * kw, height * width]);
    // `dequantize`: int8 weights (`--quantize int8`) as floats; a no-op on fp32 ones.
    let weight = conv.weight.val().dequantize().reshape([1, filters, channels * kh * kw]);
    let mut out = weight.matmul(patches); // [batch, filters, h*w]
    if let Some(bias) = &conv.bias {
        out = out + bias.val().reshape([1, filters, 1]);
    }
    out.reshape([batch, filters, height, width])
}

/// A 3x3 "same" convolution, no bias, of an input that needs no gradient (block 1 of the
/// `fast` model, fed by its fixed whitening layer): while training on the CPU
/// [`conv_of_constant`] (a training step measured about 5% faster that way than with
/// [`conv3x3`]'s extension there); [`conv3x3`] for inference, with `--precision bf16`
/// (whose products it computes) and on other devices (its host product skips the stacked
/// copy of the patches and the batched product's repacking).
///
/// # Shapes
/// - input: `[batch, channels, h, w]`
/// - output: `[batch, filters, h, w]`
pub fn conv3x3_constant_input(input: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let device = input.device();
    let fp32 = super::precision() == super::Precision::Fp32;
    if is_flex(&device) && device.is_autodiff() && fp32 {
        conv_of_constant(input, conv)
    } else {
        conv3x3(input.detach(), conv)
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    /// Same values and same weight and bias gradients as burn's convolution, for the seed
    /// model's 3 -> 32 layer with a bias and the fast model's 24 -> 64 layer without.
    #[test]
    fn matches_burns_conv2d_forward_and_parameter_gradients() {
        let device = Device::flex().autodiff();
        device.seed(3);
        for (channels, filters, bias) in [(3, 32, true), (24, 64, false)] {
            let conv = Conv2dConfig::new([channels, filters], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .with_bias(bias)
                .init(&device);
            // A non-zero bias, so its path is checked too.
            let conv = Conv2d {
                bias: conv.bias.map(|_| {
                    burn::module::Param::from_tensor(Tensor::random([filters], Distribution::Default, &device))
                }),
                ..conv
            };
            let input = Tensor::<4>::random([2, channels, 8, 6], Distribution::Default, &device);
            let ours = conv_of_constant(input.clone(), &conv);
            let burns = conv.forward(input);
            assert_eq!(ours.dims(), [2, filters, 8, 6]);
            assert!(max_abs_diff(ours.clone(), burns.clone()) < 1e-5);

            let probe = Tensor::<4>::random([2, filters, 8, 6], Distribution::Default, &device);
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_burn = (burns * probe).sum().backward();
            let w = &conv.weight;
            assert!(max_abs_diff(w.grad(&g_ours).unwrap(), w.grad(&g_burn).unwrap()) < 1e-3);
            if let Some(b) = &conv.bias {
                assert!(max_abs_diff(b.grad(&g_ours).unwrap(), b.grad(&g_burn).unwrap()) < 1e-3);
            }
        }
    }
}
