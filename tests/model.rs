//! The models against their references, on the CPU: the seed model's parameter count and
//! summary table, and every architecture's outputs for fixed weights and inputs against
//! Keras's, torchvision's and the EfficientNet-Lite package's (the checks are in
//! `util/reference.rs`, which `tests/gpu.rs` runs on wgpu); loading pretrained files.

mod util;

use burn::module::Module;
use burn::prelude::*;
use classify::model::{ModelKind, Network};
use util::reference;

#[test]
fn seed_model_has_the_original_parameter_count_and_summary() {
    let device = Device::flex();
    let net = Network::init(ModelKind::Seed, 10, &device);
    assert_eq!(net.num_params(), 4_200_842);
    let summary = net.summary(32);
    assert_eq!(summary.total_params(), 4_200_842);
    let params: Vec<usize> = summary.rows.iter().map(|r| r.params).collect();
    assert_eq!(params, vec![896, 0, 0, 4_194_816, 0, 5_130]);
    let text = summary.to_string();
    assert!(text.contains("Total params: 4,200,842"), "{text}");
    assert!(text.contains("(None, 32, 16, 16)"), "{text}");
}

#[test]
fn seed_model_output_shape_follows_the_class_count() {
    let device = Device::flex();
    let net = Network::init(ModelKind::Seed, 7, &device);
    let logits = net.forward(Tensor::zeros([3, 3, 32, 32], &device));
    assert_eq!(logits.dims(), [3, 7]);
}

#[test]
fn seed_model_matches_keras_reference_values() {
    reference::seed_matches_keras(&Device::flex());
}

/// A torchvision ResNet saved by `torch.save` (tests/reference/resnet_torchvision_reference.py:
/// torchvision's own classes at width 4, random BatchNorm statistics) gives, loaded into
/// classify's ResNet, the logits PyTorch computed, within 1e-4.
#[test]
fn resnets_load_torchvision_state_dicts_and_match_its_logits() {
    reference::resnets_match_torchvision(&Device::flex());
}

/// A state dict of another architecture is refused with the file and what does not fit.
#[test]
fn a_resnet50_state_dict_does_not_load_into_a_resnet18() {
    use classify::model::{Depth, Head, ResNetConfig};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/resnet50_torchvision.pt");
    let mut net = ResNetConfig::new(Depth::R18, 5).with_width(4).init(&burn::tensor::Device::flex());
    let err = net.load_torchvision(&path, Head::Replace).unwrap_err().to_string();
    assert!(err.contains("resnet50_torchvision.pt") && err.contains("resnet18"), "{err}");
}

/// The official EfficientNet-Lite0 ImageNet weights, loaded from the package's `.pth`
/// (legacy torch format, transposed TensorFlow kernels), give the package's own logits.
#[test]
fn efficientnet_lite0_with_imagenet_weights_matches_the_package_logits() {
    reference::lite0_matches_package(&Device::flex());
}

/// Lite0 has the reference's 4,694,024 values with ImageNet's head (4,652,008 weights and
/// biases, 42,016 BatchNorm statistics); a pretrained file loads into a network for other
/// classes with the head left as the network's own.
#[test]
fn efficientnet_lite0_has_the_reference_size_and_takes_a_new_head() {
    use burn::module::Module;
    use classify::model::{EfficientNetConfig, Head, Variant};
    let device = burn::tensor::Device::flex();
    let imagenet = EfficientNetConfig::new(Variant::Lite0, 1000).init(&device);
    // Less the fixed input normalisation (a mean and a deviation per channel).
    let fixed = 6;
    assert_eq!(imagenet.num_params() - fixed, 4_694_024);
    let Some(weights) = reference::lite0_weights() else { return };
    let mut net = EfficientNetConfig::new(Variant::Lite0, 3).init(&device);
    let head_before = net.fc.weight.val().into_data();
    net.load_package(&weights, Head::Replace).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(net.fc.weight.val().into_data(), head_before, "the new head was overwritten");
    let mut loaded = EfficientNetConfig::new(Variant::Lite0, 1000).init(&device);
    loaded.load_package(&weights, Head::Keep).unwrap();
    assert_eq!(net.conv_stem.weight.val().into_data(), loaded.conv_stem.weight.val().into_data());
    // A file for another width does not fit, and says which tensor first.
    let mut lite2 = EfficientNetConfig::new(Variant::Lite2, 3).init(&device);
    let err = lite2.load_package(&weights, Head::Replace).unwrap_err().to_string();
    assert!(err.contains("efficientnet-lite0-57934424.pth") && err.contains("efficientnet-lite2"), "{err}");
    assert!(err.contains("tensor ") && err.contains("more"), "{err}");
}

/// Files that are not weights, or weights of part of a network, are refused naming the
/// file and the first tensor missing; a safetensors file of a state dict loads as the
/// `.pt` of it does.
#[test]
fn pretrained_files_are_checked_and_read_in_both_formats() {
    use classify::model::{Depth, Head, ResNetConfig};
    let tmp = tempfile::tempdir().unwrap();
    let device = burn::tensor::Device::flex();
    let mut net = ResNetConfig::new(Depth::R18, 5).with_width(4).init(&device);
    let junk = tmp.path().join("weights.pth");
    std::fs::write(&junk, b"not a state dict").unwrap();
    let err = net.load_torchvision(&junk, Head::Replace).unwrap_err().to_string();
    assert!(err.contains("weights.pth"), "{err}");
    let err = net.load_torchvision(&tmp.path().join("absent.pt"), Head::Replace).unwrap_err().to_string();
    assert!(err.contains("absent.pt") && err.contains("no such file"), "{err}");

    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    // The ResNet-18 fixture as safetensors, and with layer4 missing (a partial file).
    net.load_torchvision(&reference.join("resnet18_torchvision.safetensors"), Head::Keep)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut from_pt = ResNetConfig::new(Depth::R18, 5).with_width(4).init(&device);
    from_pt.load_torchvision(&reference.join("resnet18_torchvision.pt"), Head::Keep).unwrap();
    assert_eq!(net.layer3[1].conv2.weight.val().into_data(), from_pt.layer3[1].conv2.weight.val().into_data());
    assert_eq!(net.fc.weight.val().into_data(), from_pt.fc.weight.val().into_data());
    let err =
        net.load_torchvision(&reference.join("resnet18_partial.safetensors"), Head::Replace).unwrap_err().to_string();
    assert!(err.contains("resnet18_partial.safetensors") && err.contains("no tensor layer4."), "{err}");
}
