//! ONNX export against an independent runtime: graphs written by `classify export` run in
//! tract (tools/onnx-check, its own cargo workspace, built here on first use) and give the
//! logits classify computes for the same images, fp32 and int8, for the seed, fast, ResNet-18
//! and EfficientNet-Lite0 models (each graph written from the network's own description).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use classify::classifier::Classifier;
use classify::data::Splits;
use classify::geometry::{Framing, ImageShape};
use classify::model::{ModelKind, Network, Seed, images_to_tensor};
use classify::quantize::Quantize;
use classify::run::{RunConfig, RunDir};
use classify::settings::RecipeName;
use classify::train::{self, Progress};
use util::{classify, ok, stdout};

/// Builds the tract-based checker (a no-op once built) and returns its path.
fn onnx_check() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("onnx-check");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--quiet", "--manifest-path"])
        .arg(root.join("tools/onnx-check/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cannot build tools/onnx-check");
    target.join("release/onnx-check")
}

/// A run of `model` trained for one epoch on quadrant images (so BatchNorm statistics and
/// weights are not at their initial values).
fn trained_run(dir: &Path, model: ModelKind, size: usize) -> RunDir {
    let classes = util::names(&["tl", "tr", "bl", "br"]);
    let framing = Framing { size, resize: size };
    let splits = Splits {
        classes: classes.clone(),
        train: util::quadrant_set(4, 16, 1).into(),
        val: util::quadrant_set(4, 4, 2).into(),
        test: None,
    }
    .framed(framing);
    let defaults = RecipeName::Original.defaults(model);
    let config = RunConfig { model, recipe: defaults.recipe, framing, ..util::synthetic_config(&classes, 1) };
    let run = RunDir::new(dir.join(model.name()));
    train::train(&splits, &config, &run, &Device::flex(), false, &Progress::silent()).expect("training runs");
    run
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn exported_graphs_give_classifys_logits_in_tract() {
    let checker = onnx_check();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    // The ResNet and the EfficientNet at other sizes than 32: the graph's input is the run's size; 40 px
    // makes the EfficientNet's stride-2 convolutions meet odd sizes, where SAME pads one side only.
    for (model, size) in
        [(ModelKind::Seed, 32), (ModelKind::Fast, 32), (ModelKind::Resnet18, 48), (ModelKind::EfficientnetLite0, 40)]
    {
        let shape = ImageShape::square(size);
        let images = util::quadrant_set(4, 3, 9).resized(size).images;
        let input: Vec<u8> = images_to_tensor(&images, shape, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let input_path = dir.path().join("images.f32");
        std::fs::write(&input_path, &input).unwrap();
        let run = trained_run(dir.path(), model, size);
        let mut sizes = Vec::new();
        for (precision, flag) in [(Quantize::None, "none"), (Quantize::Int8, "int8")] {
            let file = dir.path().join(format!("{model}-{flag}.onnx"));
            let out = ok(classify(
                dir.path(),
                &["export", "--run", run.root().to_str().unwrap(), "--quantize", flag, "--out", file.to_str().unwrap()],
            ));
            assert!(stdout(&out).contains(&format!("{model} model")), "{}", stdout(&out));
            let bytes = std::fs::read(&file).unwrap();
            sizes.push(bytes.len());
            // The metadata names the classes in label order.
            let needle = br#"["tl","tr","bl","br"]"#;
            assert!(bytes.windows(needle.len()).any(|w| w == needle), "class names missing from the metadata");
            let needle = format!("[batch, 3, {size}, {size}]");
            assert!(
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{model}: input size not in the metadata"
            );

            let logits_path = dir.path().join("logits.f32");
            let status = Command::new(&checker)
                .args([&file, &input_path, &logits_path])
                .arg("logits")
                .arg(size.to_string())
                .status()
                .unwrap();
            assert!(status.success(), "tract could not run {}", file.display());
            let theirs = floats(&std::fs::read(&logits_path).unwrap());

            let classifier = Classifier::load(run.root(), &device).unwrap().with_quantization(precision);
            let logits = |network: &Network| {
                network.forward(images_to_tensor(&images, shape, &device)).into_data().try_to_vec::<f32>().unwrap()
            };
            let largest_difference =
                |ours: &[f32]| ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            // The file dequantizes int8 weights and multiplies in fp32. classify's int8
            // seed runs its hidden layer in integers instead (`Int8Dense`): compare the file
            // with the same weights in fp32 arithmetic exactly, and with the integer path
            // up to the rounding of that layer's input to 8 bits.
            let ours = match classifier.model() {
                Network::Seed(seed) if seed.hidden_int8.is_some() => {
                    let integers = logits(classifier.model());
                    let range = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let diff = largest_difference(&integers);
                    assert!(
                        diff < 0.02 * range,
                        "{model} {flag}: integer logits differ by up to {diff} (range {range})"
                    );
                    logits(&Network::Seed(Seed { hidden_int8: None, ..seed.clone() }))
                }
                network => logits(network),
            };
            assert_eq!(theirs.len(), ours.len(), "{model} {flag}: output shape");
            let diff = largest_difference(&ours);
            assert!(diff < 1e-4, "{model} {flag}: logits differ by up to {diff}");
        }
        // int8 weights: about a quarter of the file.
        assert!(sizes[1] * 10 < sizes[0] * 3, "{model}: fp32 {} bytes, int8 {}", sizes[0], sizes[1]);
    }
}
