//! The 3x3 convolutions' matrix products, one thread: the `gemm` crate's fp32 product (what
//! `--precision fp32` runs) against `classify::kernels::bf16::matmul` (`--precision bf16`:
//! AVX512-BF16 where the CPU has it, else the emulation), on the `fast` model's layers as
//! `kernels::conv3x3` cuts them: `weight [filters, channels*9] @ patches [channels*9, 2048]`.
//! Prints GFLOP/s (2 x multiply-adds per second, best of REPEATS).
//!
//!     cargo bench --bench products [-- REPEATS]    (default 5)

use std::time::Instant;

use classify::kernels::bf16::{Left, Out, Right, matmul};

/// (channels, filters) of the fast model's 3x3 convolutions.
const LAYERS: [(usize, usize); 6] = [(24, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)];
const COLUMNS: usize = 2048;

/// Values in [-1, 1) that vary from one to the next (the product's speed does not depend on
/// them, only on their count).
fn values(count: usize, seed: usize) -> Vec<f32> {
    (0..count).map(|i| ((i * 7919 + seed * 104_729) % 2048) as f32 / 1024.0 - 1.0).collect()
}

fn best(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let repeats = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    println!("bf16 products: {}", classify::kernels::bf16::path());
    println!("| channels -> filters | K | fp32 gemm GFLOP/s | bf16 GFLOP/s | ratio |");
    println!("| --- | --- | --- | --- | --- |");
    for (channels, filters) in LAYERS {
        let rows = channels * 9;
        let (weight, patches) = (values(filters * rows, 3), values(rows * COLUMNS, 5));
        let mut out = vec![0f32; filters * COLUMNS];
        let flops = 2.0 * (filters * rows * COLUMNS) as f64;
        let fp32 = best(repeats, || {
            // SAFETY: the strides and sizes describe the three buffers; no aliasing.
            unsafe {
                gemm::gemm(
                    filters,
                    COLUMNS,
                    rows,
                    out.as_mut_ptr(),
                    1,
                    COLUMNS as isize,
                    false,
                    weight.as_ptr(),
                    1,
                    rows as isize,
                    patches.as_ptr(),
                    1,
                    COLUMNS as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        });
        let bf16 = best(repeats, || {
            let left = Left::RowMajor { values: &weight, stride: rows };
            let right = Right::RowMajor { values: &patches, stride: COLUMNS };
            matmul([filters, COLUMNS, rows], left, right, Out::RowMajor { values: &mut out, stride: COLUMNS }, false)
        });
        println!(
            "| {channels} -> {filters} | {rows} | {:.1} | {:.1} | {:.2} |",
            flops / fp32 / 1e9,
            flops / bf16 / 1e9,
            fp32 / bf16
        );
    }
}
