//! Integer arithmetic for an int8-quantized dense layer on the CPU: `--quantize int8`
//! inference of the seed model's 8192 -> 512 layer, which is 80% of its inference work.
//!
//! The weights are burn's symmetric per-tensor int8 (see [`int8_scheme`]). The layer's
//! input is quantized on the fly, per row, to unsigned 8 bits: it is never negative (it
//! comes out of a ReLU and a max pool), so `x ~ scale_row * q` with `q` in 0..=255 and
//! `scale_row = max(row) / 255`. Then
//!
//! ```text
//! y[b, o] = scale_row[b] * weight_scale * sum_k q[b, k] * w[k, o] + bias[o]
//! ```
//!
//! where the sum is exact in 32-bit integers. This is the scheme TensorFlow Lite calls
//! dynamic-range quantization. On CPUs with AVX-512 VNNI, `vpdpbusd` multiplies 64 byte
//! pairs per instruction, four times the multiply-adds of an fp32 AVX-512 FMA; elsewhere a
//! portable loop computes the same integers, so every CPU gives the same logits.

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::quantization::{Calibration, QuantScheme, QuantStore, QuantValue, compute_q_params, compute_range};
use rayon::prelude::*;

use super::{dense, is_flex};

/// Outputs per packed block: one 512-bit register of 32-bit sums.
const LANES: usize = 16;
/// Inputs per `vpdpbusd` lane: four byte pairs are summed into each 32-bit lane.
const GROUP: usize = 4;
/// Rows of the input multiplied together by the kernel, sharing each load of the weights.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, reason = "the VNNI kernel is x86-64's"))]
const ROWS: usize = 8;
/// Output blocks per kernel call: 8 rows x 2 blocks = 16 accumulator registers.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, reason = "the VNNI kernel is x86-64's"))]
const BLOCKS: usize = 2;

/// The int8 format of `--quantize int8`: values in [-127, 127], one symmetric scale per
/// tensor, stored one per byte.
pub fn int8_scheme() -> QuantScheme {
    QuantScheme::default().with_value(QuantValue::Q8S).with_store(QuantStore::Native)
}

/// One tensor in int8 (see [`int8_scheme`]), its scale from its own extremes.
pub fn quantize_tensor<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    let scheme = int8_scheme();
    let range = compute_range(&scheme, &tensor, &Calibration::MinMax);
    let qparams = compute_q_params(&scheme, range);
    tensor.quantize(&scheme, qparams)
}

/// `linear.forward(x)` for CPU inference in integers through `int8` (the layer's integer
/// form, when its weights are int8), falling back to fp32 for an input with negative values;
/// [`dense`] while training, on other devices, and without `int8`.
///
/// # Shapes
/// - x: `[batch, inputs]`, values not negative for the integer path
/// - output: `[batch, outputs]`
pub fn int8_dense(linear: &Linear, int8: Option<&Int8Dense>, x: Tensor<2>) -> Tensor<2> {
    let device = x.device();
    let Some(int8) = int8.filter(|_| is_flex(&device) && !device.is_autodiff()) else {
        return dense(linear, x);
    };
    let [batch, inputs] = x.dims();
    let values = x.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
    match int8.forward(&values) {
        Some(y) => Tensor::from_data(TensorData::new(y, [batch, int8.outputs]), &device),
        None => dense(linear, Tensor::from_data(TensorData::new(values, [batch, inputs]), &device)),
    }
}

/// An int8 dense layer, prepared once from a quantized [`Linear`].
#[derive(Debug, Clone)]
pub struct Int8Dense {
    inputs: usize,
    outputs: usize,
    weight_scale: f32,
    /// `[inputs, outputs]`, row-major, as burn stores the weight.
    weights: Vec<i8>,
    /// The same weights for the kernel: per block of 16 outputs, per group of 4 inputs,
    /// 16 lanes of 4 bytes (`w[4g..4g + 4, block * 16 + lane]`), zero-padded.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, reason = "the VNNI kernel is x86-64's"))]
    packed: Vec<i8>,
    bias: Vec<f32>,
}

impl Int8Dense {
    /// The integer form of `linear`, whose weight is int8-quantized; `None` when it is not.
    pub fn from_linear(linear: &Linear) -> Option<Self> {
        let weight = linear.weight.val();
        if !matches!(weight.dtype(), burn::tensor::DType::QFloat(_)) {
            return None;
        }
        let [inputs, outputs] = weight.dims();
        let values = weight.dequantize().into_data().convert::<f32>().try_into_vec::<f32>().ok()?;
        let bias = match &linear.bias {
            Some(bias) => bias.val().dequantize().into_data().convert::<f32>().try_into_vec::<f32>().ok()?,
            None => vec![0.0; outputs],
        };
        Some(Self::new(&values, [inputs, outputs], &bias))
    }

