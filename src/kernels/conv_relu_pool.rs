//! A 3x3 "same" convolution with bias, then ReLU, then 2x2 max pooling with stride 2: the
//! seed model's first three layers, routed by [`conv_relu_pool`].
//!
//! Through burn the three layers build a patch matrix from nine shifted copies of the
//! padded images, multiply, add the bias, apply the ReLU, copy the 32x32 maps to the host
//! to find each window's maximum, and gather; the backward pass scatters, masks and takes
//! two products. That was over half of the forward pass of a seed training step. On the
//! CPU the three run as one pass per image instead:
//!
//! - inference: [`conv3x3_relu_pool`], a host kernel that keeps each image's maps in cache
//!   (an AVX-512 row kernel where the CPU has one, a portable loop elsewhere);
//! - training: a burn backend extension whose forward pass is [`conv3x3_relu_pool_sources`],
//!   which also notes where every pooled value came from; the backward pass puts each pooled
//!   gradient back on that one pixel and takes the weight gradient over the sparse map
//!   ([`conv3x3_relu_pool_grads`]). The images get no gradient: they are never trainable.
//!
//! Every other device (and int8 weights while training) gets burn's layers: the
//! convolution as [`super::conv_of_constant`], ReLU, and [`super::max_pool_2x2`].

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

use burn::nn::pool::MaxPool2d;
use burn::tensor::activation::relu;
use rayon::prelude::*;

use super::{conv_of_constant, f32_values, flex_tensor, is_flex, max_pool_2x2};

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

/// `pool(relu(conv(images)))` for a 3x3 "same" convolution whose input needs no gradient
/// (the images): the host kernel for CPU inference, the extension for CPU training with f32
/// weights and a bias, burn's layers everywhere else.
///
/// # Shapes
/// - images: `[batch, channels, h, w]`, h and w even
/// - output: `[batch, filters, h / 2, w / 2]`
pub fn conv_relu_pool(images: Tensor<4>, conv: &Conv2d, pool: &MaxPool2d) -> Tensor<4> {
    let device = images.device();
    if is_flex(&device) && !device.is_autodiff() && conv.weight.dims()[2..] == [3, 3] {
        return host_inference(images, conv);
    }
    if fused_on(conv, &device) {
        return fused_training(images, conv);
    }
    max_pool_2x2(relu(conv_of_constant(images, conv)), pool)
}

/// Whether training runs `conv`'s layers through the extension on this device: on the CPU,
/// for a 3x3 convolution with a bias and f32 (not int8) weights.
fn fused_on(conv: &Conv2d, device: &Device) -> bool {
    is_flex(device)
        && conv.weight.dims()[2..] == [3, 3]
        && conv.bias.as_ref().is_some_and(|b| b.val().dtype() == DType::F32)
        && conv.weight.val().dtype() == DType::F32
}

/// The extension's forward pass (the caller checked [`fused_on`]).
fn fused_training(images: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let bias = conv.bias.as_ref().expect("`fused_on` checked the bias").val();
    let (pooled, _sources) = <Dispatch as ConvReluPoolBackend>::conv_relu_pool(
        images.detach().into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.into_dispatch(),
    );
    Tensor::from_dispatch(pooled)
}

/// CPU inference through [`conv3x3_relu_pool`]; int8 weights (`--quantize int8`) are read
/// as floats.
fn host_inference(images: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let dims = images.dims();
    let host = |t: TensorData| t.convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
    // `dequantize` is a no-op on fp32 weights.
    let weight = host(conv.weight.val().dequantize().into_data());
    let filters = conv.weight.dims()[0];
    let bias = match &conv.bias {
        Some(bias) => host(bias.val().dequantize().into_data()),
        None => vec![0.0; filters],
    };
    let pooled = conv3x3_relu_pool(&host(images.into_data()), dims, &weight, &bias);
    let [batch, _, h, w] = dims;
    Tensor::from_data(TensorData::new(pooled, [batch, filters, h / 2, w / 2]), &conv.weight.device())
}

