//! Matrix products in bfloat16 for `--precision bf16`: both operands rounded to bf16 (8
//! bits of mantissa, fp32's range), products summed in fp32, the result fp32.
//!
//! This is what PyTorch's bf16 autocast does inside a convolution on a CPU with
//! AVX512-BF16: the weights stay fp32 (the optimiser's master copy), each product rounds
//! its operands on the way in, and what comes out is fp32 again, so BatchNorm, the loss
//! and the optimiser never see bf16.
//!
//! Two paths compute the same rounding, and a test holds them together:
//! - **AVX512-BF16** (Zen 4 and later, Intel Cooper Lake, Sapphire Rapids and later):
//!   `vdpbf16ps` multiplies 16 pairs of bf16 and adds them into 16 fp32 sums per
//!   instruction, twice fp32 FMA's work per instruction. The left operand is a row-major
//!   bf16 copy (each pair of neighbouring values along the summed dimension one 32-bit
//!   broadcast); the right one is packed into panels of [`NR`] columns whose pairs sit side
//!   by side, so one 64-byte load feeds 16 columns.
//! - **portable**: the operands rounded the same way ([`round`]), then the `gemm` crate's
//!   fp32 product, whose results differ from the fast path's only in the order of the fp32
//!   sums (a bf16 x bf16 product is exact in fp32).
//!
//! Rounding is `vcvtneps2bf16`'s: to nearest, ties to even; subnormal inputs become zero of
//! the same sign (the instruction ignores MXCSR and always does that); NaN stays NaN.

use std::cell::{Cell, RefCell};

use serde::{Deserialize, Serialize};

/// The arithmetic of the convolutions' products on the CPU (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE single precision throughout.
    #[default]
    Fp32,
    /// The 3x3 convolutions' products (forward and both gradients) with their operands
    /// rounded to bfloat16, summed in fp32; weights, optimiser state, BatchNorm and the loss
    /// stay fp32. AVX512-BF16 dot products where the CPU has them, else the same rounding
    /// emulated around fp32 products (slower than fp32).
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

thread_local! {
    /// The precision of the products this thread asks for (fp32 until set).
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::Fp32) };
}

/// Sets the precision of the products the calling thread computes from now on: the thread
/// that runs a model's forward and backward passes (training, `eval`, `predict`, the
/// server's model thread). Each host kernel reads it once per call, on that thread, and
/// hands it to its workers; other threads (and tests running beside) keep their own.
pub fn set_precision(precision: Precision) {
    PRECISION.set(precision);
}

/// The calling thread's precision (see [`set_precision`]).
pub fn precision() -> Precision {
    PRECISION.get()
}

/// `x` rounded to bfloat16, as its 16 bits (see the module docs for the rule).
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16; // quiet, sign and payload's top bits kept
    }
    if x.is_subnormal() {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let bias = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(bias) >> 16) as u16 // overflow past the largest finite value gives infinity, as the hardware does
}

