//! Adam as one fused pass over each parameter, for the CPU.
//!
//! burn's `Adam` builds the update from a dozen tensor operations per parameter, each
//! reading and writing a whole new buffer: for the seed model's 16 MiB dense weight that is
//! hundreds of megabytes of memory traffic per step. Here the parameter, gradient and both
//! moments are visited once, in place, on the host. On a GPU that would mean copying to the
//! host and back, so GPU runs keep burn's `Adam` (see [`optimizer`]).
//!
//! The update is Keras's (`keras.optimizers.Adam`), which the original system used:
//!
//! ```text
//! m = b1 m + (1 - b1) g
//! v = b2 v + (1 - b2) g^2
//! p = p - lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
//! ```
//!
//! burn's and PyTorch's Adam add `eps` to `sqrt(v / (1 - b2^t))` instead of `sqrt(v)`: the
//! same update with a smaller effective epsilon in the first few hundred steps.

use burn::optim::{AdamConfig, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor, TensorData};
use burn_pack::Scalar;
use rayon::prelude::*;

use crate::settings::AdamSettings;

/// Elements per parallel work unit: big enough to amortise scheduling, small enough to
/// split the 4M-element dense weight across cores.
const CHUNK: usize = 1 << 16;

/// The optimiser for a run on `device`: fused Adam on the CPU, burn's Adam elsewhere.
pub fn optimizer(settings: &AdamSettings, device: &Device) -> ModuleOptimizer {
    if crate::device::is_cpu(device) {
        ModuleOptimizer::from(FusedAdam::new(settings))
    } else {
        AdamConfig::new()
            .with_beta_1(settings.beta_1 as f32)
            .with_beta_2(settings.beta_2 as f32)
            .with_epsilon(settings.epsilon as f32)
            .init()
    }
}

/// Adam whose update runs as one in-place loop per parameter.
#[derive(Debug, Clone, Copy)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
}

impl FusedAdam {
    pub fn new(settings: &AdamSettings) -> Self {
        FusedAdam { beta_1: settings.beta_1 as f32, beta_2: settings.beta_2 as f32, epsilon: settings.epsilon as f32 }
    }

    /// One update of `params` in place; `time` is the 1-based step count.
    pub fn update(&self, lr: f64, time: u64, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        let t = time as i32;
        let correction = (1.0 - (self.beta_2 as f64).powi(t)).sqrt() / (1.0 - (self.beta_1 as f64).powi(t));
        let step = (lr * correction) as f32;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let g = g[i];
                    let mi = b1 * m[i] + (1.0 - b1) * g;
                    let vi = b2 * v[i] + (1.0 - b2) * g * g;
                    m[i] = mi;
                    v[i] = vi;
                    p[i] -= step * mi / (vi.sqrt() + eps);
                }
            });
    }
}

/// Moments of one parameter, kept on the host as flat f32 data.
#[derive(Clone)]
pub struct FusedAdamState {
    /// Steps taken.
    pub time: u64,
    pub moment_1: Vec<f32>,
    pub moment_2: Vec<f32>,
}

/// Flat f32 values of `data`, reusing its buffer when it already holds f32.
fn into_f32(data: TensorData) -> Vec<f32> {
    data.try_into_vec_as::<f32>().unwrap_or_default()
}

