//! Choosing where tensors live. Explicit, because burn's `Device::default()` prefers a GPU
//! when one is compiled in, and a user who asked for the CPU should get the CPU.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_recognised_with_and_without_autodiff() {
        assert!(is_cpu(&Device::flex()));
        assert!(is_cpu(&Device::flex().autodiff()));
        assert!(is_cpu(&select(DeviceKind::Cpu).unwrap()));
    }
}
