//! A dense layer (`x @ weight + bias`) as a burn backend extension, so that its three
//! matrix products on the CPU are each laid out the way they run fastest.
//!
//! For the seed model's 8192 -> 512 layer at batch 32, the products are 268 MFLOP each and
//! make up most of a training step. burn's `Linear` adds the bias as a separate pass, and
//! its autodiff takes the input gradient as `dy @ weight^T` with the transpose as a strided
//! view, which `gemm` multiplies at about half the rate of the same product with contiguous
//! operands (2.2 against 1.4 ms here). So:
//!
//! - forward: `y = x @ weight`, accumulated onto rows that already hold the bias;
//! - input gradient: `dx^T = weight @ dy^T` with `dy^T` made contiguous (a few kilobytes),
//!   then transposed into place (one pass over `dx`);
//! - weight gradient: `dW = x^T @ dy`; bias gradient: the column sums of `dy`.
//!
//! Each product runs on the AVX-512 tiles of [`panels`] where the CPU has them and the
//! widths fit (the seed's at batch sizes that are multiples of 32), else on `gemm`. At
//! batch 32 `gemm` spends much of its time copying the 16 MiB weight into its own layout for
//! only 32 uses of each element; the tiles read it where it lies.
//!
//! The extension is routed for Flex and autodiff over Flex only; [`dense`] uses it there
//! and burn's `Linear` on every other device and for int8 weights.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::{f32_values, flex_tensor, is_flex};

/// The extension: the layer and its three gradients.
#[backend_extension(Flex, Autodiff)]
pub trait DenseBackend: Backend {
    /// # Shapes
    /// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, bias: `[outputs]`
    /// - output: `[batch, outputs]`
    fn dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Gradients with respect to x, the weight and the bias, given the gradient with
    /// respect to the output (`[batch, outputs]`).
    fn dense_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl DenseBackend for Flex {
    fn dense(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let [batch, inputs] = x.layout().shape().dims();
        let outputs = weight.layout().shape().dims::<2>()[1];
        let [x, weight, bias] = [x, weight, bias].map(|t| t.to_contiguous());
        let y = forward(f32_values(&x), f32_values(&weight), f32_values(&bias), [batch, inputs, outputs]);
        flex_tensor(y, [batch, outputs])
    }

    fn dense_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let [batch, inputs] = x.layout().shape().dims();
        let outputs = weight.layout().shape().dims::<2>()[1];
        let [x, weight, output_grad] = [x, weight, output_grad].map(|t| t.to_contiguous());
        let (dx, dw, db) =
            gradients(f32_values(&x), f32_values(&weight), f32_values(&output_grad), [batch, inputs, outputs]);
        (flex_tensor(dx, [batch, inputs]), flex_tensor(dw, [inputs, outputs]), flex_tensor(db, [outputs]))
    }
}

#[derive(Debug)]
struct DenseBackward;