/// Runs `update(params, grads)` on host copies of a parameter and its gradient (skipped
/// when their sizes differ) and returns the updated parameter on its device. On Flex the
/// parameter's buffer is reused, not copied, when nothing else shares it.
pub(super) fn update_on_host<const D: usize>(
    tensor: Tensor<D>,
    grad: Tensor<D>,
    update: impl FnOnce(&mut [f32], &[f32]),
) -> Tensor<D> {
    let device = tensor.device();
    let shape = tensor.shape();
    let mut params = into_f32(tensor.into_data());
    let grads = grad.into_data();
    let grads = grads.as_slice::<f32>().unwrap_or(&[]);
    if grads.len() == params.len() {
        update(&mut params, grads);
    }
    Tensor::from_data(TensorData::new(params, shape), &device)
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = FusedAdamState;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<FusedAdamState>,
    ) -> (Tensor<D>, Option<FusedAdamState>) {
        let n = tensor.shape().num_elements();
        let mut state = state
            .filter(|s| s.moment_1.len() == n && s.moment_2.len() == n)
            .unwrap_or_else(|| FusedAdamState { time: 0, moment_1: vec![0.0; n], moment_2: vec![0.0; n] });
        let tensor = update_on_host(tensor, grad, |params, grads| {
            state.time += 1;
            self.update(lr, state.time, params, grads, &mut state.moment_1, &mut state.moment_2);
        });
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: FusedAdamState, _device: &Device) -> FusedAdamState {
        state
    }
}