    /// From fp32 weights (`[inputs, outputs]`, row-major) that are multiples of one scale, as
    /// burn's symmetric int8 leaves them: the largest magnitude is 127 steps.
    pub fn new(values: &[f32], [inputs, outputs]: [usize; 2], bias: &[f32]) -> Self {
        assert_eq!(values.len(), inputs * outputs, "weights do not match their shape");
        assert_eq!(bias.len(), outputs, "bias does not match the weights");
        let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let weight_scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let weights: Vec<i8> = values.iter().map(|v| (v / weight_scale).round().clamp(-127.0, 127.0) as i8).collect();
        let groups = inputs.div_ceil(GROUP);
        let blocks = outputs.div_ceil(LANES);
        let mut packed = vec![0i8; blocks * groups * LANES * GROUP];
        for (k, row) in weights.chunks_exact(outputs.max(1)).enumerate() {
            for (o, &w) in row.iter().enumerate() {
                let (block, lane) = (o / LANES, o % LANES);
                packed[((block * groups + k / GROUP) * LANES + lane) * GROUP + k % GROUP] = w;
            }
        }
        Int8Dense { inputs, outputs, weight_scale, weights, packed, bias: bias.to_vec() }
    }

    /// The layer on `x` (`[batch, inputs]`, row-major, no negative values), or `None` when
    /// some input is negative (the unsigned scheme cannot hold it; the caller falls back
    /// to fp32).
    pub fn forward(&self, x: &[f32]) -> Option<Vec<f32>> {
        let batch = x.len() / self.inputs.max(1);
        assert_eq!(x.len(), batch * self.inputs, "input does not match the layer");
        if batch == 0 || self.outputs == 0 || self.inputs == 0 {
            return Some(self.bias.iter().copied().cycle().take(batch * self.outputs).collect());
        }
        let stride = self.inputs.div_ceil(GROUP) * GROUP;
        let mut quantized = vec![0u8; batch * stride];
        let mut scales = vec![0f32; batch];
        let negative = quantized
            .par_chunks_mut(stride.max(1))
            .zip(scales.par_iter_mut())
            .zip(x.par_chunks(self.inputs.max(1)))
            .map(|((q, scale), row)| quantize_row(row, q, scale))
            .any(|ok| !ok);
        if negative {
            return None;
        }
        let sums = self.integer_sums(&quantized, batch);
        let mut y = vec![0f32; batch * self.outputs];
        for ((y, sums), scale) in
            y.chunks_exact_mut(self.outputs.max(1)).zip(sums.chunks_exact(self.outputs.max(1))).zip(&scales)
        {
            let scale = scale * self.weight_scale;
            for ((y, &s), b) in y.iter_mut().zip(sums).zip(&self.bias) {
                *y = s as f32 * scale + b;
            }
        }
        Some(y)
    }

    /// `q @ weights` in 32-bit integers, `[batch, outputs]`; `q` has rows of `inputs`
    /// rounded up to a multiple of 4, zero-padded.
    fn integer_sums(&self, q: &[u8], batch: usize) -> Vec<i32> {
        #[cfg(target_arch = "x86_64")]
        if vnni_available() {
            return self.integer_sums_vnni(q, batch);
        }
        self.integer_sums_portable(q, batch)
    }

    /// The portable loop: per input row, every weight row scaled by one input and added.
    fn integer_sums_portable(&self, q: &[u8], batch: usize) -> Vec<i32> {
        let stride = self.inputs.div_ceil(GROUP) * GROUP;
        let mut sums = vec![0i32; batch * self.outputs];
        sums.par_chunks_mut(self.outputs.max(1)).zip(q.par_chunks(stride.max(1))).for_each(|(sums, q)| {
            for (&qk, row) in q.iter().zip(self.weights.chunks_exact(self.outputs.max(1))) {
                let qk = i32::from(qk);
                for (s, &w) in sums.iter_mut().zip(row) {
                    *s += qk * i32::from(w);
                }
            }
        });
        sums
    }