impl<B: Backend + DenseBackend> Backward<B, 3> for DenseBackward {
    /// The checkpointed input and weight.
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let (dx, dw, db) = B::dense_backward(x, weight, grad);
        for (node, grad) in [(node_x, dx), (node_weight, dw), (node_bias, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + DenseBackend, C: CheckpointStrategy> DenseBackend for Autodiff<B, C> {
    fn dense(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match DenseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                prep.finish(state, B::dense(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::dense(x.into_primitive(), weight.into_primitive(), bias.into_primitive()))
            }
        }
    }

    fn dense_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the gradients are only taken on the inner backend, inside the backward pass")
    }
}

/// `linear.forward(x)`: on the CPU with f32 weights and a bias through the extension above,
/// elsewhere through burn's `Linear`.
///
/// # Shapes
/// - x: `[batch, inputs]`
/// - output: `[batch, outputs]`
pub fn dense(linear: &Linear, x: Tensor<2>) -> Tensor<2> {
    let f32_param = |t: Tensor<2>| t.dtype() == DType::F32;
    let bias = match &linear.bias {
        Some(bias) if bias.val().dtype() == DType::F32 => bias.val(),
        _ => return linear.forward(x),
    };
    if !is_flex(&x.device()) || x.dtype() != DType::F32 || !f32_param(linear.weight.val()) {
        return linear.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as DenseBackend>::dense(
        x.into_dispatch(),
        linear.weight.val().into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// `dst = dst + lhs @ rhs` (or `lhs @ rhs` when `accumulate` is false, `dst` then only
/// written) over row-major buffers, with the `gemm` crate on all of rayon's threads.
///
/// # Shapes
/// - lhs: `[m, k]`, rhs: `[k, n]`, dst: `[m, n]`; a transposed operand is passed with
///   `transposed` set and stored as `[k, m]` or `[n, k]`.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` floats (and reads, with `accumulate`), and
/// must not overlap the operands.
unsafe fn gemm_into(dst: *mut f32, accumulate: bool, lhs: (&[f32], bool), rhs: (&[f32], bool), [m, k, n]: [usize; 3]) {
    assert!(lhs.0.len() == m * k && rhs.0.len() == k * n, "operands do not match");
    // (column stride, row stride) of each operand as gemm reads it.
    let strides = |transposed: bool, rows: usize, columns: usize| {
        if transposed { (rows as isize, 1) } else { (1, columns as isize) }
    };
    let (lhs_cs, lhs_rs) = strides(lhs.1, m, k);
    let (rhs_cs, rhs_rs) = strides(rhs.1, k, n);
    // SAFETY: the strides describe the operands of the asserted lengths; the caller
    // vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.0.as_ptr(),
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// `lhs @ rhs` into a new buffer that the product writes whole, with no zeroing pass
/// first: for the seed's 8192 x 512 weight gradient that pass cost a fifth of the product.
/// Arguments as [`gemm_into`].
fn product(lhs: (&[f32], bool), rhs: (&[f32], bool), [m, k, n]: [usize; 3]) -> Vec<f32> {
    if m * n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the new buffer has room for m * n floats and is not an operand; without
    // `accumulate` gemm writes every element and reads none, so all are set before
    // `set_len` exposes them.
    unsafe {
        gemm_into(dst.as_mut_ptr(), false, lhs, rhs, [m, k, n]);
        dst.set_len(m * n);
    }
    dst
}

/// `[rows, columns]` row-major into `[columns, rows]` row-major.
fn transpose(values: &[f32], [rows, columns]: [usize; 2]) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    if values.is_empty() {
        return out;
    }
    // Each task writes whole rows of the result, reading a strided column of `values`.
    out.par_chunks_mut(rows).enumerate().for_each(|(column, out)| {
        for (row, v) in out.iter_mut().enumerate() {
            *v = values[row * columns + column];
        }
    });
    out
}

/// The largest batch whose forward product runs on [`panels`]: measured on the seed's
/// layer, the tiles were 10-20% faster than `gemm` at batch 32 and 20-40% slower at 256.
const PANEL_ROWS: usize = 64;

/// The layer on the host: each output row starts as the bias and the product is added.
///
/// # Shapes
/// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, bias: `[outputs]`, all row-major
/// - output: `[batch, outputs]`, row-major
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], [batch, inputs, outputs]: [usize; 3]) -> Vec<f32> {
    let mut y: Vec<f32> = bias.iter().copied().cycle().take(batch * outputs).collect();
    // The tiles win where each weight element meets few rows (a training batch); at
    // inference's 256 rows `gemm`'s packing pays for itself and it is the faster one.
    let tiled =
        batch <= PANEL_ROWS && panels::accumulate::<4, 4>(&mut y, (x, inputs, 1), weight, [batch, inputs, outputs]);
    if batch > 0 && outputs > 0 && inputs > 0 && !tiled {
        // SAFETY: `y` holds batch x outputs floats and is not an operand.
        unsafe { gemm_into(y.as_mut_ptr(), true, (x, false), (weight, false), [batch, inputs, outputs]) };
    }
    y
}

/// Gradients of the layer on the host (see the module docs for the layout of each product).
///
/// # Shapes
/// - x: `[batch, inputs]`, weight: `[inputs, outputs]`, output_grad: `[batch, outputs]`
/// - output: `[batch, inputs]`, `[inputs, outputs]` and `[outputs]`, all row-major
pub fn gradients(
    x: &[f32],
    weight: &[f32],
    output_grad: &[f32],
    [batch, inputs, outputs]: [usize; 3],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut bias_grad = vec![0f32; outputs];
    for row in output_grad.chunks_exact(outputs.max(1)) {
        bias_grad.iter_mut().zip(row).for_each(|(b, g)| *b += g);
    }
    let weight_grad = panels::product::<6, 4>((x, 1, inputs), output_grad, [inputs, batch, outputs])
        .unwrap_or_else(|| product((x, true), (output_grad, false), [inputs, batch, outputs]));
    let output_grad_t = transpose(output_grad, [batch, outputs]);
    let x_grad_t = panels::product::<12, 2>((weight, outputs, 1), &output_grad_t, [inputs, outputs, batch])
        .unwrap_or_else(|| product((weight, false), (&output_grad_t, false), [inputs, outputs, batch]));
    (transpose(&x_grad_t, [inputs, batch]), weight_grad, bias_grad)
}

/// What [`dense`]'s products run on this CPU, for `classify bench`.
pub(super) fn path() -> &'static str {
    if panels::tiles_available() {
        "AVX-512 register tiles where the width is a multiple of 16, else the gemm crate"
    } else {
        "the gemm crate (the AVX-512 tiles need AVX-512F)"
    }
}

/// Register-tiled AVX-512 products for the seed's shapes, where the `gemm` crate loses time
/// to packing: at batch 32 each weight element takes part in only 32 multiply-adds, so
/// copying the 16 MiB weight into `gemm`'s panel layout costs a large share of the product.
/// Here the right operand is read in place (row-major, its rows contiguous), the left one
/// through its strides, one scalar broadcast at a time.
mod panels {
    // Only x86-64 has the tiles; elsewhere every call reports "not run" and `gemm` serves.
    #![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
    use rayon::prelude::*;