impl RecordState for FusedAdamState {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, "time", Scalar::UInt(self.time));
        let n = self.moment_1.len();
        out.push_tensor(prefix, "moment_1", TensorData::new(self.moment_1.clone(), [n]));
        out.push_tensor(prefix, "moment_2", TensorData::new(self.moment_2.clone(), [n]));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let time = match src.take_scalar(prefix, "time")? {
            Scalar::UInt(t) => t,
            Scalar::Int(t) => u64::try_from(t).ok()?,
            _ => return None,
        };
        let moment_1 = into_f32(src.take_tensor(prefix, "moment_1")?);
        let moment_2 = into_f32(src.take_tensor(prefix, "moment_2")?);
        (moment_1.len() == moment_2.len()).then_some(FusedAdamState { time, moment_1, moment_2 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::testing::{train_linear, wave};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::GradientsParams;

    fn settings() -> AdamSettings {
        AdamSettings::default()
    }

    #[test]
    fn first_step_moves_each_weight_by_lr_against_its_gradient_sign() {
        // At t = 1, m = (1-b1) g and v = (1-b2) g^2, so the step is lr * g / (|g| + eps').
        let adam = FusedAdam::new(&settings());
        let mut p = vec![1.0f32, 1.0, 1.0];
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        adam.update(0.01, 1, &mut p, &[0.5, -2.0, 0.0], &mut m, &mut v);
        assert!((p[0] - 0.99).abs() < 1e-6, "{p:?}");
        assert!((p[1] - 1.01).abs() < 1e-6, "{p:?}");
        assert_eq!(p[2], 1.0);
        assert!((m[0] - 0.05).abs() < 1e-7 && (v[1] - 0.004).abs() < 1e-7);
    }

    #[test]
    fn matches_burns_adam_over_several_steps() {
        // The two place epsilon differently (see the module docs); with a negligible epsilon
        // they must agree. Above CHUNK elements, so the parallel split is exercised.
        let s = AdamSettings { epsilon: 1e-12, ..settings() };
        let ours = train_linear(&mut ModuleOptimizer::from(FusedAdam::new(&s)), 5, 0.01);
        let burns = train_linear(
            &mut AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999).with_epsilon(1e-12).init(),
            5,
            0.01,
        );
        let diffs: Vec<f32> = ours.iter().zip(&burns).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().copied().fold(0.0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        // Rounding differs (one f64 step factor here, f32 products there) and is amplified
        // where a moment crosses zero; 1e-4 is 1% of one step at lr 0.01.
        assert!(max < 1e-4 && mean < 1e-6, "max difference {max}, mean {mean}");
    }

    #[test]
    fn keras_epsilon_placement() {
        // Second step of one weight, by hand in f64 with Keras's formulas:
        // g = 1e-4, then 1e-4: m = 1.9e-5, v = 1.999e-11, alpha = lr sqrt(1-b2^2)/(1-b1^2).
        let adam = FusedAdam::new(&settings());
        let (mut p, mut m, mut v) = (vec![0.0f32], vec![0.0f32], vec![0.0f32]);
        adam.update(1.0, 1, &mut p, &[1e-4], &mut m, &mut v);
        adam.update(1.0, 2, &mut p, &[1e-4], &mut m, &mut v);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-7f64);
        let step = |t: i32, m: f64, v: f64| (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t)) * m / (v.sqrt() + eps);
        let (m1, v1) = (0.1e-4, 0.001 * 1e-8);
        let (m2, v2) = (b1 * m1 + 0.1e-4, b2 * v1 + 0.001 * 1e-8);
        let want = -(step(1, m1, v1) + step(2, m2, v2));
        assert!((f64::from(p[0]) - want).abs() < 1e-5, "{} vs {want}", p[0]);
    }

    /// A weight whose gradient stops after the first step: its first moment decays by 0.9 a
    /// step, below f32's smallest normal (1.2e-38) after about 830 steps. With subnormals
    /// flushed (what every compute thread does, see `crate::device`), the moment becomes 0
    /// instead, and the weights come out the same.
    #[test]
    fn flushing_subnormal_moments_leaves_the_weights_unchanged() {
        // The update runs on rayon's threads: a pool of its own, set up as the binary sets up
        // the global one (or not), so no other test's threads are touched.
        let run = |flush: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .start_handler(move |_| {
                    if flush {
                        crate::device::flush_subnormals();
                    }
                })
                .build()
                .unwrap();
            pool.install(|| {
                let adam = FusedAdam::new(&settings());
                let (mut p, mut m, mut v) = (vec![0.5f32, 0.5], vec![0.0f32; 2], vec![0.0f32; 2]);
                for t in 1..=1000 {
                    // The second weight keeps a small gradient, so the step sizes stay real.
                    let g = [if t == 1 { 1e-2 } else { 0.0 }, 1e-3];
                    adam.update(1e-3, t, &mut p, &g, &mut m, &mut v);
                }
                (p, m)
            })
        };
        let (ieee, ieee_m) = run(false);
        let (flushed, flushed_m) = run(true);
        assert!(ieee_m[0] > 0.0 && ieee_m[0] < f32::MIN_POSITIVE, "the moment is subnormal: {}", ieee_m[0]);
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(flushed_m[0], 0.0);
        }
        for (a, b) in ieee.iter().zip(&flushed) {
            assert!((a - b).abs() <= 1e-7, "{ieee:?} vs {flushed:?}");
        }
    }

    #[test]
    fn state_survives_a_save_and_load() {
        let device = Device::flex().autodiff();
        let s = settings();
        let mut linear: Linear = LinearConfig::new(300, 4).init(&device);
        let x = wave([2, 300], 0.5, &device);
        let grads = |linear: &Linear| {
            let loss = (linear.forward(x.clone()) - 0.5).powi_scalar(2).mean();
            GradientsParams::from_grads(loss.backward(), linear)
        };
        let mut a = ModuleOptimizer::from(FusedAdam::new(&s));
        for _ in 0..3 {
            let g = grads(&linear);
            linear = a.step(0.01, linear, g);
        }
        let mut b = ModuleOptimizer::from(FusedAdam::new(&s)).from_bytes(a.into_bytes().unwrap()).unwrap();
        let mut fresh = ModuleOptimizer::from(FusedAdam::new(&s));
        let next_a = a.step(0.01, linear.clone(), grads(&linear)).weight.val();
        let next_b = b.step(0.01, linear.clone(), grads(&linear)).weight.val();
        let next_fresh = fresh.step(0.01, linear.clone(), grads(&linear)).weight.val();
        let diff = |p: Tensor<2>, q: Tensor<2>| (p - q).abs().max().into_scalar::<f32>();
        assert_eq!(diff(next_a.clone(), next_b), 0.0, "restored state steps like the original");
        assert!(diff(next_a, next_fresh) > 1e-6, "a fresh state would step differently");
    }
}
