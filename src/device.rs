//! Choosing where tensors live, and how the CPU threads that compute are set up.
//!
//! The device is explicit, because burn's `Device::default()` prefers a GPU when one is
//! compiled in, and a user who asked for the CPU should get the CPU.
//!
//! Every thread that computes flushes subnormal floats to zero ([`flush_subnormals`]):
//! Adam's moments of weights whose gradients are zero decay by 0.9 and 0.999 per step into
//! the subnormal range, and Intel cores take a microcode assist on every subnormal operand,
//! which made real seed epochs on an Intel Xeon 2-4x slower than on AMD (the issue behind
//! this measured 27% of one checkpoint's optimiser values subnormal). TensorFlow sets the
//! same two flags on its compute threads; PyTorch offers `torch.set_flush_denormal`.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// The devices `--device` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// burn's Flex backend: pure Rust, multi-threaded, SIMD.
    Cpu,
    /// Any GPU through wgpu (Vulkan, Metal, DX12); needs the `wgpu` cargo feature.
    Wgpu,
    /// NVIDIA GPUs through CUDA; needs the `cuda` cargo feature.
    Cuda,
}

impl DeviceKind {
    /// The name used on the command line and in run folders.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// A device this build cannot provide.
#[derive(Debug, thiserror::Error)]
#[error(
    "this classify was built without {feature} support: rebuild with `cargo build --release --features {feature}`, or use `--device cpu`"
)]
pub struct UnsupportedDevice {
    feature: &'static str,
}

/// The device for `kind`, without autodiff.
pub fn select(kind: DeviceKind) -> Result<Device, UnsupportedDevice> {
    match kind {
        DeviceKind::Cpu => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => Ok(Device::wgpu(Default::default())),
        #[cfg(not(feature = "wgpu"))]
        DeviceKind::Wgpu => Err(UnsupportedDevice { feature: "wgpu" }),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => Err(UnsupportedDevice { feature: "cuda" }),
    }
}

/// Whether `device` is burn's Flex CPU backend (with or without autodiff): where host-side
/// kernels (fused Adam, the gathered max pool) beat burn's general ones, and where reading a
/// tensor costs no transfer.
pub fn is_cpu(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Makes the calling thread treat subnormal floats as zero, in its inputs (x86's DAZ,
/// "denormals are zero") and its results (FTZ, "flush to zero"); on AArch64, FPCR's FZ bit,
/// which does both. A no-op on other targets. A value under `f32::MIN_POSITIVE` (1.2e-38) is
/// then 0: a change of at most 1.2e-38 per operation, far below what any weight, gradient
/// or probability here can resolve.
pub fn flush_subnormals() {
    #[cfg(target_arch = "x86_64")]
    {
        const DAZ: u32 = 1 << 6;
        const FTZ: u32 = 1 << 15;
        let mut csr: u32 = 0;
        // SAFETY: reads and writes this thread's MXCSR (SSE is baseline on x86-64); only the
        // DAZ and FTZ bits change.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= DAZ | FTZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        const FZ: u64 = 1 << 24;
        let mut fpcr: u64;
        // SAFETY: reads and writes this thread's FPCR; only the FZ bit changes.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
            fpcr |= FZ;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
    }
}

/// Whether the calling thread flushes subnormals (see [`flush_subnormals`]), read off a
/// computation: half the smallest normal float is subnormal, and comes out as zero.
pub fn flushes_subnormals() -> bool {
    let half = std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5);
    half == 0.0
}

/// Sets up the CPU threads that compute: the global rayon pool (burn Flex, `gemm`, the host
/// kernels and image decoding all run on it) with `threads` workers (`None`: one per core),
/// each flushing subnormals, and the calling thread too. Call once, before any computation.
pub fn init_compute_threads(threads: Option<usize>) -> Result<(), rayon::ThreadPoolBuildError> {
    flush_subnormals();
    let mut pool = rayon::ThreadPoolBuilder::new().start_handler(|_| flush_subnormals());
    if let Some(threads) = threads {
        pool = pool.num_threads(threads.max(1));
    }
    pool.build_global()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_flushes_reads_subnormals_as_zero() {
        // A fresh thread, so no other test's thread changes state.
        let (before, after, tiny) = std::thread::spawn(|| {
            let before = flushes_subnormals();
            flush_subnormals();
            let tiny = std::hint::black_box(1e-40f32) + 0.0;
            (before, flushes_subnormals(), tiny)
        })
        .join()
        .unwrap();
        assert!(!before, "threads start with IEEE subnormals");
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert!(after, "subnormal results are flushed");
            assert_eq!(tiny, 0.0, "subnormal inputs read as zero");
        }
    }

    #[test]
    fn the_cpu_is_recognised_with_and_without_autodiff() {
        assert!(is_cpu(&Device::flex()));
        assert!(is_cpu(&Device::flex().autodiff()));
        assert!(is_cpu(&select(DeviceKind::Cpu).unwrap()));
    }
}