    /// Depth of one pass over a strip of the right operand: 2048 rows of 32 floats (256
    /// KiB) stay in the core's L2 cache while every row group of the left operand uses them.
    const DEPTH: usize = 2048;

    /// Whether this CPU runs the tiles (AVX-512F; never off x86-64): the test [`run`]
    /// makes, and what `classify bench` reports.
    pub fn tiles_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        return false;
    }

    /// `c += a @ b` if this CPU has AVX-512 and `n` is a multiple of the tile width
    /// `16 * T`; false (nothing written) otherwise.
    ///
    /// # Shapes
    /// - a: `[m, k]` read as `a[i * row_stride + j * column_stride]`
    /// - b: `[k, n]` row-major; c: `[m, n]` row-major
    pub fn accumulate<const M: usize, const T: usize>(
        c: &mut [f32],
        a: (&[f32], usize, usize),
        b: &[f32],
        dims: [usize; 3],
    ) -> bool {
        assert_eq!(c.len(), dims[0] * dims[2], "destination does not match the operands");
        // SAFETY: `c` is a valid, initialised buffer of m * n floats, not overlapping the
        // operands (it is a distinct `&mut`).
        unsafe { run::<M, T>(c.as_mut_ptr(), true, a, b, dims) }
    }

    /// `a @ b` in a new buffer, written whole by the kernel (no zeroing pass), under the
    /// conditions of [`accumulate`]; `None` where they do not hold.
    pub fn product<const M: usize, const T: usize>(
        a: (&[f32], usize, usize),
        b: &[f32],
        [m, k, n]: [usize; 3],
    ) -> Option<Vec<f32>> {
        let mut c = Vec::with_capacity(m * n);
        // SAFETY: the new buffer has room for m * n floats. Without `accumulate` the first
        // depth block stores every element before any later block loads it, so all are
        // set before `set_len` exposes them; when `run` declines, nothing is exposed.
        unsafe {
            if !run::<M, T>(c.as_mut_ptr(), false, a, b, [m, k, n]) {
                return None;
            }
            c.set_len(m * n);
        }
        Some(c)
    }

