//! A 3x3 "same" convolution (stride 1, padding 1, no bias) as a burn backend extension,
//! so that training on the CPU gets a faster weight gradient than burn Flex's.
//!
//! burn's autodiff asks the backend for a convolution's weight gradient, and Flex computes
//! it as another convolution whose "kernel" is the whole output gradient: a product only 9
//! columns wide that repacks that gradient once per input channel, which ran at 40-70
//! GFLOP/s on the fast model's layers. The same sum, written as a matrix product,
//!
//! ```text
//! dW[filter, (channel, ky, kx)] = sum over (image, y, x) of
//!     dY[image, filter, y, x] * X_padded[image, channel, y + ky, x + kx]
//! ```
//!
//! is one `[filters, K] @ [K, channels * 9]` product per group of images, `K` = images x
//! pixels, over a patch matrix (im2col) built for that group only; [`weight_gradient`] does
//! that on the host with the `gemm` crate that Flex itself uses. The forward pass
//! ([`forward`]) is the same kind of product, `weight @ patches` per group of images, which
//! beat Flex's own convolution on these layers (most on the 16x16 ones); the input gradient
//! is that forward convolution applied to the output gradient with the filters transposed
//! and turned by 180 degrees.
//!
//! The extension is routed for Flex and autodiff over Flex only; [`conv3x3`] uses it there
//! and burn's `conv2d` on every other device.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::ops::ConvOptions;
use rayon::prelude::*;
use std::cell::RefCell;

use super::bf16::{Left, Out, Precision, Right, matmul as matmul_bf16, precision};
use super::{f32_values, flex_tensor, is_flex};

/// Patch-matrix columns (images x pixels) per product: enough for the product to run near
/// the machine's peak, small enough that the patch matrix (`channels * 9` rows) stays a few
/// megabytes.
const GROUP_COLUMNS: usize = 2048;

/// How many images each product takes: at most [`GROUP_COLUMNS`] columns' worth, and the
/// batch cut into a multiple of the compute threads' count, so that no thread is left with
/// one large group while the others wait (at batch 256 on 3x3 maps, 227 + 29 images had one
/// of two threads doing 89% of the layer).
fn images_per_group(batch: usize, pixels: usize) -> usize {
    let by_size = (GROUP_COLUMNS / pixels.max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    let groups = batch.div_ceil(by_size).div_ceil(threads) * threads;
    batch.div_ceil(groups.clamp(1, batch.max(1)))
}

fn same_3x3() -> ConvOptions<2> {
    ConvOptions::new([1, 1], [1, 1], [1, 1], 1)
}

/// The extension: the convolution itself and its weight gradient.
#[backend_extension(Flex, Autodiff)]
pub trait Conv3x3Backend: Backend {
    /// # Shapes
    /// - x: `[batch, channels, h, w]`, weight: `[filters, channels, 3, 3]`
    /// - output: `[batch, filters, h, w]`
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of the loss with respect to the weight, given the input and the gradient
    /// with respect to the output (`[batch, filters, h, w]`).
    fn conv3x3_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl Conv3x3Backend for Flex {
    fn conv3x3(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
            return Self::conv2d(x, weight, None, same_3x3());
        }
        let dims: [usize; 4] = x.layout().shape().dims();
        let filters = weight.layout().shape().dims::<4>()[0];
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let out = forward(f32_values(&x), f32_values(&weight), dims, filters);
        flex_tensor(out, [dims[0], filters, dims[2], dims[3]])
    }

    fn conv3x3_weight_grad(x: FlexTensor, weight: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || output_grad.dtype() != DType::F32 {
            return Self::conv2d_weight_backward(x, weight, output_grad, same_3x3());
        }
        let dims: [usize; 4] = x.layout().shape().dims();
        let filters = weight.layout().shape().dims::<4>()[0];
        let (x, output_grad) = (x.to_contiguous(), output_grad.to_contiguous());
        let grad = weight_gradient(f32_values(&x), f32_values(&output_grad), dims, filters);
        flex_tensor(grad, [filters, dims[1], 3, 3])
    }
}

#[derive(Debug)]
struct Conv3x3Backward;

impl<B: Backend + Conv3x3Backend> Backward<B, 2> for Conv3x3Backward {
    /// The checkpointed input and weight.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        if let Some(node) = node_x {
            // Transposed (filters <-> channels) and turned by 180 degrees: a forward "same"
            // convolution of the output gradient gives the input gradient.
            let turned = B::float_flip(B::float_swap_dims(weight.clone(), 0, 1), &[2, 3]);
            grads.register::<B>(node.id, B::conv3x3(grad.clone(), turned));
        }
        if let Some(node) = node_weight {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
            grads.register::<B>(node.id, B::conv3x3_weight_grad(x, weight, grad));
        }
    }
}