// ---------------------------------------------------------------------------------------------
// The host kernel

/// A 3x3 "same" convolution with bias, then ReLU, then 2x2 max pooling with stride 2,
/// computed per image on the host in one pass (inference; training takes
/// [`conv3x3_relu_pool_sources`]).
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
    fused_images(images, dims, weight, bias, None)
}

/// [`conv3x3_relu_pool`] for training: also returns, for every pooled value, where it came
/// from, as the index into its image's `h * w` map of that filter, or -1 where the ReLU
/// zeroed it (the window's maximum was not positive, so no gradient flows back). Ties go to
/// the first maximum in row-major order, as in [`super::max_pool::gathered_max_pool_2x2`].
///
/// # Shapes
/// As [`conv3x3_relu_pool`]; the sources have the output's shape.
pub fn conv3x3_relu_pool_sources(
    images: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
) -> (Vec<f32>, Vec<i32>) {
    let [batch, _, h, w] = dims;
    let mut sources = vec![-1i32; batch * bias.len() * (h / 2) * (w / 2)];
    let out = fused_images(images, dims, weight, bias, Some(&mut sources));
    (out, sources)
}

/// Both forms above: the images in parallel, each through [`conv_image`], writing its
/// block of `sources` when given (sized like the output).
fn fused_images(
    images: &[f32],
    dims: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    sources: Option<&mut [i32]>,
) -> Vec<f32> {
    let [batch, channels, h, w] = dims;
    let filters = bias.len();
    assert_eq!(images.len(), batch * channels * h * w, "images do not match their shape");
    assert_eq!(weight.len(), filters * channels * 9, "weight does not match the bias");
    let per_image = filters * (h / 2) * (w / 2);
    let mut out = vec![0f32; batch * per_image];
    if out.is_empty() {
        return out;
    }
    let pairs = out.par_chunks_mut(per_image).zip(images.par_chunks(channels * h * w));
    let (isa, dims) = (isa(), [channels, h, w]);
    match sources {
        None => pairs.for_each(|(out, image)| conv_image(isa, image, dims, weight, bias, out, None)),
        Some(sources) => pairs
            .zip(sources.par_chunks_mut(per_image))
            .for_each(|((out, image), sources)| conv_image(isa, image, dims, weight, bias, out, Some(sources))),
    }
    out
}

/// The weight and bias gradients of [`conv3x3_relu_pool`], given the `sources` its training
/// form returned and the gradient with respect to its output: each pooled value's gradient
/// goes back to the one pixel it came from (none where the ReLU zeroed it), and the
/// convolution's weight gradient is taken over that sparse map with
/// [`super::conv3x3::weight_gradient`].
///
/// # Shapes
/// - images: `[batch, channels, h, w]`; sources and pooled_grad: `[batch, filters, h / 2, w / 2]`
/// - output: weight gradient `[filters, channels, 3, 3]`, bias gradient `[filters]`
pub fn conv3x3_relu_pool_grads(
    images: &[f32],
    dims: [usize; 4],
    sources: &[i32],
    pooled_grad: &[f32],
    filters: usize,
) -> (Vec<f32>, Vec<f32>) {
    let [batch, _, h, w] = dims;
    let pixels = h * w;
    let pooled = (h / 2) * (w / 2);
    assert_eq!(sources.len(), batch * filters * pooled, "sources do not match the images");
    assert_eq!(pooled_grad.len(), sources.len(), "output gradient does not match the sources");
    let mut map_grad = vec![0f32; batch * filters * pixels];
    let mut bias_grad = vec![0f32; filters];
    if pooled == 0 {
        return (vec![0f32; filters * dims[1] * 9], bias_grad);
    }
    map_grad.par_chunks_mut(pixels).zip(sources.par_chunks(pooled).zip(pooled_grad.par_chunks(pooled))).for_each(
        |(map, (sources, grads))| {
            for (&source, &grad) in sources.iter().zip(grads) {
                if let Ok(source) = usize::try_from(source) {
                    map[source] = grad;
                }
            }
        },
    );
    for (plane, (sources, grads)) in sources.chunks_exact(pooled).zip(pooled_grad.chunks_exact(pooled)).enumerate() {
        let live = sources.iter().zip(grads).filter(|(s, _)| **s >= 0).map(|(_, g)| g).sum::<f32>();
        bias_grad[plane % filters] += live;
    }
    (super::conv3x3::weight_gradient(images, &map_grad, dims, filters), bias_grad)
}