    /// The driver: tasks of (strip of `16 * T` columns, chunk of `32 * M` rows) in parallel;
    /// each walks the inner dimension in blocks of [`DEPTH`] and its rows in groups of `M`.
    ///
    /// # Safety
    /// `c` must be valid for writes of `m * n` floats (and reads, with `accumulate`) and
    /// must not overlap the operands.
    pub(super) unsafe fn run<const M: usize, const T: usize>(
        c: *mut f32,
        accumulate: bool,
        (a, row_stride, column_stride): (&[f32], usize, usize),
        b: &[f32],
        [m, k, n]: [usize; 3],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if tiles_available() && n % (16 * T) == 0 && m > 0 && k > 0 {
            assert!(b.len() == k * n, "operands do not match");
            assert!((m - 1) * row_stride + (k - 1) * column_stride < a.len(), "left operand too short");
            let width = 16 * T;
            let rows_per_task = M * 32;
            let tasks = (n / width) * m.div_ceil(rows_per_task);
            let out = Shared(c);
            // Rows and tiles are multiples of 16 floats, so an aligned base aligns every store.
            let aligned = (c as usize).is_multiple_of(64);
            (0..tasks).into_par_iter().for_each(|task| {
                let (strip, chunk) = (task % (n / width), task / (n / width));
                let (first, last) = (chunk * rows_per_task, ((chunk + 1) * rows_per_task).min(m));
                for depth in (0..k).step_by(DEPTH) {
                    let steps = DEPTH.min(k - depth);
                    let load = accumulate || depth > 0;
                    // The last depth block of a fresh product writes each value once and
                    // nothing reads it before the optimiser: streaming stores skip reading
                    // the destination's lines first (16 MiB for the seed's weight gradient).
                    let stream = !accumulate && depth + steps == k && aligned;
                    let mut row = first;
                    while row < last {
                        let a_at = row * row_stride + depth * column_stride;
                        let b_at = depth * n + strip * width;
                        // SAFETY: AVX-512F was detected; the asserts above bound every
                        // read, and tasks write disjoint (rows, strip) blocks of `c`.
                        unsafe {
                            let c_at = out.get().add(row * n + strip * width);
                            if row + M <= last {
                                tile::<M, T>(
                                    a.as_ptr().add(a_at),
                                    [row_stride, column_stride],
                                    b.as_ptr().add(b_at),
                                    n,
                                    steps,
                                    c_at,
                                    load,
                                    stream,
                                );
                                row += M;
                            } else {
                                tile::<1, T>(
                                    a.as_ptr().add(a_at),
                                    [row_stride, column_stride],
                                    b.as_ptr().add(b_at),
                                    n,
                                    steps,
                                    c_at,
                                    load,
                                    stream,
                                );
                                row += 1;
                            }
                        }
                    }
                }
                // SAFETY: SSE is part of x86_64. Streaming stores are weakly ordered: the
                // fence makes them visible before the task reports itself done.
                unsafe { std::arch::x86_64::_mm_sfence() };
            });
            return true;
        }
        let _ = (c, accumulate, a, row_stride, column_stride, b, m, k, n);
        false
    }

    /// `c`'s destination, shared by the tasks, which write disjoint blocks of it.
    struct Shared(*mut f32);
    // SAFETY: every task writes its own rows and columns of the buffer (see `product`).
    unsafe impl Send for Shared {}
    unsafe impl Sync for Shared {}

    impl Shared {
        /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
        fn get(&self) -> *mut f32 {
            self.0
        }
    }