    /// The VNNI kernel over pairs of 16-output blocks in parallel; each task keeps its
    /// blocks' packed weights in cache while it walks all the rows.
    #[cfg(target_arch = "x86_64")]
    fn integer_sums_vnni(&self, q: &[u8], batch: usize) -> Vec<i32> {
        let groups = self.inputs.div_ceil(GROUP);
        let stride = groups * GROUP;
        let blocks = self.outputs.div_ceil(LANES);
        let block_bytes = groups * LANES * GROUP;
        // [block pair][batch][BLOCKS * LANES], copied into place afterwards.
        let mut tiles = vec![0i32; blocks.div_ceil(BLOCKS) * batch * BLOCKS * LANES];
        tiles.par_chunks_mut((batch * BLOCKS * LANES).max(1)).enumerate().for_each(|(pair, tile)| {
            let first = pair * BLOCKS;
            let count = BLOCKS.min(blocks - first);
            let weights = &self.packed[first * block_bytes..(first + count) * block_bytes];
            let mut row = 0;
            while row < batch {
                let rows = ROWS.min(batch - row);
                let out = &mut tile[row * BLOCKS * LANES..(row + rows) * BLOCKS * LANES];
                // SAFETY: AVX-512F and VNNI were detected by the caller; `q` holds `rows`
                // rows of `stride` bytes from `row`, and `weights` holds `count` blocks.
                unsafe { vnni_tile(&q[row * stride..(row + rows) * stride], stride, weights, block_bytes, count, out) };
                row += rows;
            }
        });
        let mut sums = vec![0i32; batch * self.outputs];
        for (pair, tile) in tiles.chunks_exact((batch * BLOCKS * LANES).max(1)).enumerate() {
            let first = pair * BLOCKS * LANES;
            let width = (BLOCKS * LANES).min(self.outputs - first);
            for (sums, tile) in sums.chunks_exact_mut(self.outputs).zip(tile.chunks_exact(BLOCKS * LANES)) {
                sums[first..first + width].copy_from_slice(&tile[..width]);
            }
        }
        sums
    }
}

/// Whether this CPU has AVX-512 VNNI (`vpdpbusd`), which [`Int8Dense`]'s integer products
/// use when present (never off x86-64).
fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// What [`int8_dense`]'s integer products run on this CPU, for `classify bench`.
pub(super) fn path() -> &'static str {
    if vnni_available() { "AVX-512 VNNI (vpdpbusd)" } else { "portable integer loop (no AVX-512 VNNI)" }
}

