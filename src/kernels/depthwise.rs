//! A depthwise convolution (one filter per channel: `groups == channels == filters`, no
//! bias), the middle layer of every EfficientNet and MobileNet block, as a burn backend
//! extension with both gradients.
//!
//! burn Flex has a fast forward pass for this layer but takes the backward pass through
//! burn's generic code: the weight gradient is a loop over the groups, one small
//! convolution per channel (hundreds per layer), and the input gradient a grouped
//! transposed convolution. An EfficientNet-Lite0 training step at 224 px then took more
//! than 25 s for 32 images. The three sums are short loops over one channel's plane:
//!
//! ```text
//! y[c, oy, ox]        = sum over (ky, kx) of w[c, ky, kx] * x[c, oy*s + ky - top, ox*s + kx - left]
//! dx[c, iy, ix]      += w[c, ky, kx] * dy[c, oy, ox]            for the same index pairs
//! dw[c, ky, kx]       = sum over (image, oy, ox) of dy[c, oy, ox] * x[c, oy*s + ky - top, ox*s + kx - left]
//! ```
//!
//! (`x` outside the image is zero). Each is written as rows: for an output row and a tap
//! `(ky, kx)`, the output columns whose input column falls inside the image form one
//! range ([`Geometry::span`]), and over that range the work is an element-wise
//! multiply-add between a row of one tensor and a row (every `s`-th element) of the other.
//! The weight gradient keeps one row of partial sums per tap instead of reducing each row
//! to a number, so that it too is element-wise and vectorises without reordering the sum.
//!
//! The same row code is compiled twice: portable, and with AVX-512 enabled
//! ([`Isa`]); the faster is chosen at run time and the tests hold the two to each other and
//! to burn's own `conv2d` and its gradients. Planes run in parallel (images x channels for
//! the convolution and the input gradient, channels for the weight gradient).

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;
use std::ops::Range;

use super::{f32_values, flex_tensor, is_flex};

/// Where a depthwise convolution's taps fall: the input and output sizes, the square kernel,
/// the stride and the zero padding before the first row and column (the padding after them
/// follows from the sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub top: usize,
    pub left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl Geometry {
    /// The geometry of `conv` on an input of `dims`, when it is a depthwise convolution this
    /// kernel computes (square kernel and stride, no dilation, no bias, one filter per
    /// channel); `None` otherwise.
    pub fn of(conv: &Conv2d, dims: [usize; 4]) -> Option<Geometry> {
        let [batch, channels, h, w] = dims;
        let [filters, per_group, kh, kw] = conv.weight.dims();
        let [sy, sx] = conv.stride;
        let plain = conv.bias.is_none() && conv.dilation == [1, 1] && kh == kw && sy == sx && sy > 0;
        if !plain || conv.groups != channels || filters != channels || per_group != 1 {
            return None;
        }
        let (kernel, stride) = (kh, sy);
        let ((top, bottom), (left, right)) = match conv.padding {
            PaddingConfig2d::Valid => ((0, 0), (0, 0)),
            PaddingConfig2d::Same => (same_padding(kernel, stride, h), same_padding(kernel, stride, w)),
            PaddingConfig2d::Explicit(top, left, bottom, right) => ((top, bottom), (left, right)),
        };
        let out = |size: usize, before: usize, after: usize| {
            (size + before + after).checked_sub(kernel).map(|span| span / stride + 1)
        };
        Some(Geometry {
            batch,
            channels,
            h,
            w,
            kernel,
            stride,
            top,
            left,
            out_h: out(h, top, bottom)?,
            out_w: out(w, left, right)?,
        })
    }

    fn input_plane(&self) -> usize {
        self.h * self.w
    }

    fn output_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    fn taps(&self) -> usize {
        self.kernel * self.kernel
    }

    /// The output indices `o` (of `0..out`) whose input index `o * stride + tap - pad` lies
    /// in `0..size`: one range, since the input index grows with `o`.
    fn span(&self, tap: usize, pad: usize, size: usize, out: usize) -> Range<usize> {
        let s = self.stride;
        let first = pad.saturating_sub(tap).div_ceil(s);
        let end = match (size + pad).checked_sub(tap + 1) {
            Some(last) => (last / s + 1).min(out),
            None => 0,
        };
        first..end.max(first)
    }
}