/// The fp32 value of a bfloat16.
pub fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x` rounded to the nearest bfloat16, as an fp32.
pub fn round(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

/// Whether this CPU runs the AVX512-BF16 path.
pub fn dot_products_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What [`matmul`] runs on this CPU, for `classify bench`.
pub fn path() -> &'static str {
    if dot_products_available() {
        "AVX512-BF16 dot products (vdpbf16ps), fp32 sums"
    } else {
        "bf16 rounding emulated around the gemm crate's fp32 products (no AVX512-BF16 on this CPU)"
    }
}

/// How the right operand `b` (`k x n`) lies in its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `b[i][j]` at `i * stride + j`: columns side by side.
    RowMajor { stride: usize },
    /// `b[i][j]` at `j * stride + i`: the summed dimension side by side.
    ColumnMajor { stride: usize },
}

impl Layout {
    fn at(self, i: usize, j: usize) -> usize {
        match self {
            Layout::RowMajor { stride } => i * stride + j,
            Layout::ColumnMajor { stride } => j * stride + i,
        }
    }
}

/// `c [m x n] = a [m x k] @ b [k x n]` (or `c += ...` when `accumulate`), both operands
/// rounded to bf16 and the sums kept in fp32. `a` is row-major with row stride `lda`; `c`
/// row-major with row stride `ldc`. Single-threaded: callers run one per group of images.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    [m, n, k]: [usize; 3],
    a: &[f32],
    lda: usize,
    b: &[f32],
    b_layout: Layout,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || a.len() >= (m - 1) * lda + k, "left operand shorter than its shape");
    assert!(k == 0 || b.len() > b_layout.at(k - 1, n - 1), "right operand shorter than its shape");
    assert!(c.len() >= (m - 1) * ldc + n, "result shorter than its shape");
    #[cfg(target_arch = "x86_64")]
    if dot_products_available() {
        // SAFETY: the CPU has the features `avx512::matmul` is compiled for, and the
        // asserts above bound every index it takes.
        return unsafe { avx512::matmul([m, n, k], a, lda, b, b_layout, c, ldc, accumulate) };
    }
    portable([m, n, k], a, lda, b, b_layout, c, ldc, accumulate);
}

/// The portable path: operands rounded, then an fp32 product.
#[allow(clippy::too_many_arguments)]
fn portable(
    [m, n, k]: [usize; 3],
    a: &[f32],
    lda: usize,
    b: &[f32],
    b_layout: Layout,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let left: Vec<f32> = (0..m).flat_map(|i| a[i * lda..][..k].iter().map(|&v| round(v))).collect();
    let right: Vec<f32> = (0..k).flat_map(|i| (0..n).map(move |j| round(b[b_layout.at(i, j)]))).collect();
    // SAFETY: the strides and sizes describe the buffers (asserted by `matmul`); the result
    // does not alias the operands.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            left.as_ptr(),
            1,
            k as isize,
            right.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Rows of the fast path's result tile: one 32-bit broadcast of the left operand each.
const MR: usize = 8;
/// Columns of the result tile and of a right-operand panel: two vectors of 16 sums.
pub const NR: usize = 32;
/// Pairs of the summed dimension per pass over a panel: a panel's slice (`KC x NR` pairs,
/// 16 KiB) stays in the L1 cache while every row tile of the left operand runs over it.
const KC: usize = 128;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{KC, Layout, MR, NR};

    /// Sixteen f32 from `src` (fewer where `count < 16`, the rest zero).
    #[target_feature(enable = "avx512f")]
    unsafe fn load(src: *const f32, count: usize) -> __m512 {
        // SAFETY: the caller's pointer is valid for `count` values; masked lanes are not read.
        unsafe {
            if count >= 16 { _mm512_loadu_ps(src) } else { _mm512_maskz_loadu_ps(((1u32 << count) - 1) as u16, src) }
        }
    }

    /// The left operand's rows as bf16 pairs along `k` (`pairs` u32 a row, the odd tail
    /// zero), `rows` rounded up to whole tiles with zero rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_left(a: &[f32], lda: usize, [m, k]: [usize; 2], out: &mut Vec<u32>) {
        let pairs = k.div_ceil(2);
        out.clear();
        out.resize(m.div_ceil(MR) * MR * pairs, 0);
        for i in 0..m {
            let row = &a[i * lda..][..k];
            let dst = &mut out[i * pairs..][..pairs];
            for (t, chunk) in row.chunks(16).enumerate() {
                // SAFETY: `chunk` holds `chunk.len()` values; the store writes
                // `chunk.len().div_ceil(2)` pairs, which `dst` has from `t * 8` on.
                unsafe {
                    let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(load(chunk.as_ptr(), chunk.len())));
                    let count = chunk.len().div_ceil(2);
                    _mm256_mask_storeu_epi32(dst.as_mut_ptr().add(t * 8).cast(), ((1u32 << count) - 1) as u8, v);
                }
            }
        }
    }

    /// The right operand in panels of `NR` columns, `[panel][pair][column]`, each u32 the
    /// pair `(b[2p][j], b[2p + 1][j])`; columns and the odd tail past the shape are zero.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_right(b: &[f32], layout: Layout, [k, n]: [usize; 2], out: &mut Vec<u32>) {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        out.clear();
        out.resize(panels * pairs * NR, 0);
        match layout {
            Layout::RowMajor { stride } => {
                // Lane 2t of the interleave takes the even row's value t, lane 2t + 1 the odd row's.
                let interleave = _mm512_set_epi16(
                    31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                    18, 2, 17, 1, 16, 0,
                );
                for p in 0..pairs {
                    let even = &b[2 * p * stride..];
                    let odd = (2 * p + 1 < k).then(|| &b[(2 * p + 1) * stride..]);
                    for j in (0..n).step_by(16) {
                        let count = (n - j).min(16);
                        // SAFETY: rows 2p and 2p + 1 hold `n` values from their start; the
                        // store lands inside panel `j / NR`, pair `p`.
                        unsafe {
                            let lo = load(even.as_ptr().add(j), count);
                            let hi = match odd {
                                Some(odd) => load(odd.as_ptr().add(j), count),
                                None => _mm512_setzero_ps(),
                            };
                            let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                            let pairs_of = _mm512_permutexvar_epi16(interleave, both);
                            let at = ((j / NR) * pairs + p) * NR + j % NR;
                            _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), pairs_of);
                        }
                    }
                }
            }
            Layout::ColumnMajor { stride } => {
                let mut row = [0u32; 8];
                for j in 0..n {
                    let column = &b[j * stride..][..k];
                    let base = (j / NR) * pairs * NR + j % NR;
                    for (t, chunk) in column.chunks(16).enumerate() {
                        // SAFETY: `chunk` holds `chunk.len()` values; `row` holds 8 pairs.
                        unsafe {
                            let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(load(chunk.as_ptr(), chunk.len())));
                            _mm256_storeu_si256(row.as_mut_ptr().cast(), v);
                        }
                        for (q, &pair) in row[..chunk.len().div_ceil(2)].iter().enumerate() {
                            out[base + (t * 8 + q) * NR] = pair;
                        }
                    }
                }
            }
        }
    }

    /// One `MR x NR` tile of the result: `c = (load ? c : 0) + a_tile @ b_panel` over
    /// `pairs` pairs. `a` points at the tile's first row (rows `stride` pairs apart), `b`
    /// at the panel's first pair, `c` at the tile's first value (rows `ldc` apart).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile(a: *const u32, stride: usize, b: *const u32, pairs: usize, c: *mut f32, ldc: usize, load: bool) {
        // SAFETY: the caller gives pointers valid for the tile's rows, pairs and columns.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            if load {
                for (r, acc) in acc.iter_mut().enumerate() {
                    acc[0] = _mm512_loadu_ps(c.add(r * ldc));
                    acc[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
                }
            }
            for p in 0..pairs {
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(a.add(r * stride + p).read() as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc), acc[0]);
                _mm512_storeu_ps(c.add(r * ldc + 16), acc[1]);
            }
        }
    }

    /// [`super::matmul`] on AVX512-BF16; the caller checked the CPU and the shapes.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn matmul(
        [m, n, k]: [usize; 3],
        a: &[f32],
        lda: usize,
        b: &[f32],
        b_layout: Layout,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
    ) {
        let pairs = k.div_ceil(2);
        if pairs == 0 {
            if !accumulate {
                (0..m).for_each(|i| c[i * ldc..][..n].fill(0.0));
            }
            return;
        }
        super::with_scratch(|[left, right]| {
            // SAFETY: this function's own features; the shapes were checked by the caller.
            unsafe {
                pack_left(a, lda, [m, k], left);
                pack_right(b, b_layout, [k, n], right);
            }
            let mut edge = [0f32; MR * NR];
            for k0 in (0..pairs).step_by(KC) {
                let count = (pairs - k0).min(KC);
                let load = accumulate || k0 > 0;
                for panel in 0..n.div_ceil(NR) {
                    let (j0, columns) = (panel * NR, (n - panel * NR).min(NR));
                    let b = right[(panel * pairs + k0) * NR..].as_ptr();
                    for i0 in (0..m).step_by(MR) {
                        let rows = (m - i0).min(MR);
                        let a = left[i0 * pairs + k0..].as_ptr();
                        // SAFETY: `left` has whole tiles of rows and `right` whole panels, so
                        // the tile reads `count` pairs inside both; a whole tile writes
                        // inside `c`'s rows `i0..i0 + MR`, columns `j0..j0 + NR`.
                        unsafe {
                            if rows == MR && columns == NR {
                                tile(a, pairs, b, count, c[i0 * ldc + j0..].as_mut_ptr(), ldc, load);
                                continue;
                            }
                            edge.fill(0.0);
                            for r in 0..rows {
                                if load {
                                    edge[r * NR..][..columns].copy_from_slice(&c[(i0 + r) * ldc + j0..][..columns]);
                                }
                            }
                            tile(a, pairs, b, count, edge.as_mut_ptr(), NR, true);
                            for r in 0..rows {
                                c[(i0 + r) * ldc + j0..][..columns].copy_from_slice(&edge[r * NR..][..columns]);
                            }
                        }
                    }
                }
            }
        });
    }

    /// `vcvtneps2bf16` on each value, for the test that holds [`super::to_bf16`] to it.
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn convert(values: &[f32; 16]) -> [u16; 16] {
        // SAFETY: `values` holds 16 floats; the result 16 u16.
        unsafe { std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(values.as_ptr()))) }
    }
}

thread_local! {
    /// Each thread's packed operands (bf16 pairs), kept between products: both are
    /// overwritten whole each time.
    static SCRATCH: RefCell<[Vec<u32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn with_scratch<R>(f: impl FnOnce(&mut [Vec<u32>; 2]) -> R) -> R {
    SCRATCH.with_borrow_mut(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_with_subnormals_flushed() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even one, 1.
        assert_eq!(round(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: even is 1 + 2^-6.
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        assert_eq!(round(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(to_bf16(-f32::MIN_POSITIVE / 4.0), 0x8000);
        assert_eq!(round(f32::MAX), f32::INFINITY);
        assert!(round(f32::NAN).is_nan());
        assert_eq!(round(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    /// The scalar rounding against the instruction itself, bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rounding_matches_the_instruction() {
        if !dot_products_available() {
            eprintln!("no AVX512-BF16 on this CPU: nothing to compare");
            return;
        }
        let mut state = 0x2545f491u32;
        let mut values: Vec<f32> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                f32::from_bits(state)
            })
            .collect();
        values.extend([0.0, -0.0, 1.0, 1.0 + 2f32.powi(-8), f32::MAX, f32::MIN_POSITIVE / 3.0, f32::INFINITY]);
        values.resize(values.len().div_ceil(16) * 16, 0.5);
        for chunk in values.chunks_exact(16) {
            let chunk: &[f32; 16] = chunk.try_into().unwrap();
            // SAFETY: the CPU has the features (checked above).
            let theirs = unsafe { avx512::convert(chunk) };
            for (&v, &t) in chunk.iter().zip(&theirs) {
                if v.is_nan() {
                    assert!(from_bf16(t).is_nan(), "{v:?}");
                } else {
                    assert_eq!(to_bf16(v), t, "{v:e} ({:#010x})", v.to_bits());
                }
            }
        }
    }

    fn random(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.max(1);
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Both layouts of the right operand, odd sizes (edge tiles, an odd summed dimension,
    /// several passes over a panel), with and without accumulation: the dispatched path
    /// (AVX512-BF16 where the CPU has it) against the portable one, and the portable one
    /// against an fp64 sum of the rounded operands.
    #[test]
    fn fast_path_matches_the_portable_one() {
        for &[m, n, k] in &[[8, 32, 2], [13, 45, 37], [64, 2048 + 7, 300], [3, 5, 1], [17, 70, 0]] {
            let a = random(m * (k + 3), 7 + m as u32);
            let b_rows = random(k * n, 11 + n as u32);
            let b_columns: Vec<f32> =
                (0..n).flat_map(|j| (0..k).map(move |i| (i, j))).map(|(i, j)| b_rows[i * n + j]).collect();
            let start = random(m * n, 5);
            for (b, layout) in
                [(&b_rows, Layout::RowMajor { stride: n }), (&b_columns, Layout::ColumnMajor { stride: k })]
            {
                for accumulate in [false, true] {
                    let run = |fast: bool| {
                        let mut c = start.clone();
                        if fast {
                            matmul([m, n, k], &a, k + 3, b, layout, &mut c, n, accumulate);
                        } else {
                            portable([m, n, k], &a, k + 3, b, layout, &mut c, n, accumulate);
                        }
                        c
                    };
                    let (fast, slow) = (run(true), run(false));
                    for i in 0..m {
                        for j in 0..n {
                            let exact: f64 = (0..k)
                                .map(|t| round(a[i * (k + 3) + t]) as f64 * round(b_rows[t * n + j]) as f64)
                                .sum::<f64>()
                                + if accumulate { start[i * n + j] as f64 } else { 0.0 };
                            let tolerance = 1e-6 * (k as f64 + 1.0);
                            let at = i * n + j;
                            assert!((slow[at] as f64 - exact).abs() <= tolerance, "portable {m}x{n}x{k} at {i},{j}");
                            assert!(
                                (fast[at] as f64 - exact).abs() <= tolerance,
                                "fast {m}x{n}x{k} {layout:?} at {i},{j}"
                            );
                        }
                    }
                }
            }
        }
    }
}