/// Quantizes one row to unsigned bytes (`q = round(x / scale)`, `scale = max / 255`);
/// false, leaving the row unfinished, when it holds a negative or non-finite value.
fn quantize_row(row: &[f32], q: &mut [u8], scale: &mut f32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512F and BW were just detected on this CPU.
        return unsafe { quantize_row_avx512(row, q, scale) };
    }
    quantize_row_body(row, q, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_row_avx512(row: &[f32], q: &mut [u8], scale: &mut f32) -> bool {
    quantize_row_body(row, q, scale)
}

/// [`quantize_row`]'s loops, written so that they vectorise: comparisons rather than
/// `f32::min`/`max` (whose NaN rules keep them scalar), and rounding half up, which for
/// values >= 0 is `round` (a library call here). The cast saturates at 255.
#[inline(always)]
fn quantize_row_body(row: &[f32], q: &mut [u8], scale: &mut f32) -> bool {
    let (mut min, mut max, mut nan) = (0f32, 0f32, false);
    for &v in row {
        min = if v < min { v } else { min };
        max = if v > max { v } else { max };
        nan |= v.is_nan();
    }
    if min < 0.0 || !max.is_finite() || nan {
        return false;
    }
    *scale = if max > 0.0 { max / 255.0 } else { 1.0 };
    let inverse = 1.0 / *scale;
    for (q, &v) in q.iter_mut().zip(row) {
        *q = (v * inverse + 0.5) as u8;
    }
    true
}

/// Up to [`ROWS`] rows of `q` times up to [`BLOCKS`] packed 16-output blocks, into `out`
/// (`[rows][BLOCKS * LANES]`).
///
/// # Safety
/// The CPU must have AVX-512F and AVX-512 VNNI. `q` holds whole rows of `stride` bytes (a
/// multiple of 4), at most [`ROWS`] of them; `weights` holds `count` (1 or 2) blocks of
/// `block_bytes` = `stride * 16` bytes; `out` holds the rows' `BLOCKS * LANES` sums.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn vnni_tile(q: &[u8], stride: usize, weights: &[i8], block_bytes: usize, count: usize, out: &mut [i32]) {
    use std::arch::x86_64::*;
    let rows = q.len() / stride;
    assert!(rows <= ROWS && q.len() == rows * stride && (1..=BLOCKS).contains(&count));
    assert!(
        weights.len() == count * block_bytes && block_bytes == stride * LANES && out.len() == rows * BLOCKS * LANES
    );
    let mut acc = [[_mm512_setzero_si512(); BLOCKS]; ROWS];
    for g in 0..stride / GROUP {
        // SAFETY: group g of each block lies inside `weights` (asserted above); a missing
        // second block reads the first again and its sums are never stored.
        let w = unsafe {
            let at = weights.as_ptr().add(g * LANES * GROUP);
            [_mm512_loadu_si512(at.cast()), _mm512_loadu_si512(at.add((count - 1) * block_bytes).cast())]
        };
        for (r, acc) in acc.iter_mut().enumerate().take(rows) {
            // SAFETY: row r has `stride` bytes, of which 4g..4g + 4 are read.
            let x = _mm512_set1_epi32(unsafe { q.as_ptr().add(r * stride + g * GROUP).cast::<i32>().read_unaligned() });
            acc[0] = _mm512_dpbusd_epi32(acc[0], x, w[0]);
            acc[1] = _mm512_dpbusd_epi32(acc[1], x, w[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate().take(rows) {
        for (b, acc) in acc.iter().enumerate().take(count) {
            // SAFETY: `out` holds `BLOCKS * LANES` sums per row (asserted above).
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().add((r * BLOCKS + b) * LANES).cast(), *acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(state: &mut u64) -> f32 {
        *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*state >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Weights already on an int8 grid, as burn's quantization leaves them.
    fn layer(inputs: usize, outputs: usize, seed: u64) -> Int8Dense {
        let mut s = seed;
        let values: Vec<f32> = (0..inputs * outputs).map(|_| ((lcg(&mut s) * 254.0).round() - 127.0) * 0.01).collect();
        let bias: Vec<f32> = (0..outputs).map(|_| lcg(&mut s) - 0.5).collect();
        Int8Dense::new(&values, [inputs, outputs], &bias)
    }

    /// The kernel and the portable loop give the same integers, at sizes that leave partial
    /// groups of inputs, partial blocks of outputs and partial tiles of rows.
    #[test]
    fn kernel_and_portable_loop_agree_exactly() {
        for (inputs, outputs, batch) in [(37, 21, 11), (64, 48, 8), (8192, 40, 3)] {
            let dense = layer(inputs, outputs, 3);
            let stride = inputs.div_ceil(GROUP) * GROUP;
            let mut s = 9;
            let mut q = vec![0u8; batch * stride];
            for row in q.chunks_exact_mut(stride) {
                for v in &mut row[..inputs] {
                    *v = (lcg(&mut s) * 255.0) as u8;
                }
            }
            let portable = dense.integer_sums_portable(&q, batch);
            assert_eq!(dense.integer_sums(&q, batch), portable, "{inputs}x{outputs}, batch {batch}");
            // One sum by hand.
            let expected: i32 =
                (0..inputs).map(|k| i32::from(q[stride + k]) * i32::from(dense.weights[k * outputs + 2])).sum();
            assert_eq!(portable[outputs + 2], expected);
        }
    }

    /// Within the rounding of 8-bit inputs of the fp32 product with the same weights.
    #[test]
    fn close_to_fp32_on_the_same_weights() {
        let (inputs, outputs, batch) = (300, 20, 5);
        let dense = layer(inputs, outputs, 5);
        let mut s = 1;
        let x: Vec<f32> = (0..batch * inputs).map(|i| if i % 7 == 0 { 0.0 } else { lcg(&mut s) * 3.0 }).collect();
        let y = dense.forward(&x).expect("no negative inputs");
        for b in 0..batch {
            for o in 0..outputs {
                let exact: f32 = (0..inputs)
                    .map(|k| x[b * inputs + k] * dense.weights[k * outputs + o] as f32 * dense.weight_scale)
                    .sum::<f32>()
                    + dense.bias[o];
                let bound = 0.5 * 3.0 / 255.0
                    * (0..inputs)
                        .map(|k| (dense.weights[k * outputs + o] as f32 * dense.weight_scale).abs())
                        .sum::<f32>();
                assert!(
                    (y[b * outputs + o] - exact).abs() <= bound + 1e-4,
                    "row {b} output {o}: {} vs {exact}",
                    y[b * outputs + o]
                );
            }
        }
    }

    #[test]
    fn negative_inputs_are_refused() {
        let dense = layer(8, 4, 1);
        assert!(dense.forward(&[0.5, 0.1, -0.2, 0.0, 1.0, 2.0, 3.0, 4.0]).is_none());
        assert!(dense.forward(&[0.0; 8]).is_some_and(|y| y == dense.bias));
    }
}