impl<B: Backend + Conv3x3Backend, C: CheckpointStrategy> Conv3x3Backend for Autodiff<B, C> {
    fn conv3x3(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match Conv3x3Backward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                prep.finish((x_state, weight_state), B::conv3x3(x.into_primitive(), weight.into_primitive()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv3x3(x.into_primitive(), weight.into_primitive())),
        }
    }

    fn conv3x3_weight_grad(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("the weight gradient is only taken on the inner backend, inside the backward pass")
    }
}

/// `conv.forward(x)` for a 3x3 convolution with padding 1 and stride 1 (the caller's
/// contract; checked in debug builds): on the CPU through the extension above, elsewhere
/// through burn's `conv2d`.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`
/// - output: `[batch, filters, h, w]`
pub fn conv3x3(x: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    debug_assert_eq!(conv.weight.dims()[2..], [3, 3]);
    if conv.bias.is_some() || !is_flex(&x.device()) {
        return conv.forward(x);
    }
    let weight = conv.weight.val();
    if matches!(weight.dtype(), DType::QFloat(_)) {
        return conv.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(x.into_dispatch(), weight.into_dispatch()))
}

/// The weight gradient of a 3x3 "same" convolution, as products over patch matrices built
/// for groups of images (see the module docs); the groups run in parallel, each summing
/// into its own buffer.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`, output_grad: `[batch, filters, h, w]`, both row-major
/// - output: `[filters, channels, 3, 3]`, row-major
pub fn weight_gradient(
    x: &[f32],
    output_grad: &[f32],
    [batch, channels, h, w]: [usize; 4],
    filters: usize,
) -> Vec<f32> {
    let pixels = h * w;
    let rows = channels * 9;
    assert_eq!(x.len(), batch * channels * pixels, "input does not match its shape");
    assert_eq!(output_grad.len(), batch * filters * pixels, "output gradient does not match the input");
    let per_group = images_per_group(batch, pixels);
    let zero = || vec![0f32; filters * rows];
    if batch == 0 || pixels == 0 {
        return zero();
    }
    let bf16 = precision() == Precision::Bf16;
    let sum = x
        .par_chunks(per_group * channels * pixels)
        .zip(output_grad.par_chunks(per_group * filters * pixels))
        .fold(zero, |mut sum, (x, dy)| {
            let images = x.len() / (channels * pixels);
            let columns = images * pixels;
            if bf16 {
                // sum [rows, filters] += patches [rows, columns] @ dy^T [columns, filters],
                // the patch rows built one at a time and dy read in place.
                let patches = |row: usize, out: &mut [f32]| patch_row(x, [images, channels, h, w], row, out);
                let dy_of = |f: usize, out: &mut [f32]| {
                    for (image, out) in out.chunks_exact_mut(pixels).enumerate() {
                        out.copy_from_slice(&dy[(image * filters + f) * pixels..][..pixels]);
                    }
                };
                let sum_out = Out::RowMajor { values: &mut sum, stride: filters };
                matmul_bf16([rows, filters, columns], Left::Rows(&patches), Right::Columns(&dy_of), sum_out, true);
                return sum;
            }
            with_scratch([rows * columns, filters * columns], |patches, grad| {
                patch_matrix(x, [images, channels, h, w], patches); // [rows, columns]
                // The output gradient as [filters, columns]: one row per filter, images side by side.
                for (image, dy) in dy.chunks_exact(filters * pixels).enumerate() {
                    for (f, plane) in dy.chunks_exact(pixels).enumerate() {
                        grad[f * columns + image * pixels..][..pixels].copy_from_slice(plane);
                    }
                }
                // sum [filters, rows] += grad [filters, columns] @ patches^T [columns, rows]
                // SAFETY: the strides and sizes describe the three buffers above, and
                // the destination does not alias the operands.
                unsafe {
                    gemm::gemm(
                        filters,
                        rows,
                        columns,
                        sum.as_mut_ptr(),
                        1,
                        rows as isize,
                        true,
                        grad.as_ptr(),
                        1,
                        columns as isize,
                        patches.as_ptr(),
                        columns as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            });
            sum
        })
        .reduce(zero, |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        });
    if !bf16 {
        return sum;
    }
    // The bf16 products summed [rows, filters]: turned to the weight's [filters, rows].
    (0..filters).flat_map(|f| (0..rows).map(move |r| (r, f))).map(|(r, f)| sum[r * filters + f]).collect()
}

/// A 3x3 "same" convolution without bias on the host: per group of images, one
/// `weight [filters, channels * 9] @ patches [channels * 9, images * h * w]` product, then
/// each image's maps copied to its place. Groups run in parallel.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`, weight: `[filters, channels, 3, 3]`, both row-major
/// - output: `[batch, filters, h, w]`, row-major
pub fn forward(x: &[f32], weight: &[f32], [batch, channels, h, w]: [usize; 4], filters: usize) -> Vec<f32> {
    let pixels = h * w;
    let rows = channels * 9;
    assert_eq!(x.len(), batch * channels * pixels, "input does not match its shape");
    assert_eq!(weight.len(), filters * rows, "weight does not match the input");
    let mut out = vec![0f32; batch * filters * pixels];
    if out.is_empty() {
        return out;
    }
    let per_group = images_per_group(batch, pixels);
    let bf16 = precision() == Precision::Bf16;
    out.par_chunks_mut(per_group * filters * pixels).zip(x.par_chunks(per_group * channels * pixels)).for_each(
        |(out, x)| {
            let images = x.len() / (channels * pixels);
            let columns = images * pixels;
            if bf16 {
                // The patch rows built one at a time, the maps written in place.
                let patches = |row: usize, out: &mut [f32]| patch_row(x, [images, channels, h, w], row, out);
                let left = Left::RowMajor { values: weight, stride: rows };
                matmul_bf16(
                    [filters, columns, rows],
                    left,
                    Right::Rows(&patches),
                    Out::Planes { values: out, pixels },
                    false,
                );
                return;
            }
            with_scratch([rows * columns, filters * columns], |patches, product| {
                patch_matrix(x, [images, channels, h, w], patches); // [rows, columns]
                // product [filters, columns] = weight [filters, rows] @ patches [rows, columns]
                // SAFETY: the strides and sizes describe the buffers above; no aliasing.
                unsafe {
                    gemm::gemm(
                        filters,
                        columns,
                        rows,
                        product.as_mut_ptr(),
                        1,
                        columns as isize,
                        false,
                        weight.as_ptr(),
                        1,
                        rows as isize,
                        patches.as_ptr(),
                        1,
                        columns as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (image, out) in out.chunks_exact_mut(filters * pixels).enumerate() {
                    for (f, plane) in out.chunks_exact_mut(pixels).enumerate() {
                        plane.copy_from_slice(&product[f * columns + image * pixels..][..pixels]);
                    }
                }
            });
        },
    );
    out
}

/// The zero-padded 3x3 patches of `images`, written over all of `patches` as
/// `[channels * 9, images * h * w]`: row `(channel, ky, kx)` holds, for every output pixel,
/// the input pixel it sees through that kernel tap.
fn patch_matrix(images: &[f32], [count, channels, h, w]: [usize; 4], patches: &mut [f32]) {
    let columns = count * h * w;
    debug_assert_eq!(patches.len(), channels * 9 * columns);
    for (row, out) in patches.chunks_exact_mut(columns).enumerate() {
        patch_row(images, [count, channels, h, w], row, out);
    }
}

/// Row `row` of [`patch_matrix`]'s matrix, written over all of `out` (`count * h * w`).
///
/// Tap `(ky, kx)` reads input pixel `p + (ky - 1) * w + (kx - 1)` for output pixel `p`: one
/// contiguous copy per image of the rows that stay inside the map, then zeros where the
/// window leaves it (the rows above or below, and the column the shift wrapped into).
fn patch_row(images: &[f32], [count, channels, h, w]: [usize; 4], row: usize, out: &mut [f32]) {
    let pixels = h * w;
    debug_assert_eq!(out.len(), count * pixels);
    let (channel, ky, kx) = (row / 9, row % 9 / 3, row % 3);
    let (dy, dx) = (ky as isize - 1, kx as isize - 1);
    let shift = dy * w as isize + dx;
    // Output rows y0..y1 read input rows inside the map.
    let (y0, y1) = (usize::from(dy < 0).min(h), if dy > 0 { h.saturating_sub(1) } else { h });
    let (p0, p1) = (y0 * w, y1 * w);
    // The pixels whose source index lies inside the plane.
    let lo = (p0 as isize).max(-shift).min(p1 as isize) as usize;
    let hi = (p1 as isize).min(pixels as isize - shift).max(lo as isize) as usize;
    for image in 0..count {
        let plane = &images[(image * channels + channel) * pixels..][..pixels];
        let out = &mut out[image * pixels..][..pixels];
        out[..lo].fill(0.0);
        if hi > lo {
            out[lo..hi].copy_from_slice(&plane[(lo as isize + shift) as usize..][..hi - lo]);
        }
        out[hi..].fill(0.0);
        let border = match dx {
            -1 => Some(0),
            1 => Some(w - 1),
            _ => None,
        };
        if let Some(x) = border {
            (y0..y1).for_each(|y| out[y * w + x] = 0.0);
        }
    }
}

thread_local! {
    /// Each thread's patch matrix and product buffers, kept between groups and calls: both
    /// are overwritten whole each time, so reusing them saves allocating and zeroing several
    /// megabytes per group.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with this thread's two scratch buffers at the given lengths (contents left from
/// earlier use: `f` must write before it reads).
fn with_scratch<R>(lengths: [usize; 2], f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|[a, b]| {
        a.resize(lengths[0], 0.0);
        b.resize(lengths[1], 0.0);
        f(a, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The output of `conv(x, w)` and the gradients of `sum(conv(x, w) * probe)` for `x`
    /// and `w`, through the extension (`ours`) or through burn's own convolution.
    fn outputs_and_gradients(x: Tensor<4>, weight: Tensor<4>, probe: Tensor<4>, ours: bool) -> [Vec<f32>; 3] {
        let x = x.require_grad();
        let weight = weight.require_grad();
        let out = if ours {
            Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(
                x.clone().into_dispatch(),
                weight.clone().into_dispatch(),
            ))
        } else {
            burn::tensor::module::conv2d(x.clone(), weight.clone(), None, same_3x3())
        };
        let grads = (out.clone() * probe).sum().backward();
        [values(out.inner()), values(x.grad(&grads).unwrap()), values(weight.grad(&grads).unwrap())]
    }

    /// Gradients of `sum(conv(x, w) * probe)` through the extension and through burn's
    /// own convolution, for an input that needs a gradient.
    #[test]
    fn gradients_match_burns_convolution() {
        let device = Device::flex().autodiff();
        // 150 images of 4x4 make two groups of patch columns or more (GROUP_COLUMNS / 16 = 128 at most each).
        for &[batch, channels, h, w, filters] in &[[3, 4, 5, 6, 7], [150, 3, 4, 4, 5], [2, 2, 1, 1, 3]] {
            let x = Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 1.0), &device);
            let weight = Tensor::<4>::random([filters, channels, 3, 3], Distribution::Normal(0.0, 1.0), &device);
            let probe = Tensor::<4>::random([batch, filters, h, w], Distribution::Normal(0.0, 1.0), &device);
            let run = |ours| outputs_and_gradients(x.clone(), weight.clone(), probe.clone(), ours);
            let (ours, theirs) = (run(true), run(false));
            assert!(max_abs_diff(&ours[0], &theirs[0]) < 1e-4, "forward differs for {batch}x{channels}x{h}x{w}");
            assert!(max_abs_diff(&ours[1], &theirs[1]) < 1e-4, "input gradient differs for {batch}x{channels}x{h}x{w}");
            let scale = theirs[2].iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(&ours[2], &theirs[2]) < 1e-5 * scale * batch as f32,
                "weight gradient differs for {batch}x{channels}x{h}x{w}"
            );
        }
    }

    /// An input without a gradient (the fixed first layer's output) gets none, and the
    /// weight still gets the same gradient.
    #[test]
    fn constant_input_gets_no_gradient() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<4>::random([5, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let out: Tensor<4> = Tensor::from_dispatch(<Dispatch as Conv3x3Backend>::conv3x3(
            x.clone().into_dispatch(),
            weight.clone().into_dispatch(),
        ));
        let grads = out.sum().backward();
        assert!(x.grad(&grads).is_none());
        let reference = burn::tensor::module::conv2d(x.clone(), weight.clone(), None, same_3x3()).sum().backward();
        assert!(max_abs_diff(&values(weight.grad(&grads).unwrap()), &values(weight.grad(&reference).unwrap())) < 1e-4);
    }

    /// Through the public wrapper, without autodiff (inference): the host forward pass
    /// against burn's layer, with a batch large enough to make several groups of images.
    #[test]
    fn wrapper_matches_the_layer_for_inference() {
        let device = Device::flex();
        let conv = burn::nn::conv::Conv2dConfig::new([5, 6], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let x = Tensor::<4>::random([300, 5, 3, 4], Distribution::Normal(0.0, 1.0), &device);
        let (ours, theirs) = (values(conv3x3(x.clone(), &conv)), values(conv.forward(x)));
        assert_eq!(ours.len(), theirs.len());
        assert!(max_abs_diff(&ours, &theirs) < 1e-4);
    }

    /// With bf16 products (on this thread), the extension's output and both gradients are
    /// burn's fp32 convolution of the operands rounded to bf16: within fp32 summation error
    /// of that, and measurably away from the unrounded fp32 result. Checks the routing of
    /// the forward, input-gradient and weight-gradient products alike.
    #[test]
    fn bf16_products_are_the_rounded_operands_convolution() {
        let device = Device::flex().autodiff();
        let (batch, channels, h, w, filters) = (150, 5, 4, 4, 33);
        let rounded = |t: Tensor<4>| {
            let dims = t.dims();
            let v: Vec<f32> = values(t).into_iter().map(super::super::bf16::round).collect();
            Tensor::<4>::from_data(TensorData::new(v, dims), &device)
        };
        let x = Tensor::<4>::random([batch, channels, h, w], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<4>::random([filters, channels, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let probe = Tensor::<4>::random([batch, filters, h, w], Distribution::Normal(0.0, 1.0), &device);
        let run = outputs_and_gradients;
        super::super::set_precision(Precision::Bf16);
        let ours = run(x.clone(), weight.clone(), probe.clone(), true);
        super::super::set_precision(Precision::Fp32);
        let reference = run(rounded(x.clone()), rounded(weight.clone()), rounded(probe.clone()), false);
        let fp32 = run(x, weight, probe, false);
        for (what, ((ours, reference), fp32)) in
            ["output", "input gradient", "weight gradient"].iter().zip(ours.iter().zip(&reference).zip(&fp32))
        {
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(max_abs_diff(ours, reference) < 1e-5 * scale, "{what}: not the rounded operands' product");
            assert!(max_abs_diff(ours, fp32) > 1e-4 * scale, "{what}: computed in fp32, not bf16");
        }
    }

    /// The weight gradient against its definition, summed by hand, on a case small enough
    /// to write out: one image, one channel, one filter, 2x2.
    #[test]
    fn weight_gradient_is_the_patch_sum() {
        let x = [1.0, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
        let dy = [1.0, 0.0, 0.0, 10.0]; // top-left and bottom-right outputs
        let grad = weight_gradient(&x, &dy, [1, 1, 2, 2], 1);
        // Output (0,0) sees the padded window centred on pixel (0,0); output (1,1) the one
        // centred on (1,1). Tap (ky, kx) reads pixel (y + ky - 1, x + kx - 1).
        #[rustfmt::skip]
        let expected = [
            0.0 + 10.0 * 1.0, 0.0 + 10.0 * 2.0, 0.0,
            0.0 + 10.0 * 3.0, 1.0 + 10.0 * 4.0, 2.0,
            0.0,              3.0,              4.0,
        ];
        assert_eq!(grad, expected);
    }
}
