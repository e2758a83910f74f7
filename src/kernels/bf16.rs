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

/// Writes line `index` of a matrix (a row, or a column) into the slice given, whole: for
/// operands that are never stored whole, such as a convolution's patch matrix.
pub type Line<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// The left operand `a` (`m x k`).
#[derive(Clone, Copy)]
pub enum Left<'a> {
    /// `a[i][t]` at `values[i * stride + t]`.
    RowMajor { values: &'a [f32], stride: usize },
    /// Row `i` (`k` values) written by the function.
    Rows(Line<'a>),
}

/// The right operand `b` (`k x n`).
#[derive(Clone, Copy)]
pub enum Right<'a> {
    /// `b[t][j]` at `values[t * stride + j]`.
    RowMajor { values: &'a [f32], stride: usize },
    /// Row `t` (`n` values) written by the function.
    Rows(Line<'a>),
    /// Column `j` (`k` values) written by the function.
    Columns(Line<'a>),
}

/// Where the result `c` (`m x n`) goes.
pub enum Out<'a> {
    /// `c[i][j]` at `values[i * stride + j]`.
    RowMajor { values: &'a mut [f32], stride: usize },
    /// The columns are `images x pixels` and the rows maps: `c[i][j]` at
    /// `values[((j / pixels) * m + i) * pixels + j % pixels]`, a convolution's output
    /// `[images, m, pixels]` written in place.
    Planes { values: &'a mut [f32], pixels: usize },
}

impl Out<'_> {
    /// Where `c[i][j]` lies, for a result of `m` rows.
    fn at(&self, m: usize, i: usize, j: usize) -> usize {
        match *self {
            Out::RowMajor { stride, .. } => i * stride + j,
            Out::Planes { pixels, .. } => ((j / pixels) * m + i) * pixels + j % pixels,
        }
    }

    /// Where a block of `width` columns from `(i, j)` starts and the distance between its
    /// rows, when each of its rows is contiguous.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn block(&self, m: usize, i: usize, j: usize, width: usize) -> Option<(usize, usize)> {
        match *self {
            Out::RowMajor { stride, .. } => Some((self.at(m, i, j), stride)),
            Out::Planes { pixels, .. } => (j % pixels + width <= pixels).then(|| (self.at(m, i, j), pixels)),
        }
    }

    /// The contiguous runs of row `i` from column `j` for `width` columns, as (offset from
    /// `j`, where it lies, length), handed to `each`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn runs(
        &mut self,
        m: usize,
        i: usize,
        j: usize,
        width: usize,
        mut each: impl FnMut(&mut [f32], usize, usize, usize),
    ) {
        let run = match *self {
            Out::RowMajor { .. } => width.max(1),
            Out::Planes { pixels, .. } => pixels,
        };
        let mut column = j;
        while column < j + width {
            let length = (run - column % run).min(j + width - column);
            let at = self.at(m, i, column);
            each(self.values(), column - j, at, length);
            column += length;
        }
    }

    /// Row `i`'s values from column `j` into `dst`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn read_row(&mut self, m: usize, i: usize, j: usize, dst: &mut [f32]) {
        self.runs(m, i, j, dst.len(), |values, offset, at, length| {
            dst[offset..][..length].copy_from_slice(&values[at..][..length])
        });
    }

    /// `src` into row `i` from column `j`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn write_row(&mut self, m: usize, i: usize, j: usize, src: &[f32]) {
        self.runs(m, i, j, src.len(), |values, offset, at, length| {
            values[at..][..length].copy_from_slice(&src[offset..][..length])
        });
    }

    fn values(&mut self) -> &mut [f32] {
        match self {
            Out::RowMajor { values, .. } | Out::Planes { values, .. } => values,
        }
    }
}

/// `c [m x n] = a [m x k] @ b [k x n]` (or `c += ...` when `accumulate`), both operands
/// rounded to bf16 and the sums kept in fp32. Single-threaded: callers run one per group of
/// images.
///
/// # Panics
/// If a stored operand or the result is shorter than its shape says.
pub fn matmul([m, n, k]: [usize; 3], a: Left, b: Right, mut c: Out, accumulate: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        match a {
            Left::RowMajor { values, stride } => assert!(values.len() >= (m - 1) * stride + k, "left operand short"),
            Left::Rows(_) => {}
        }
        if let Right::RowMajor { values, stride } = b {
            assert!(values.len() >= (k - 1) * stride + n, "right operand short");
        }
    }
    let last = c.at(m, m - 1, n - 1);
    assert!(c.values().len() > last, "result shorter than its shape");
    #[cfg(target_arch = "x86_64")]
    if dot_products_available() {
        // SAFETY: the CPU has the features `avx512::matmul` is compiled for, and the
        // asserts above bound every index it takes.
        return unsafe { avx512::matmul([m, n, k], a, b, c, accumulate) };
    }
    portable([m, n, k], a, b, c, accumulate);
}

