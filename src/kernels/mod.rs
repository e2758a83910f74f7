//! CPU backend extensions and host kernels: the operations where burn Flex's general
//! implementation was measured slower than a hand-written one on these machines.
//!
//! One file per operation, each with ONE routing function that picks the fused CPU kernel
//! or burn's general op for the tensor's device, so a model's `forward` names layers and
//! never devices:
//!
//! | routing function | computes | CPU path |
//! | --- | --- | --- |
//! | [`conv3x3`] | 3x3 "same" convolution, no bias | extension: host im2col + `gemm`, both gradients; with `--precision bf16` [`bf16::matmul`] (AVX512-BF16 or emulated) |
//! | [`conv3x3_constant_input`], [`conv_of_constant`] | a convolution whose input needs no gradient | im2col product in burn ops |
//! | [`conv_relu_pool`] | 3x3 convolution with bias + ReLU + 2x2 max pool | host kernel (inference), extension (training) |
//! | [`max_pool_2x2`] | 2x2 max pool, stride 2 | host arg-max + `gather` |
//! | [`dense`] | `x @ weight + bias` | extension: AVX-512 tiles or `gemm` |
//! | [`int8_dense`] | a dense layer with int8 weights, inference | integer products (AVX-512 VNNI or portable) |
//! | [`batch_norm_relu`], [`batch_norm_clamp`] | BatchNorm + ReLU (ReLU6, none) | training: extension, two passes forward, two back; inference: one host pass |
//! | [`depthwise_conv`] | depthwise convolution (one filter per channel), any square kernel and stride | extension: row loops, portable and AVX-512, both gradients |
//!
//! Every hand-written SIMD path has a portable twin chosen at run time by CPU feature
//! detection, and each kernel's tests hold it to burn's own layers. A kernel knows tensors
//! and slices, never an architecture, a file or a dataset.

mod batch_norm_relu;
pub mod bf16;
mod conv3x3;
mod conv_constant_input;
mod conv_relu_pool;
mod dense;
mod depthwise;
mod int8_dense;
mod max_pool;

pub use batch_norm_relu::{Bounds, batch_norm_clamp, batch_norm_relu};
pub use bf16::{Precision, precision, set_precision};
pub use conv_constant_input::{conv_of_constant, conv3x3_constant_input};
pub use conv_relu_pool::{conv_relu_pool, conv3x3_relu_pool};
pub use conv3x3::conv3x3;
pub use dense::dense;
pub use depthwise::depthwise_conv;
pub use int8_dense::{Int8Dense, int8_dense, int8_scheme, quantize_tensor};
pub use max_pool::{gathered_max_pool_2x2, max_pool_2x2};

use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use serde::Serialize;

/// One operation of the table above and the code it runs on this CPU, as each routing
/// function's own run-time choice reports it (for `classify bench`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelPath {
    pub operation: &'static str,
    pub path: &'static str,
}

/// The path every host kernel takes on this CPU. Off the CPU none of them run: burn's own
/// operations for that device do the work.
pub fn paths() -> Vec<KernelPath> {
    [
        ("3x3 convolution and its gradients", gemm_path()),
        ("3x3 convolution products at --precision bf16", bf16::path()),
        ("3x3 convolution + ReLU + 2x2 max pool, inference", conv_relu_pool::path()),
        ("dense", dense::path()),
        ("depthwise convolution and its gradients", depthwise::Isa::detect().name()),
        ("int8 dense, inference", int8_dense::path()),
        ("BatchNorm + ReLU, 2x2 max pool", "host loops, compiled for the build's target"),
    ]
    .into_iter()
    .map(|(operation, path)| KernelPath { operation, path })
    .collect()
}

/// The 3x3 convolutions' products: the `gemm` crate (0.19, built with `x86-v4`) picks its
/// f32 micro-kernels at run time by testing for AVX-512F, then FMA, as this does.
fn gemm_path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "im2col + the gemm crate's AVX-512 micro-kernels"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "im2col + the gemm crate's AVX2+FMA micro-kernels"
        } else {
            "im2col + the gemm crate's portable micro-kernels"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        "im2col + the gemm crate's NEON micro-kernels"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "im2col + the gemm crate's portable micro-kernels"
    }
}

/// Whether `device` is burn's Flex CPU backend, with or without autodiff: the one device
/// the host kernels serve (reading a tensor there costs no transfer).
fn is_flex(device: &Device) -> bool {
    crate::device::is_cpu(device)
}

/// A Flex tensor owning `values` (row-major), for the host kernels' results.
fn flex_tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// The values of a contiguous f32 Flex tensor, for the host kernels; the extensions made it
/// contiguous and their routing functions send only f32 tensors here.
fn f32_values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32 tensor")
}

/// The largest absolute difference between two tensors, for the tests that hold a kernel to
/// burn's own layers.
#[cfg(test)]
pub(crate) fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}
