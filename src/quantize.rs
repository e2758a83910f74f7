//! Post-training int8 quantization of a trained network's weights, with burn's quantization.
//!
//! Every convolution kernel and dense weight matrix (every parameter of two or more
//! dimensions) is stored as signed 8-bit integers with one symmetric scale per tensor, from
//! its own minimum and maximum: a quarter of the fp32 size. Biases, BatchNorm parameters
//! and the `fast` model's whitening filters stay fp32: they are small, and the accuracy lost
//! to rounding a per-channel scale or shift is not worth the bytes.
//!
//! For most layers activations stay fp32 (the weights are expanded back to floats), so this
//! buys memory and file size, not speed. The exception is the seed model's 8192 -> 512
//! dense layer on the CPU, most of its inference work: it runs in integers, its input
//! quantized per row as it arrives ([`crate::kernels::Int8Dense`]), which is where int8 pays
//! for itself (BENCHMARKS.md).

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::kernels::Int8Dense;
pub use crate::kernels::{int8_scheme, quantize_tensor};
use crate::model::{Network, Seed};
use std::sync::Arc;

/// Weight precision for inference, chosen with `--quantize`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// The trained fp32 weights.
    #[default]
    None,
    /// Weights rounded to 8-bit integers, one symmetric scale per tensor.
    Int8,
}

/// `model` with its weights at `precision`.
pub fn quantize(model: Network, precision: Quantize) -> Network {
    match precision {
        Quantize::None => model,
        Quantize::Int8 => match model.map(&mut Int8Weights { path: Vec::new() }) {
            Network::Seed(seed) if crate::device::is_cpu(&seed.hidden.weight.device()) => {
                let hidden_int8 = Int8Dense::from_linear(&seed.hidden).map(Arc::new);
                Network::Seed(Seed { hidden_int8, ..seed })
            }
            model => model,
        },
    }
}

/// Quantizes parameters of two or more dimensions, except the fixed whitening filters.
struct Int8Weights {
    /// Names of the modules entered, outermost first.
    path: Vec<String>,
}

impl ModuleMapper for Int8Weights {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 || self.path.iter().any(|name| name == "whiten") {
            return param;
        }
        param.map(quantize_tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;
    use burn::tensor::Distribution;

    fn agreement(kind: ModelKind) -> (f32, f32) {
        let device = Device::flex();
        device.seed(11);
        let mut model = Network::init(kind, 10, &device).map(&mut RandomWeights);
        let images = Tensor::<4>::random([16, 3, 32, 32], Distribution::Default, &device);
        let bytes: Vec<u8> = images.to_data().iter::<f32>().map(|v| (v * 255.0) as u8).collect();
        model.prepare(&bytes, crate::geometry::ImageShape::CIFAR);
        let model = model.valid();
        let fp32 = model.forward(images.clone());
        let int8 = quantize(model, Quantize::Int8).forward(images);
        let scale = fp32.clone().abs().max().into_scalar::<f32>();
        ((fp32 - int8).abs().max().into_scalar::<f32>(), scale)
    }

    /// Replaces every convolution kernel by a uniform draw of Kaiming's spread. A
    /// fresh `fast` network's identity filters (1 among weights of about 0.04) are a worst
    /// case for one scale per tensor that training removes: trained `fast` runs lose under
    /// 0.15 points to int8 (BENCHMARKS.md).
    struct RandomWeights;
    impl ModuleMapper for RandomWeights {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if D != 4 {
                return param;
            }
            param.map(|t| {
                let fan_in = (t.shape().num_elements() / t.dims()[0].max(1)).max(1) as f64;
                let bound = (3.0 / fan_in).sqrt();
                Tensor::random(t.shape(), Distribution::Uniform(-bound, bound), &t.device())
            })
        }
    }

    #[test]
    fn int8_logits_stay_within_a_few_percent_of_fp32() {
        for kind in [ModelKind::Seed, ModelKind::Fast] {
            let (diff, scale) = agreement(kind);
            // Rounding to 1/254 of each tensor's range: errors of a few percent of the
            // largest logit at most, and never zero (the weights did change).
            assert!(diff > 0.0, "{kind}: quantization changed nothing");
            assert!(diff < 0.05 * scale, "{kind}: max difference {diff} with logits up to {scale}");
        }
    }

    /// The seed's hidden layer runs in integers after quantizing, and its logits are those
    /// of the same int8 weights in fp32 arithmetic up to the rounding of its inputs to 8 bits.
    #[test]
    fn seed_hidden_layer_runs_in_integers_close_to_its_fp32_arithmetic() {
        let device = Device::flex();
        device.seed(4);
        let model = Network::init(ModelKind::Seed, 10, &device).valid();
        let images = Tensor::<4>::random([12, 3, 32, 32], Distribution::Default, &device);
        let Network::Seed(int8) = quantize(model, Quantize::Int8) else { unreachable!() };
        assert!(int8.hidden_int8.is_some(), "quantizing prepares the integer layer");
        let weight_only = crate::model::Seed { hidden_int8: None, ..int8.clone() };
        let integers = int8.forward(images.clone());
        let floats = weight_only.forward(images);
        let scale = floats.clone().abs().max().into_scalar::<f32>();
        let diff = (integers - floats).abs().max().into_scalar::<f32>();
        assert!(diff > 0.0, "the integer path was not taken");
        assert!(diff < 0.02 * scale, "max difference {diff} with logits up to {scale}");
    }

    #[test]
    fn int8_records_are_about_a_quarter_of_fp32() {
        let model = Network::init(ModelKind::Seed, 10, &Device::flex());
        let fp32 = model.clone().into_record().into_bytes().unwrap().len();
        let int8 = quantize(model, Quantize::Int8).into_record().into_bytes().unwrap().len();
        assert!(int8 * 4 < fp32 + fp32 / 50 && int8 * 4 > fp32 - fp32 / 10, "fp32 {fp32} bytes, int8 {int8}");
    }
}