/// The portable path: operands rounded, then an fp32 product, then the result put in place.
fn portable([m, n, k]: [usize; 3], a: Left, b: Right, mut c: Out, accumulate: bool) {
    let mut left = vec![0f32; m * k];
    for (i, row) in left.chunks_exact_mut(k.max(1)).enumerate().take(m) {
        match a {
            Left::RowMajor { values, stride } => row.copy_from_slice(&values[i * stride..][..k]),
            Left::Rows(line) => line(i, row),
        }
    }
    let mut right = vec![0f32; k * n];
    match b {
        Right::RowMajor { values, stride } => {
            (0..k).for_each(|t| right[t * n..][..n].copy_from_slice(&values[t * stride..][..n]));
        }
        Right::Rows(line) => (0..k).for_each(|t| line(t, &mut right[t * n..][..n])),
        Right::Columns(line) => {
            let mut column = vec![0f32; k];
            for j in 0..n {
                line(j, &mut column);
                column.iter().enumerate().for_each(|(t, &v)| right[t * n + j] = v);
            }
        }
    }
    left.iter_mut().chain(right.iter_mut()).for_each(|v| *v = round(*v));
    let mut product = vec![0f32; m * n];
    if accumulate {
        for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
            let at = c.at(m, i, j);
            product[i * n + j] = c.values()[at];
        }
    }
    // SAFETY: the strides and sizes describe the three buffers just made.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            product.as_mut_ptr(),
            1,
            n as isize,
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
    for i in 0..m {
        for j in 0..n {
            let at = c.at(m, i, j);
            c.values()[at] = product[i * n + j];
        }
    }
}