/// TensorFlow's `SAME` padding, as burn computes it: the output is `ceil(size / stride)`
/// and any odd pixel of padding goes after the image.
fn same_padding(kernel: usize, stride: usize, size: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = if out > 0 { ((out - 1) * stride + kernel).saturating_sub(size) } else { 0 };
    (total / 2, total - total / 2)
}

/// The extension: the convolution and its two gradients.
#[backend_extension(Flex, Autodiff)]
pub trait DepthwiseBackend: Backend {
    /// # Shapes
    /// - x: `[batch, channels, h, w]`, weight: `[channels, 1, k, k]`
    /// - output: `[batch, channels, out_h, out_w]`
    fn depthwise(x: FloatTensor<Self>, weight: FloatTensor<Self>, geometry: Geometry) -> FloatTensor<Self>;

    /// The gradient with respect to the input, `[batch, channels, h, w]`, given the gradient
    /// with respect to the output.
    fn depthwise_x_grad(
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;

    /// The gradient with respect to the weight, `[channels, 1, k, k]`.
    fn depthwise_weight_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        geometry: Geometry,
    ) -> FloatTensor<Self>;
}

impl DepthwiseBackend for Flex {
    fn depthwise(x: FlexTensor, weight: FlexTensor, g: Geometry) -> FlexTensor {
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let out = forward(f32_values(&x), f32_values(&weight), g, Isa::detect());
        flex_tensor(out, [g.batch, g.channels, g.out_h, g.out_w])
    }

    fn depthwise_x_grad(weight: FlexTensor, output_grad: FlexTensor, g: Geometry) -> FlexTensor {
        let (weight, output_grad) = (weight.to_contiguous(), output_grad.to_contiguous());
        let grad = input_gradient(f32_values(&weight), f32_values(&output_grad), g, Isa::detect());
        flex_tensor(grad, [g.batch, g.channels, g.h, g.w])
    }

    fn depthwise_weight_grad(x: FlexTensor, output_grad: FlexTensor, g: Geometry) -> FlexTensor {
        let (x, output_grad) = (x.to_contiguous(), output_grad.to_contiguous());
        let grad = weight_gradient(f32_values(&x), f32_values(&output_grad), g, Isa::detect());
        flex_tensor(grad, [g.channels, 1, g.kernel, g.kernel])
    }
}

#[derive(Debug)]
struct DepthwiseBackward;

impl<B: Backend + DepthwiseBackend> Backward<B, 2> for DepthwiseBackward {
    /// The checkpointed input and weight, and the geometry.
    type State = (NodeId, NodeId, Geometry);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, geometry) = ops.state;
        if let Some(node) = node_x {
            let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
            grads.register::<B>(node.id, B::depthwise_x_grad(weight, grad.clone(), geometry));
        }
        if let Some(node) = node_weight {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
            grads.register::<B>(node.id, B::depthwise_weight_grad(x, grad, geometry));
        }
    }
}

impl<B: Backend + DepthwiseBackend, C: CheckpointStrategy> DepthwiseBackend for Autodiff<B, C> {
    fn depthwise(x: FloatTensor<Self>, weight: FloatTensor<Self>, geometry: Geometry) -> FloatTensor<Self> {
        match DepthwiseBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = B::depthwise(x.into_primitive(), weight.into_primitive(), geometry);
                prep.finish((x_state, weight_state, geometry), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::depthwise(x.into_primitive(), weight.into_primitive(), geometry))
            }
        }
    }

    fn depthwise_x_grad(
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _geometry: Geometry,
    ) -> FloatTensor<Self> {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }

    fn depthwise_weight_grad(
        _x: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
        _geometry: Geometry,
    ) -> FloatTensor<Self> {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }
}