/// The compilations of [`conv_image_body`]: with AVX-512 or AVX2 row pairs (x86-64), or
/// portable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

/// The compilations this CPU runs, widest first; always ends with the portable one.
fn available_isas() -> Vec<Isa> {
    #[cfg(target_arch = "x86_64")]
    let detected = [
        (std::arch::is_x86_feature_detected!("avx512f"), Isa::Avx512),
        (std::arch::is_x86_feature_detected!("avx2"), Isa::Avx2),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let detected: [(bool, Isa); 0] = [];
    detected.into_iter().filter_map(|(has, isa)| has.then_some(isa)).chain([Isa::Portable]).collect()
}

/// The widest compilation this CPU runs: the one the kernel takes.
fn isa() -> Isa {
    available_isas()[0]
}

/// What [`conv_relu_pool`]'s host kernel runs on this CPU, for `classify bench`.
pub(super) fn path() -> &'static str {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => "host kernel, AVX-512 rows",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "host kernel, AVX2 rows",
        Isa::Portable => "host kernel, portable rows",
    }
}

/// [`conv_image_body`] compiled for `isa`, which must be one of [`available_isas`].
fn conv_image(
    isa: Isa,
    image: &[f32],
    dims: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    sources: Option<&mut [i32]>,
) {
    match isa {
        // SAFETY: callers pass one of `available_isas`, which lists Avx512 only where
        // AVX-512F was detected on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { conv_image_avx512(image, dims, weight, bias, out, sources) },
        // SAFETY: as above; Avx2 only where AVX2 was detected.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { conv_image_avx2(image, dims, weight, bias, out, sources) },
        Isa::Portable => conv_image_body(image, dims, weight, bias, out, sources, None),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn conv_image_avx512(
    image: &[f32],
    dims: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    sources: Option<&mut [i32]>,
) {
    conv_image_body(image, dims, weight, bias, out, sources, Some(conv_row_pair_avx512))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn conv_image_avx2(
    image: &[f32],
    dims: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    sources: Option<&mut [i32]>,
) {
    conv_image_body(image, dims, weight, bias, out, sources, None)
}

/// Filters whose maps a row kernel accumulates together, sharing each load of the image.
const FILTER_BLOCK: usize = 4;
/// The image width the row kernel is built for (CIFAR's 32).
const ROW: usize = 32;

/// A row kernel: two output rows (`y`, `y + 1`) of [`FILTER_BLOCK`] filters, from the
/// zero-padded image (`[channels, ROW + 2 + ..., ROW + 2]`, row pitch `ROW + 2`), the
/// block's weights tap-major (`taps x FILTER_BLOCK`) and biases, into `rows`
/// (`[filter][row][pixel]`).
type RowPairKernel =
    unsafe fn(&[f32], usize, &[[f32; FILTER_BLOCK]], [f32; FILTER_BLOCK], usize, &mut [[[f32; ROW]; 2]; FILTER_BLOCK]);

/// The row kernel in AVX-512: a 32-pixel row is two registers, so the block's two rows
/// of four filters are 16 accumulators; each of the 27 taps loads its four shifted image
/// half-rows once and does 16 fused multiply-adds with them.
///
/// # Safety
/// The CPU must have AVX-512F; `padded` must hold `channels` planes of `padded_height`
/// rows of `ROW + 2` floats with `y + 3 < padded_height`, and `taps` must be `channels * 9`
/// long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_row_pair_avx512(
    padded: &[f32],
    padded_height: usize,
    taps: &[[f32; FILTER_BLOCK]],
    bias: [f32; FILTER_BLOCK],
    y: usize,
    rows: &mut [[[f32; ROW]; 2]; FILTER_BLOCK],
) {
    use std::arch::x86_64::*;
    let wp = ROW + 2;
    let plane = padded_height * wp;
    assert!(y + 3 < padded_height && padded.len() >= taps.len() / 9 * plane, "row pair outside the padded image");
    let mut acc = [[[_mm512_setzero_ps(); 2]; 2]; FILTER_BLOCK];
    for (k, filter) in acc.iter_mut().enumerate() {
        *filter = [[_mm512_set1_ps(bias[k]); 2]; 2];
    }
    for (t, tap) in taps.iter().enumerate() {
        let (c, dy, dx) = (t / 9, t % 9 / 3, t % 3);
        // SAFETY: the assert above keeps rows y + dy and y + dy + 1, 32 floats from dx <= 2,
        // inside plane c.
        let src = unsafe { padded.as_ptr().add(c * plane + (y + dy) * wp + dx) };
        let s = unsafe {
            [
                [_mm512_loadu_ps(src), _mm512_loadu_ps(src.add(16))],
                [_mm512_loadu_ps(src.add(wp)), _mm512_loadu_ps(src.add(wp + 16))],
            ]
        };
        for (filter, &wv) in acc.iter_mut().zip(tap) {
            let wv = _mm512_set1_ps(wv);
            for (row, s) in filter.iter_mut().zip(&s) {
                row[0] = _mm512_fmadd_ps(wv, s[0], row[0]);
                row[1] = _mm512_fmadd_ps(wv, s[1], row[1]);
            }
        }
    }
    for (filter, out) in acc.iter().zip(rows.iter_mut()) {
        for (row, out) in filter.iter().zip(out.iter_mut()) {
            // SAFETY: each output row is 32 floats.
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr(), row[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(16), row[1]);
            }
        }
    }
}

/// 2x2 max pooling with the ReLU folded in, of one pair of map rows (`top` is row `y` of a
/// map `w` wide, `bottom` row `y + 1`), into `out`; and, when `sources` is not empty,
/// where each maximum came from in the map (ties to the first in row-major order) or -1
/// where it is not positive. Branch-free, so that it vectorises: the comparisons are on
/// arbitrary data and would mispredict half the time.
#[inline(always)]
fn pool_rows(top: &[f32], bottom: &[f32], y: usize, w: usize, out: &mut [f32], sources: &mut [i32]) {
    let (top, bottom) = (&top[..2 * out.len()], &bottom[..2 * out.len()]);
    if sources.is_empty() {
        for (px, value) in out.iter_mut().enumerate() {
            let best = top[2 * px].max(top[2 * px + 1]).max(bottom[2 * px]).max(bottom[2 * px + 1]);
            *value = best.max(0.0);
        }
        return;
    }
    let wide = w as i32;
    for ((px, value), source) in out.iter_mut().enumerate().zip(&mut sources[..]) {
        let mut best = top[2 * px];
        let mut offset = 0;
        for (v, o) in [(top[2 * px + 1], 1), (bottom[2 * px], wide), (bottom[2 * px + 1], wide + 1)] {
            let better = v > best;
            best = if better { v } else { best };
            offset = if better { o } else { offset };
        }
        *value = if best > 0.0 { best } else { 0.0 };
        *source = if best > 0.0 { (y * w + 2 * px) as i32 + offset } else { -1 };
    }
}

/// One image: each filter's map is accumulated from the zero-padded image, then pooled with
/// the ReLU folded in (`max(relu(a), ...) = relu(max(a, ...))`), noting each maximum's
/// position in `sources` when given.
///
/// With a row kernel (32-pixel-wide images, filters in blocks of [`FILTER_BLOCK`]), two
/// rows of a block's maps are built at a time in registers and pooled at once. Otherwise
/// each map is accumulated whole, tap by tap (rows are contiguous, so the loop vectorises).
#[inline(always)]
fn conv_image_body(
    image: &[f32],
    [channels, h, w]: [usize; 3],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
    mut sources: Option<&mut [i32]>,
    kernel: Option<RowPairKernel>,
) {
    let filters = bias.len();
    let (hp, wp) = (h + 2, w + 2);
    let mut padded = vec![0f32; channels * hp * wp + 16];
    for c in 0..channels {
        for y in 0..h {
            let row = c * hp * wp + (y + 1) * wp + 1;
            padded[row..row + w].copy_from_slice(&image[(c * h + y) * w..][..w]);
        }
    }
    let taps = channels * 9;
    let (ph, pw) = (h / 2, w / 2);
    if let Some(kernel) = kernel.filter(|_| w == ROW && filters.is_multiple_of(FILTER_BLOCK)) {
        let mut rows = [[[0f32; ROW]; 2]; FILTER_BLOCK];
        for first in (0..filters).step_by(FILTER_BLOCK) {
            let mut block_weights = vec![[0f32; FILTER_BLOCK]; taps];
            for (k, f) in (first..first + FILTER_BLOCK).enumerate() {
                for (t, tap) in block_weights.iter_mut().enumerate() {
                    tap[k] = weight[f * taps + t];
                }
            }
            let block_bias = std::array::from_fn(|k| bias[first + k]);
            for py in 0..ph {
                // SAFETY: the caller chose a kernel its CPU runs; `padded` has `hp` rows of
                // `ROW + 2` per plane and 2 * py + 3 < hp.
                unsafe { kernel(&padded, hp, &block_weights, block_bias, 2 * py, &mut rows) };
                for (k, rows) in rows.iter().enumerate() {
                    let at = (first + k) * ph * pw + py * pw;
                    let sources = sources.as_deref_mut().map_or(&mut [][..], |s| &mut s[at..at + pw]);
                    pool_rows(&rows[0], &rows[1], 2 * py, w, &mut out[at..at + pw], sources);
                }
            }
        }
        return;
    }
    let mut map = vec![0f32; h * w];
    for (f, out) in out.chunks_exact_mut(ph * pw).enumerate() {
        map.fill(bias[f]);
        for t in 0..taps {
            let (c, dy, dx) = (t / 9, t % 9 / 3, t % 3);
            let wv = weight[f * taps + t];
            for y in 0..h {
                let src = &padded[c * hp * wp + (y + dy) * wp + dx..][..w];
                for (m, s) in map[y * w..][..w].iter_mut().zip(src) {
                    *m += wv * s;
                }
            }
        }
        for py in 0..ph {
            let at = f * ph * pw + py * pw;
            let sources = sources.as_deref_mut().map_or(&mut [][..], |s| &mut s[at..at + pw]);
            let rows = &map[2 * py * w..][..2 * w];
            pool_rows(&rows[..w], &rows[w..], 2 * py, w, &mut out[py * pw..][..pw], sources);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::super::max_pool::gathered_max_pool_2x2;
    use super::*;
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
            let ours = fused_training(images.clone(), &conv);
            let layers = gathered_max_pool_2x2(relu(conv.forward(images)));
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
        let weight = super::super::quantize_tensor(conv.weight.val());
        let quantized = Conv2d { weight: burn::module::Param::from_tensor(weight), ..conv };
        assert!(!fused_on(&quantized, &device));
    }

    /// The inference form at 32x32 with 8 filters (the register-blocked row kernel, where
    /// the CPU has one) and at 6x4 with 8 filters (the plain loop).
    #[test]
    fn fused_conv_relu_pool_matches_the_layers_one_by_one() {
        let device = Device::flex();
        device.seed(5);
        for [h, w] in [[32, 32], [6, 4]] {
            let conv = Conv2dConfig::new([3, 8], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
            let bias = Tensor::random([8], Distribution::Normal(0.0, 0.5), &device);
            let conv = Conv2d { bias: Some(burn::module::Param::from_tensor(bias)), ..conv };
            let images = Tensor::<4>::random([3, 3, h, w], Distribution::Default, &device);
            let expected = gathered_max_pool_2x2(relu(conv.forward(images.clone())));
            let values = |t: Tensor<4>| t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
            let ours = conv3x3_relu_pool(
                &values(images),
                [3, 3, h, w],
                &values(conv.weight.val()),
                &conv.bias.as_ref().unwrap().val().into_data().try_into_vec::<f32>().unwrap(),
            );
            let expected = values(expected);
            assert_eq!(ours.len(), 3 * 8 * (h / 2) * (w / 2));
            let worst = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "largest difference {worst} at {h}x{w}");
            assert!(expected.contains(&0.0) && expected.iter().any(|&v| v > 0.0), "ReLU must matter here");
        }
    }

    /// Each vector compilation this CPU runs gives the portable one's pooled maps and
    /// arg-max sources: at 32x32 with 8 filters (two blocks of the register-blocked row
    /// kernel) and at 6x4 (the plain loop).
    #[test]
    fn every_compilation_matches_the_portable_one() {
        let mut s = 7u32;
        let mut next = || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let (channels, filters) = (3, 8);
        for [h, w] in [[32, 32], [6, 4]] {
            let image: Vec<f32> = (0..channels * h * w).map(|_| next()).collect();
            let weight: Vec<f32> = (0..filters * channels * 9).map(|_| next()).collect();
            let bias: Vec<f32> = (0..filters).map(|_| next() * 0.2).collect();
            let per_image = filters * (h / 2) * (w / 2);
            let run = |isa: Isa| {
                let (mut out, mut sources) = (vec![0f32; per_image], vec![0i32; per_image]);
                conv_image(isa, &image, [channels, h, w], &weight, &bias, &mut out, Some(&mut sources));
                (out, sources)
            };
            let portable = run(Isa::Portable);
            assert!(portable.0.contains(&0.0) && portable.0.iter().any(|&v| v > 0.0), "ReLU must matter here");
            for isa in available_isas() {
                let (out, sources) = run(isa);
                let worst = out.iter().zip(&portable.0).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "{isa:?} differs by {worst} at {h}x{w}");
                assert_eq!(sources, portable.1, "{isa:?} pools from other pixels at {h}x{w}");
            }
        }
    }

    /// The routing function gives the three layers' values on each of its paths: the host
    /// kernel (CPU inference), the extension (CPU training), and burn's layers (int8 weights
    /// while training, the path every other device takes).
    #[test]
    fn every_route_computes_the_layers() {
        use burn::nn::pool::MaxPool2dConfig;
        let pool = MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init();
        for device in [Device::flex(), Device::flex().autodiff()] {
            device.seed(13);
            let conv = Conv2dConfig::new([3, 8], [3, 3]).with_padding(PaddingConfig2d::Same).init(&device);
            let bias = Tensor::random([8], Distribution::Normal(0.0, 0.5), &device);
            let conv = Conv2d { bias: Some(burn::module::Param::from_tensor(bias)), ..conv };
            let int8 = Conv2d {
                weight: burn::module::Param::from_tensor(super::super::quantize_tensor(conv.weight.val())),
                ..conv.clone()
            };
            for conv in [conv, int8] {
                let images = Tensor::<4>::random([2, 3, 8, 6], Distribution::Default, &device);
                let float =
                    Conv2d { weight: burn::module::Param::from_tensor(conv.weight.val().dequantize()), ..conv.clone() };
                let layers = pool.forward(relu(float.forward(images.clone())));
                let routed = conv_relu_pool(images, &conv, &pool);
                assert!(max_abs_diff(routed, layers) < 1e-4, "autodiff {}", device.is_autodiff());
            }
        }
    }
}
