//! Convolution of an input that needs no gradient (the images, or a fixed first layer's
//! output): as one matrix product per image over its patch matrix (im2col) while training,
//! and, for inference on the CPU, fused with its ReLU and 2x2 max pool on the host.
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
use rayon::prelude::*;

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

/// Inference only: a 3x3 "same" convolution with bias, then ReLU, then 2x2 max pooling
/// with stride 2, computed per image on the host in one pass.
///
/// Through burn, these three layers write and reread the full-resolution activation six
/// or more times (patches, product, bias, ReLU, the pool's copy and gather), which took
/// half of the seed model's inference time; here each image's 32x32 maps stay in the
/// core's cache and only the pooled quarter is written. Same values as the layers run one
/// by one, up to float summation order (checked in the tests).
///
/// # Shapes
/// - images: `[batch, channels, h, w]` (h and w even), row-major
/// - weight: `[filters, channels, 3, 3]`, bias: `[filters]`
/// - output: `[batch, filters, h / 2, w / 2]`, row-major
pub fn conv3x3_relu_pool(images: &[f32], dims: [usize; 4], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let [batch, channels, h, w] = dims;
    let filters = bias.len();
    assert_eq!(images.len(), batch * channels * h * w, "images do not match their shape");
    assert_eq!(weight.len(), filters * channels * 9, "weight does not match the bias");
    let pooled = (h / 2) * (w / 2);
    let mut out = vec![0f32; batch * filters * pooled];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(filters * pooled).zip(images.par_chunks(channels * h * w)).for_each(|(out, image)| {
        conv_image(image, [channels, h, w], weight, bias, out)
    });
    out
}

/// [`conv_image_body`] with the widest vector instructions this CPU has.
fn conv_image(image: &[f32], dims: [usize; 3], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected on this CPU.
        return unsafe { conv_image_avx2(image, dims, weight, bias, out) };
    }
    conv_image_body(image, dims, weight, bias, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn conv_image_avx2(image: &[f32], dims: [usize; 3], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    conv_image_body(image, dims, weight, bias, out)
}

/// One image: each filter's map is accumulated row by row from the zero-padded image (rows
/// are contiguous, so the inner loop vectorises), then pooled with the ReLU folded in
/// (`max(relu(a), ...) = relu(max(a, ...))`).
#[inline(always)]
fn conv_image_body(image: &[f32], [channels, h, w]: [usize; 3], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let (hp, wp) = (h + 2, w + 2);
    let mut padded = vec![0f32; channels * hp * wp];
    for c in 0..channels {
        for y in 0..h {
            let row = c * hp * wp + (y + 1) * wp + 1;
            padded[row..row + w].copy_from_slice(&image[(c * h + y) * w..][..w]);
        }
    }
    let (ph, pw) = (h / 2, w / 2);
    let mut map = vec![0f32; h * w];
    for (f, out) in out.chunks_exact_mut(ph * pw).enumerate() {
        map.fill(bias[f]);
        for c in 0..channels {
            for dy in 0..3 {
                for dx in 0..3 {
                    let wv = weight[((f * channels + c) * 3 + dy) * 3 + dx];
                    for y in 0..h {
                        let src = &padded[c * hp * wp + (y + dy) * wp + dx..][..w];
                        for (m, s) in map[y * w..][..w].iter_mut().zip(src) {
                            *m += wv * s;
                        }
                    }
                }
            }
        }
        for py in 0..ph {
            for px in 0..pw {
                let i = 2 * py * w + 2 * px;
                out[py * pw + px] = map[i].max(map[i + 1]).max(map[i + w]).max(map[i + w + 1]).max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

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
                bias: conv.bias.map(|_| burn::module::Param::from_tensor(Tensor::random([filters], Distribution::Default, &device))),
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

    #[test]
    fn fused_conv_relu_pool_matches_the_layers_one_by_one() {
        let device = Device::flex();
        device.seed(5);
        let conv = Conv2dConfig::new([3, 8], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
        let conv = Conv2d {
            bias: Some(burn::module::Param::from_tensor(Tensor::random([8], Distribution::Normal(0.0, 0.5), &device))),
            ..conv
        };
        let images = Tensor::<4>::random([3, 3, 6, 4], Distribution::Default, &device);
        let expected = crate::model::max_pool_2x2(burn::tensor::activation::relu(conv.forward(images.clone())));
        let values = |t: Tensor<4>| t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let ours = conv3x3_relu_pool(
            &values(images),
            [3, 3, 6, 4],
            &values(conv.weight.val()),
            &conv.bias.as_ref().unwrap().val().into_data().try_into_vec::<f32>().unwrap(),
        );
        let expected = values(expected);
        assert_eq!(ours.len(), 3 * 8 * 3 * 2);
        let worst = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        assert!(expected.iter().any(|&v| v == 0.0) && expected.iter().any(|&v| v > 0.0), "ReLU must matter here");
    }
}