/// Rows of the fast path's result tile: one 32-bit broadcast of the left operand each.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MR: usize = 8;
/// Columns of the result tile and of a right-operand panel: two vectors of 16 sums.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const NR: usize = 32;
/// Pairs of the summed dimension per pass over a panel: a panel's slice (`KC x NR` pairs,
/// 16 KiB) stays in the L1 cache while every row tile of the left operand runs over it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 128;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{KC, Left, MR, NR, Out, Right};

    /// Sixteen f32 from `src` (fewer where `count < 16`, the rest zero).
    #[target_feature(enable = "avx512f")]
    unsafe fn load(src: *const f32, count: usize) -> __m512 {
        // SAFETY: the caller's pointer is valid for `count` values; masked lanes are not read.
        unsafe {
            if count >= 16 { _mm512_loadu_ps(src) } else { _mm512_maskz_loadu_ps(((1u32 << count) - 1) as u16, src) }
        }
    }

    /// `values` rounded to bf16 as pairs, into `out` (`values.len().div_ceil(2)` u32; the
    /// second half of an odd tail's pair zero).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn to_pairs(values: &[f32], out: &mut [u32]) {
        debug_assert!(out.len() >= values.len().div_ceil(2));
        for (t, chunk) in values.chunks(16).enumerate() {
            // SAFETY: `chunk` holds `chunk.len()` values; the store writes
            // `chunk.len().div_ceil(2)` pairs, which `out` has from `t * 8` on.
            unsafe {
                let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(load(chunk.as_ptr(), chunk.len())));
                let count = chunk.len().div_ceil(2);
                _mm256_mask_storeu_epi32(out.as_mut_ptr().add(t * 8).cast(), ((1u32 << count) - 1) as u8, v);
            }
        }
    }

    /// The left operand's rows as bf16 pairs along `k` (`pairs` u32 a row), the rows
    /// rounded up to whole tiles with zero rows. `line` is a `k`-value scratch row.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_left(a: Left, [m, k]: [usize; 2], line: &mut Vec<f32>, out: &mut Vec<u32>) {
        let pairs = k.div_ceil(2);
        out.resize(m.div_ceil(MR) * MR * pairs, 0);
        out[m * pairs..].fill(0);
        line.resize(k, 0.0);
        for i in 0..m {
            let row = match a {
                Left::RowMajor { values, stride } => &values[i * stride..][..k],
                Left::Rows(write) => {
                    write(i, line);
                    &line[..]
                }
            };
            // SAFETY: this function's own features.
            unsafe { to_pairs(row, &mut out[i * pairs..][..pairs]) };
        }
    }

    /// The right operand in panels of `NR` columns, `[panel][pair][column]`, each u32 the
    /// pair `(b[2p][j], b[2p + 1][j])`; columns past `n` and the odd tail are zero. `lines`
    /// is scratch for two rows or one column.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_right(b: Right, [k, n]: [usize; 2], lines: &mut Vec<f32>, out: &mut Vec<u32>) {
        let pairs = k.div_ceil(2);
        let panels = n.div_ceil(NR);
        out.resize(panels * pairs * NR, 0);
        if n % NR != 0 {
            // The last panel's columns past `n`, which nothing below writes.
            out[(panels - 1) * pairs * NR..].fill(0);
        }
        match b {
            Right::RowMajor { .. } | Right::Rows(_) => {
                // Lane 2q of the interleave takes the even row's value q, lane 2q + 1 the odd row's.
                let interleave = _mm512_set_epi16(
                    31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3,
                    18, 2, 17, 1, 16, 0,
                );
                lines.resize(2 * n, 0.0);
                for p in 0..pairs {
                    let has_odd = 2 * p + 1 < k;
                    let (even, odd): (&[f32], &[f32]) = match b {
                        Right::RowMajor { values, stride } => {
                            let odd = if has_odd { &values[(2 * p + 1) * stride..][..n] } else { &lines[n..] };
                            (&values[2 * p * stride..][..n], odd)
                        }
                        Right::Rows(write) => {
                            let (first, second) = lines.split_at_mut(n);
                            write(2 * p, first);
                            if has_odd {
                                write(2 * p + 1, second);
                            }
                            (&lines[..n], &lines[n..])
                        }
                        Right::Columns(_) => unreachable!(),
                    };
                    for j in (0..n).step_by(16) {
                        let count = (n - j).min(16);
                        // SAFETY: both rows hold `n` values; the store lands inside panel
                        // `j / NR`, pair `p`.
                        unsafe {
                            let lo = load(even.as_ptr().add(j), count);
                            let hi = if has_odd { load(odd.as_ptr().add(j), count) } else { _mm512_setzero_ps() };
                            let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                            let pairs_of = _mm512_permutexvar_epi16(interleave, both);
                            let at = ((j / NR) * pairs + p) * NR + j % NR;
                            _mm512_storeu_si512(out.as_mut_ptr().add(at).cast(), pairs_of);
                        }
                    }
                }
            }
            Right::Columns(write) => {
                lines.resize(k, 0.0);
                let mut chunk_pairs = [0u32; 8];
                for j in 0..n {
                    write(j, lines);
                    let base = (j / NR) * pairs * NR + j % NR;
                    for (t, chunk) in lines[..k].chunks(16).enumerate() {
                        // SAFETY: this function's own features.
                        unsafe { to_pairs(chunk, &mut chunk_pairs) };
                        for (q, &pair) in chunk_pairs[..chunk.len().div_ceil(2)].iter().enumerate() {
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
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn matmul([m, n, k]: [usize; 3], a: Left, b: Right, mut c: Out, accumulate: bool) {
        let pairs = k.div_ceil(2);
        if pairs == 0 {
            if !accumulate {
                for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                    let at = c.at(m, i, j);
                    c.values()[at] = 0.0;
                }
            }
            return;
        }
        super::SCRATCH.with_borrow_mut(|(left, right, lines)| {
            // SAFETY: this function's own features; the shapes were checked by the caller.
            unsafe {
                pack_left(a, [m, k], lines, left);
                pack_right(b, [k, n], lines, right);
            }
            let tiles = m.div_ceil(MR);
            // A panel's result, for panels whose rows are not contiguous in `c` (maps
            // narrower than a panel, the last columns, a last tile of fewer rows).
            let mut buffer = vec![0f32; tiles * MR * NR];
            for panel in 0..n.div_ceil(NR) {
                let (j0, columns) = (panel * NR, (n - panel * NR).min(NR));
                let direct = if columns == NR && m % MR == 0 { c.block(m, 0, j0, NR) } else { None };
                if direct.is_none() {
                    buffer.fill(0.0);
                    if accumulate {
                        (0..m).for_each(|i| c.read_row(m, i, j0, &mut buffer[i * NR..][..columns]));
                    }
                }
                for k0 in (0..pairs).step_by(KC) {
                    let count = (pairs - k0).min(KC);
                    let b = right[(panel * pairs + k0) * NR..].as_ptr();
                    for tile_index in 0..tiles {
                        let i0 = tile_index * MR;
                        let a = left[i0 * pairs + k0..].as_ptr();
                        // SAFETY: `left` has whole tiles of rows and `right` whole panels, so
                        // the tile reads `count` pairs inside both; a direct tile writes `MR`
                        // rows of `NR` values, `ldc` apart, inside `c` (`block` says so), a
                        // buffered one inside `buffer`.
                        unsafe {
                            match c.block(m, i0, j0, NR).filter(|_| direct.is_some()) {
                                Some((at, ldc)) => {
                                    tile(a, pairs, b, count, c.values()[at..].as_mut_ptr(), ldc, accumulate || k0 > 0)
                                }
                                None => tile(a, pairs, b, count, buffer[i0 * NR..].as_mut_ptr(), NR, true),
                            }
                        }
                    }
                }
                if direct.is_none() {
                    (0..m).for_each(|i| c.write_row(m, i, j0, &buffer[i * NR..][..columns]));
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
    /// Each thread's packed operands (bf16 pairs) and a scratch line or two, kept between
    /// products: all are overwritten before they are read.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    static SCRATCH: RefCell<(Vec<u32>, Vec<u32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
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

    /// Every kind of operand and result, odd sizes (edge tiles, an odd summed dimension,
    /// several passes over a panel, maps narrower than a tile), with and without
    /// accumulation: the dispatched path (AVX512-BF16 where the CPU has it) and the portable
    /// one, each against an fp64 sum of the rounded operands.
    #[test]
    fn fast_path_matches_the_portable_one() {
        for &[m, n, k, pixels] in &[
            [8, 32, 2, 32],
            [16, 300, 40, 100],
            [13, 45, 37, 9],
            [64, 2048 + 7, 300, 15],
            [3, 5, 1, 5],
            [17, 70, 0, 7],
        ] {
            let stride = k + 3;
            let a = random(m * stride, 7 + m as u32);
            let b = random(k * n, 11 + n as u32);
            let b_columns: Vec<f32> = (0..n).flat_map(|j| (0..k).map(|t| b[t * n + j]).collect::<Vec<_>>()).collect();
            let start = random(m * n, 5);
            let a_row = |i: usize, dst: &mut [f32]| dst.copy_from_slice(&a[i * stride..][..k]);
            let b_row = |t: usize, dst: &mut [f32]| dst.copy_from_slice(&b[t * n..][..n]);
            let b_column = |j: usize, dst: &mut [f32]| dst.copy_from_slice(&b_columns[j * k..][..k]);
            let lefts = [Left::RowMajor { values: &a, stride }, Left::Rows(&a_row)];
            let rights = [Right::RowMajor { values: &b, stride: n }, Right::Rows(&b_row), Right::Columns(&b_column)];
            for (which, (left, right)) in lefts.iter().flat_map(|l| rights.iter().map(move |r| (*l, *r))).enumerate() {
                for (planes, accumulate) in [(false, false), (false, true), (true, false), (true, true)] {
                    let images = n.div_ceil(pixels);
                    let at = |i: usize, j: usize| {
                        if planes { ((j / pixels) * m + i) * pixels + j % pixels } else { i * n + j }
                    };
                    let mut initial = vec![0f32; images * pixels * m];
                    (0..m).for_each(|i| (0..n).for_each(|j| initial[at(i, j)] = start[i * n + j]));
                    let run = |fast: bool| {
                        let mut values = initial.clone();
                        let out = if planes {
                            Out::Planes { values: &mut values, pixels }
                        } else {
                            Out::RowMajor { values: &mut values, stride: n }
                        };
                        if fast {
                            matmul([m, n, k], left, right, out, accumulate);
                        } else {
                            portable([m, n, k], left, right, out, accumulate);
                        }
                        values
                    };
                    let (fast, slow) = (run(true), run(false));
                    for (i, j) in (0..m).flat_map(|i| (0..n).map(move |j| (i, j))) {
                        let exact: f64 =
                            (0..k).map(|t| round(a[i * stride + t]) as f64 * round(b[t * n + j]) as f64).sum::<f64>()
                                + if accumulate { start[i * n + j] as f64 } else { 0.0 };
                        let tolerance = 1e-6 * (k as f64 + 1.0);
                        let case = format!(
                            "{m}x{n}x{k}, operands {which}, planes {planes}, accumulate {accumulate}, at {i},{j}"
                        );
                        assert!((slow[at(i, j)] as f64 - exact).abs() <= tolerance, "portable {case}");
                        assert!((fast[at(i, j)] as f64 - exact).abs() <= tolerance, "fast {case}");
                    }
                }
            }
        }
    }
}