/// `conv.forward(x)`: on the CPU, for an f32 depthwise convolution ([`Geometry::of`]),
/// through the extension above; otherwise (other devices, grouped convolutions that are not
/// depthwise, a bias, quantized weights) through burn's `conv2d`.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`
/// - output: `[batch, channels, out_h, out_w]`
pub fn depthwise_conv(x: Tensor<4>, conv: &Conv2d) -> Tensor<4> {
    let weight = conv.weight.val();
    let geometry = Geometry::of(conv, x.dims());
    let f32_only = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    match geometry {
        Some(geometry) if f32_only && is_flex(&x.device()) => Tensor::from_dispatch(
            <Dispatch as DepthwiseBackend>::depthwise(x.into_dispatch(), weight.into_dispatch(), geometry),
        ),
        _ => conv.forward(x),
    }
}

/// Which compilation of the row code runs: portable, or with AVX-512 (x86-64 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// The fastest this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        Isa::Portable
    }

    /// The compilation, for `classify bench`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "row loops, portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "row loops, AVX-512",
        }
    }
}

/// Defines `$name(isa, args...)`, which runs the `#[inline(always)]` function `$body` compiled
/// for `isa`: `$body` inlined into a portable function, and into one with AVX-512 enabled
/// (`$avx512`), so the same source is vectorised for 512-bit registers where the CPU has them.
macro_rules! compiled_twice {
    ($name:ident, $avx512:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name(isa: Isa, $($arg: $ty),*) {
            match isa {
                Isa::Portable => $body($($arg),*),
                // SAFETY: `Isa::Avx512` is only made where AVX-512F was detected (`Isa::detect`,
                // and the tests check before they ask for it).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { $avx512($($arg),*) },
            }
        }

        /// # Safety
        /// The CPU must have AVX-512F.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")]
        unsafe fn $avx512($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

compiled_twice!(forward_plane, forward_plane_avx512, forward_plane_body, (g: &Geometry, rows: &[TapRow], taps: &[f32], x: &[f32], out: &mut [f32]));
compiled_twice!(input_plane, input_plane_avx512, input_plane_body, (g: &Geometry, rows: &[TapRow], taps: &[f32], dy: &[f32], dx: &mut [f32]));
compiled_twice!(weight_channel, weight_channel_avx512, weight_channel_body, (g: &Geometry, rows: &[TapRow], x: &[f32], dy: &[f32], channel: usize, partial: &mut [f32]));

/// `out[i] += a * src[offset + i * stride]` for every `i` of `out`.
#[inline(always)]
fn axpy_strided(out: &mut [f32], a: f32, src: &[f32], offset: usize, stride: usize) {
    let n = out.len();
    if stride == 1 {
        for (o, s) in out.iter_mut().zip(&src[offset..offset + n]) {
            *o += a * s;
        }
    } else {
        let src = &src[offset..offset + (out.len().max(1) - 1) * stride + 1];
        for (i, o) in out.iter_mut().enumerate() {
            *o += a * src[i * stride];
        }
    }
}

/// `out[offset + i * stride] += a * src[i]` for every `i` of `src`.
#[inline(always)]
fn scatter_strided(out: &mut [f32], a: f32, src: &[f32], offset: usize, stride: usize) {
    if stride == 1 {
        for (o, s) in out[offset..offset + src.len()].iter_mut().zip(src) {
            *o += a * s;
        }
    } else {
        let out = &mut out[offset..offset + (src.len().max(1) - 1) * stride + 1];
        for (i, s) in src.iter().enumerate() {
            out[i * stride] += a * s;
        }
    }
}

/// `acc[i] += a[i] * src[offset + i * stride]` for every `i` of `acc`.
#[inline(always)]
fn multiply_add_strided(acc: &mut [f32], a: &[f32], src: &[f32], offset: usize, stride: usize) {
    let n = acc.len();
    if stride == 1 {
        for ((o, a), s) in acc.iter_mut().zip(a).zip(&src[offset..offset + n]) {
            *o += a * s;
        }
    } else {
        let src = &src[offset..offset + (acc.len().max(1) - 1) * stride + 1];
        for (i, (o, a)) in acc.iter_mut().zip(a).enumerate() {
            *o += a * src[i * stride];
        }
    }
}

/// One output row's work for one tap: the tap (`ky * k + kx`), the output row `oy` and the
/// input row `iy` it reads, the output columns whose input column lies inside the image,
/// and the first of those input columns.
#[derive(Clone, Debug)]
struct TapRow {
    tap: usize,
    oy: usize,
    iy: usize,
    columns: Range<usize>,
    first: usize,
}

/// Every (output row, tap) pair with its input row inside the image and at least one output
/// column reading inside it: the same for every plane of a geometry.
fn tap_rows(g: &Geometry) -> Vec<TapRow> {
    let columns: Vec<Range<usize>> = (0..g.kernel).map(|kx| g.span(kx, g.left, g.w, g.out_w)).collect();
    let mut rows = Vec::new();
    for ky in 0..g.kernel {
        for oy in g.span(ky, g.top, g.h, g.out_h) {
            for (kx, span) in columns.iter().enumerate().filter(|(_, span)| !span.is_empty()) {
                let (iy, first) = (oy * g.stride + ky - g.top, span.start * g.stride + kx - g.left);
                rows.push(TapRow { tap: ky * g.kernel + kx, oy, iy, columns: span.clone(), first });
            }
        }
    }
    rows
}

fn check_lengths(g: &Geometry, x: usize, weight: Option<usize>, out: usize) {
    assert_eq!(x, g.batch * g.channels * g.input_plane(), "input does not match its geometry");
    assert_eq!(out, g.batch * g.channels * g.output_plane(), "output does not match the geometry");
    if let Some(weight) = weight {
        assert_eq!(weight, g.channels * g.taps(), "weight does not match the geometry");
    }
}

/// The convolution.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`, weight: `[channels, 1, k, k]`, row-major
/// - output: `[batch, channels, out_h, out_w]`, row-major
pub fn forward(x: &[f32], weight: &[f32], g: Geometry, isa: Isa) -> Vec<f32> {
    let mut out = vec![0f32; g.batch * g.channels * g.output_plane()];
    check_lengths(&g, x.len(), Some(weight.len()), out.len());
    if g.output_plane() == 0 || g.input_plane() == 0 {
        return out;
    }
    let rows = tap_rows(&g);
    out.par_chunks_mut(g.output_plane()).zip(x.par_chunks(g.input_plane())).enumerate().for_each(
        |(plane, (out, x))| forward_plane(isa, &g, &rows, &weight[plane % g.channels * g.taps()..][..g.taps()], x, out),
    );
    out
}

/// The gradient with respect to the input: every output gradient sent back to the input
/// pixels it was computed from.
///
/// # Shapes
/// - weight: `[channels, 1, k, k]`, output_grad: `[batch, channels, out_h, out_w]`, row-major
/// - output: `[batch, channels, h, w]`, row-major
pub fn input_gradient(weight: &[f32], output_grad: &[f32], g: Geometry, isa: Isa) -> Vec<f32> {
    let mut dx = vec![0f32; g.batch * g.channels * g.input_plane()];
    check_lengths(&g, dx.len(), Some(weight.len()), output_grad.len());
    if g.output_plane() == 0 || g.input_plane() == 0 {
        return dx;
    }
    let rows = tap_rows(&g);
    dx.par_chunks_mut(g.input_plane()).zip(output_grad.par_chunks(g.output_plane())).enumerate().for_each(
        |(plane, (dx, dy))| input_plane(isa, &g, &rows, &weight[plane % g.channels * g.taps()..][..g.taps()], dy, dx),
    );
    dx
}

/// The gradient with respect to the weight: per channel, the sum over images and output
/// pixels of the output gradient times the input pixel each tap saw. Each tap keeps a row
/// of `out_w` partial sums over every row and image of the channel, summed at the end.
///
/// # Shapes
/// - x: `[batch, channels, h, w]`, output_grad: `[batch, channels, out_h, out_w]`, row-major
/// - output: `[channels, 1, k, k]`, row-major
pub fn weight_gradient(x: &[f32], output_grad: &[f32], g: Geometry, isa: Isa) -> Vec<f32> {
    check_lengths(&g, x.len(), None, output_grad.len());
    let mut dw = vec![0f32; g.channels * g.taps()];
    if g.output_plane() == 0 || g.input_plane() == 0 {
        return dw;
    }
    let rows = tap_rows(&g);
    dw.par_chunks_mut(g.taps()).enumerate().for_each(|(channel, dw)| {
        let mut partial = vec![0f32; g.taps() * g.out_w];
        weight_channel(isa, &g, &rows, x, output_grad, channel, &mut partial);
        for (tap, sums) in dw.iter_mut().zip(partial.chunks_exact(g.out_w)) {
            *tap = sums.iter().sum();
        }
    });
    dw
}

/// One plane of [`forward`]: `taps` the channel's `k x k` weights.
#[inline(always)]
fn forward_plane_body(g: &Geometry, rows: &[TapRow], taps: &[f32], x: &[f32], out: &mut [f32]) {
    for r in rows {
        let row = &mut out[r.oy * g.out_w..][..g.out_w];
        axpy_strided(&mut row[r.columns.clone()], taps[r.tap], &x[r.iy * g.w..][..g.w], r.first, g.stride);
    }
}

/// One plane of [`input_gradient`].
#[inline(always)]
fn input_plane_body(g: &Geometry, rows: &[TapRow], taps: &[f32], dy: &[f32], dx: &mut [f32]) {
    for r in rows {
        let row = &mut dx[r.iy * g.w..][..g.w];
        let grad = &dy[r.oy * g.out_w..][..g.out_w];
        scatter_strided(row, taps[r.tap], &grad[r.columns.clone()], r.first, g.stride);
    }
}

/// One channel of [`weight_gradient`], over every image: adds into `partial` (`k x k` rows
/// of `out_w` sums).
#[inline(always)]
fn weight_channel_body(
    g: &Geometry,
    rows: &[TapRow],
    x: &[f32],
    output_grad: &[f32],
    channel: usize,
    partial: &mut [f32],
) {
    for image in 0..g.batch {
        let plane = image * g.channels + channel;
        let x = &x[plane * g.input_plane()..][..g.input_plane()];
        let dy = &output_grad[plane * g.output_plane()..][..g.output_plane()];
        for r in rows {
            let sums = &mut partial[r.tap * g.out_w..][..g.out_w];
            let grad = &dy[r.oy * g.out_w..][..g.out_w];
            let row = &x[r.iy * g.w..][..g.w];
            multiply_add_strided(&mut sums[r.columns.clone()], &grad[r.columns.clone()], row, r.first, g.stride);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_abs_diff;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn depthwise(channels: usize, kernel: usize, stride: usize, padding: PaddingConfig2d, device: &Device) -> Conv2d {
        Conv2dConfig::new([channels, channels], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(padding)
            .with_groups(channels)
            .with_bias(false)
            .init(device)
    }

    /// The layer shapes of the EfficientNets (3x3 and 5x5, stride 1 and 2, `SAME` with its
    /// odd pixel after the image) and a few that are not (explicit and no padding, odd
    /// sizes, a 1x1 plane, a kernel wider than the image).
    fn cases() -> Vec<([usize; 4], usize, usize, PaddingConfig2d)> {
        vec![
            ([2, 3, 9, 9], 3, 1, PaddingConfig2d::Same),
            ([2, 4, 10, 9], 3, 2, PaddingConfig2d::Same),
            ([1, 5, 14, 14], 5, 2, PaddingConfig2d::Same),
            ([3, 2, 7, 11], 5, 1, PaddingConfig2d::Same),
            ([2, 3, 8, 8], 3, 1, PaddingConfig2d::Explicit(1, 2, 0, 1)),
            ([2, 3, 8, 7], 3, 2, PaddingConfig2d::Valid),
            ([4, 3, 1, 1], 3, 1, PaddingConfig2d::Same),
            ([1, 2, 3, 3], 5, 1, PaddingConfig2d::Explicit(2, 2, 2, 2)),
            ([1, 33, 20, 37], 3, 1, PaddingConfig2d::Same),
        ]
    }

    #[cfg(target_arch = "x86_64")]
    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn output_sizes_and_spans_follow_the_padding() {
        let device = Device::default();
        let conv = depthwise(4, 3, 2, PaddingConfig2d::Same, &device);
        let g = Geometry::of(&conv, [1, 4, 10, 9]).unwrap();
        // SAME: ceil(10 / 2) = 5 rows with 1 pixel of padding after (none before), ceil(9/2) = 5
        // columns with 1 before and 1 after.
        assert_eq!((g.out_h, g.out_w, g.top, g.left), (5, 5, 0, 1));
        // Column tap 0 reads input column 2 * o - 1: outside the image for o = 0 only.
        assert_eq!(g.span(0, g.left, g.w, g.out_w), 1..5);
        // Row tap 2 reads row 2 * o + 2: inside for o = 0..=3, row 10 is padding.
        assert_eq!(g.span(2, g.top, g.h, g.out_h), 0..4);
        // A grouped convolution that is not depthwise, or one with a bias, is not taken.
        let grouped = Conv2dConfig::new([4, 8], [3, 3]).with_groups(4).init(&device);
        assert_eq!(Geometry::of(&grouped, [1, 4, 8, 8]), None);
        let biased = Conv2dConfig::new([4, 4], [3, 3]).with_groups(4).init(&device);
        assert_eq!(Geometry::of(&biased, [1, 4, 8, 8]), None);
    }

    #[test]
    fn the_convolution_and_both_gradients_match_burns_conv2d() {
        let device = Device::flex().autodiff();
        for (dims, kernel, stride, padding) in cases() {
            let conv = depthwise(dims[1], kernel, stride, padding.clone(), &device);
            let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
            let case = format!("{dims:?} k{kernel} s{stride} {padding:?}");
            let run = |ours: bool| {
                let x = x.clone().require_grad();
                let out = if ours { depthwise_conv(x.clone(), &conv) } else { conv.forward(x.clone()) };
                // Any upstream gradient: weigh the outputs with a fixed pattern.
                let pattern = (0..out.shape().num_elements()).map(|i| (i as f32).sin()).collect::<Vec<_>>();
                let probe = Tensor::<4>::from_data(TensorData::new(pattern, out.dims()), &device);
                let grads = (out.clone() * probe).sum().backward();
                let dw = conv.weight.val().grad(&grads).unwrap();
                (out.inner(), x.grad(&grads).unwrap(), dw)
            };
            let ((y, dx, dw), (y_ref, dx_ref, dw_ref)) = (run(true), run(false));
            assert_eq!(y.dims(), y_ref.dims(), "{case}");
            assert!(max_abs_diff(y, y_ref) < 1e-5, "forward {case}");
            assert!(max_abs_diff(dx, dx_ref) < 1e-4, "input gradient {case}");
            assert!(max_abs_diff(dw, dw_ref) < 1e-4, "weight gradient {case}");
        }
    }

    #[test]
    fn the_portable_and_the_avx512_builds_agree() {
        #[cfg(target_arch = "x86_64")]
        {
            if Isa::detect() != Isa::Avx512 {
                eprintln!("no AVX-512 on this CPU: only the portable build runs here");
                return;
            }
            let device = Device::default();
            for (dims, kernel, stride, padding) in cases() {
                let conv = depthwise(dims[1], kernel, stride, padding, &device);
                let g = Geometry::of(&conv, dims).unwrap();
                let x = values(Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device));
                let w = values(conv.weight.val());
                let dy = values(Tensor::<1>::random(
                    [g.batch * g.channels * g.output_plane()],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                ));
                let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
                    let diff = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    assert!(diff < 1e-5, "{what} {dims:?}: portable and AVX-512 differ by {diff}");
                };
                let both = |f: &dyn Fn(Isa) -> Vec<f32>| (f(Isa::Portable), f(Isa::Avx512));
                let (a, b) = both(&|isa| forward(&x, &w, g, isa));
                close(a, b, "forward");
                let (a, b) = both(&|isa| input_gradient(&w, &dy, g, isa));
                close(a, b, "input gradient");
                let (a, b) = both(&|isa| weight_gradient(&x, &dy, g, isa));
                close(a, b, "weight gradient");
            }
        }
    }
}