    /// `M` rows by `16 * T` columns of `c` (row stride `n`) over `steps` of the inner
    /// dimension: per step, `T` loads of `b`'s row, `M` broadcasts of `a` and `M * T` fused
    /// multiply-adds into `M * T` accumulator registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `a`, `b` and `c` must be valid for the reads and writes
    /// described, and `c` must not overlap `a` or `b`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments, reason = "one register tile's operands, passed as raw parts")]
    unsafe fn tile<const M: usize, const T: usize>(
        a: *const f32,
        [row_stride, column_stride]: [usize; 2],
        b: *const f32,
        n: usize,
        steps: usize,
        c: *mut f32,
        load: bool,
        stream: bool,
    ) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); T]; M];
        if load {
            for (i, row) in acc.iter_mut().enumerate() {
                for (t, v) in row.iter_mut().enumerate() {
                    // SAFETY: inside c's tile (caller).
                    *v = unsafe { _mm512_loadu_ps(c.add(i * n + 16 * t)) };
                }
            }
        }
        for step in 0..steps {
            let mut bv = [_mm512_setzero_ps(); T];
            for (t, v) in bv.iter_mut().enumerate() {
                // SAFETY: row `step` of b's strip (caller).
                *v = unsafe { _mm512_loadu_ps(b.add(step * n + 16 * t)) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: element (i, step) of a (caller).
                let av = _mm512_set1_ps(unsafe { *a.add(i * row_stride + step * column_stride) });
                for (v, bv) in row.iter_mut().zip(&bv) {
                    *v = _mm512_fmadd_ps(av, *bv, *v);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (t, v) in row.iter().enumerate() {
                // SAFETY: inside c's tile (caller), 64-byte aligned when streaming.
                unsafe {
                    if stream {
                        _mm512_stream_ps(c.add(i * n + 16 * t), *v);
                    } else {
                        _mm512_storeu_ps(c.add(i * n + 16 * t), *v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::max_abs_diff;
    use super::*;

    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    /// Same output and same input, weight and bias gradients as burn's `Linear`, at shapes
    /// where every dimension differs (so a swapped stride or transpose shows).
    #[test]
    fn matches_burns_linear_forward_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let linear = LinearConfig::new(37, 11).init(&device);
        let linear = Linear {
            bias: Some(burn::module::Param::from_tensor(Tensor::random([11], Distribution::Default, &device))),
            ..linear
        };
        let x = Tensor::<2>::random([5, 37], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let ours = dense(&linear, x.clone());
        let burns = linear.forward(x.clone());
        assert_eq!(ours.dims(), [5, 11]);
        assert!(max_abs_diff(ours.clone(), burns.clone()) < 1e-5);

        let probe = Tensor::<2>::random([5, 11], Distribution::Normal(0.0, 1.0), &device);
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_burn = (burns * probe).sum().backward();
        assert!(max_abs_diff(x.grad(&g_ours).unwrap(), x.grad(&g_burn).unwrap()) < 1e-5);
        let w = &linear.weight;
        assert!(max_abs_diff(w.grad(&g_ours).unwrap(), w.grad(&g_burn).unwrap()) < 1e-5);
        let b = linear.bias.as_ref().unwrap();
        assert!(max_abs_diff(b.grad(&g_ours).unwrap(), b.grad(&g_burn).unwrap()) < 1e-5);
    }

    /// The AVX-512 panels against a plain triple loop: row groups left partial, an inner
    /// dimension crossing a depth block, the left operand read row- and column-major, and
    /// accumulation onto existing values. On a CPU without AVX-512 the panels decline.
    #[test]
    fn panels_match_a_plain_product() {
        let (m, k) = (29, 2100);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        for n in [32, 64] {
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 44.0 - 1.0).collect();
            for (row_stride, column_stride) in [(k, 1), (1, m)] {
                let expected: Vec<f32> = (0..m * n)
                    .map(|e| {
                        (0..k).map(|j| a[e / n * row_stride + j * column_stride] * b[j * n + e % n]).sum::<f32>() + 0.5
                    })
                    .collect();
                let mut c = vec![0.5f32; m * n];
                // The tile shapes `dense` uses: 4x4 (forward), 12x2 (input gradient), 6x4 (weight gradient).
                let ran = if n == 32 {
                    panels::accumulate::<12, 2>(&mut c, (&a, row_stride, column_stride), &b, [m, k, n])
                } else {
                    panels::accumulate::<4, 4>(&mut c, (&a, row_stride, column_stride), &b, [m, k, n])
                };
                if !panels::tiles_available() {
                    assert!(!ran);
                    continue;
                }
                assert!(ran);
                let worst = c.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < 2e-3, "n {n}, strides ({row_stride}, {column_stride}): off by {worst}");
                let fresh = if n == 32 {
                    panels::product::<12, 2>((&a, row_stride, column_stride), &b, [m, k, n])
                } else {
                    panels::product::<6, 4>((&a, row_stride, column_stride), &b, [m, k, n])
                };
                let fresh = fresh.unwrap();
                let worst = fresh.iter().zip(&expected).map(|(x, y)| (x + 0.5 - y).abs()).fold(0f32, f32::max);
                assert!(worst < 2e-3, "without accumulating: off by {worst}");
            }
        }
        // A fresh product into a 64-byte-aligned destination takes the streaming stores.
        if panels::tiles_available() {
            let (m, k, n) = (7, 40, 64);
            let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 - 6.0).collect();
            let expected: Vec<f32> =
                (0..m * n).map(|e| (0..k).map(|j| a[e / n * k + j] * b[j * n + e % n]).sum()).collect();
            let mut buffer = vec![f32::NAN; m * n + 16];
            let offset = buffer.as_ptr().align_offset(64);
            // SAFETY: the destination lies inside `buffer` (16 spare floats cover the offset).
            assert!(unsafe { panels::run::<6, 4>(buffer.as_mut_ptr().add(offset), false, (&a, k, 1), &b, [m, k, n]) });
            let worst =
                buffer[offset..offset + m * n].iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "streamed product off by {worst}");
            assert!(
                buffer[..offset].iter().chain(&buffer[offset + m * n..]).all(|v| v.is_nan()),
                "wrote outside its rows"
            );
        }
        // A width that is not a multiple of the tile is left to the caller.
        assert!(panels::product::<4, 4>((&[1.0; 10], 1, 1), &[1.0; 10], [1, 1, 10]).is_none());
    }

    #[test]
    fn transposes() {
        let values: Vec<f32> = (0..6).map(|i| i as f32).collect();
        assert_eq!(transpose(&values, [2, 3]), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
