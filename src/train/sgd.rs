//! SGD with Nesterov momentum and decoupled weight decay, as one in-place pass per parameter.
//!
//! ```text
//! v = mu v + g
//! p = p (1 - lr wd) - lr (g + mu v)
//! ```
//!
//! The momentum form is PyTorch's (`torch.optim.SGD(nesterov=True)`, dampening 0), which
//! burn's `Sgd` with Nesterov momentum also follows; the weight decay is decoupled from the
//! gradient (Loshchilov and Hutter), so it shrinks every weight by the same fraction of the
//! current rate whatever the momentum. Like [`super::adam`], it runs on the host: on the CPU
//! that avoids a handful of whole-tensor temporaries per parameter; on a GPU it costs a
//! round trip per step, acceptable for the models here.

use burn::optim::{Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

/// Elements per parallel work unit (see [`super::adam`]).
const CHUNK: usize = 1 << 16;

/// Nesterov SGD whose update runs as one in-place loop per parameter.
#[derive(Debug, Clone, Copy)]
pub struct FusedSgd {
    momentum: f32,
    weight_decay: f64,
    /// Multiplies the rate of the gradient step, not of the weight decay.
    lr_scale: f64,
}

/// The "optimiser" of parameters that stay as they are (frozen BatchNorm scales): it
/// ignores their gradients and keeps no state.
#[derive(Debug, Clone, Copy)]
pub struct Frozen;

/// The momentum buffer of one parameter, on the host.
#[derive(Clone)]
pub struct FusedSgdState {
    pub velocity: Vec<f32>,
}

impl FusedSgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        FusedSgd { momentum: momentum as f32, weight_decay, lr_scale: 1.0 }
    }

    /// The same optimiser stepping at `scale` times the rate it is given, with the weight
    /// decay per step unchanged (airbench's treatment of BatchNorm biases).
    pub fn with_lr_scale(self, scale: f64) -> Self {
        FusedSgd { lr_scale: scale, ..self }
    }

    /// One update of `params` in place.
    pub fn update(&self, lr: f64, params: &mut [f32], grads: &[f32], velocity: &mut [f32]) {
        let mu = self.momentum;
        let keep = (1.0 - lr * self.weight_decay) as f32;
        let lr = (lr * self.lr_scale) as f32;
        params.par_chunks_mut(CHUNK).zip(grads.par_chunks(CHUNK)).zip(velocity.par_chunks_mut(CHUNK)).for_each(
            |((p, g), v)| {
                for i in 0..p.len() {
                    let vi = mu * v[i] + g[i];
                    v[i] = vi;
                    p[i] = p[i] * keep - lr * (g[i] + mu * vi);
                }
            },
        );
    }
}

impl Optimizer for FusedSgd {
    type State<const D: usize> = FusedSgdState;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<FusedSgdState>,
    ) -> (Tensor<D>, Option<FusedSgdState>) {
        let n = tensor.shape().num_elements();
        let mut state =
            state.filter(|s| s.velocity.len() == n).unwrap_or_else(|| FusedSgdState { velocity: vec![0.0; n] });
        let tensor = super::adam::update_on_host(tensor, grad, |params, grads| {
            self.update(lr, params, grads, &mut state.velocity);
        });
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: FusedSgdState, _device: &Device) -> FusedSgdState {
        state
    }
}

impl Optimizer for Frozen {
    type State<const D: usize> = FusedSgdState;

    fn step<const D: usize>(
        &self,
        _lr: f64,
        tensor: Tensor<D>,
        _grad: Tensor<D>,
        _state: Option<FusedSgdState>,
    ) -> (Tensor<D>, Option<FusedSgdState>) {
        (tensor, None)
    }

    fn to_device<const D: usize>(state: FusedSgdState, _device: &Device) -> FusedSgdState {
        state
    }
}

impl RecordState for FusedSgdState {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        let n = self.velocity.len();
        out.push_tensor(prefix, "velocity", TensorData::new(self.velocity.clone(), [n]));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let velocity = src.take_tensor(prefix, "velocity")?.try_into_vec_as::<f32>().ok()?;
        Some(FusedSgdState { velocity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::testing::train_linear;
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{ModuleOptimizer, SgdConfig};

    #[test]
    fn two_steps_by_hand() {
        // mu 0.9, lr 0.1, no decay; g = 1 then 2:
        // v1 = 1,   p1 = 0 - 0.1 (1 + 0.9)      = -0.19
        // v2 = 2.9, p2 = p1 - 0.1 (2 + 0.9 2.9) = -0.19 - 0.461 = -0.651
        let sgd = FusedSgd::new(0.9, 0.0);
        let (mut p, mut v) = (vec![0.0f32], vec![0.0f32]);
        sgd.update(0.1, &mut p, &[1.0], &mut v);
        assert!((p[0] + 0.19).abs() < 1e-6 && (v[0] - 1.0).abs() < 1e-7, "{p:?} {v:?}");
        sgd.update(0.1, &mut p, &[2.0], &mut v);
        assert!((p[0] + 0.651).abs() < 1e-6 && (v[0] - 2.9).abs() < 1e-6, "{p:?} {v:?}");
    }

    #[test]
    fn weight_decay_is_decoupled_from_the_gradient() {
        // With a zero gradient the weight shrinks by exactly (1 - lr wd) per step,
        // and the momentum buffer stays empty.
        let sgd = FusedSgd::new(0.9, 0.5);
        let (mut p, mut v) = (vec![2.0f32, -4.0], vec![0.0f32; 2]);
        sgd.update(0.1, &mut p, &[0.0, 0.0], &mut v);
        sgd.update(0.1, &mut p, &[0.0, 0.0], &mut v);
        assert!((p[0] - 2.0 * 0.95 * 0.95).abs() < 1e-6 && (p[1] + 4.0 * 0.9025).abs() < 1e-6, "{p:?}");
        assert_eq!(v, vec![0.0, 0.0]);
    }

    #[test]
    fn a_rate_scale_scales_the_step_but_not_the_decay() {
        // lr 0.1 x 10, decay 0.5, g = 1, no momentum history: p = 2 (1 - 0.05) - 1 (1 + 0.9).
        let sgd = FusedSgd::new(0.9, 0.5).with_lr_scale(10.0);
        let (mut p, mut v) = (vec![2.0f32], vec![0.0f32]);
        sgd.update(0.1, &mut p, &[1.0], &mut v);
        assert!((p[0] - (1.9 - 1.9)).abs() < 1e-6, "{p:?}");
        let (mut p, mut v) = (vec![2.0f32], vec![0.0f32]);
        sgd.update(0.1, &mut p, &[0.0], &mut v);
        assert!((p[0] - 1.9).abs() < 1e-6, "decay must not be scaled: {p:?}");
    }

    #[test]
    fn matches_burns_nesterov_sgd_without_decay() {
        let ours = train_linear(&mut ModuleOptimizer::from(FusedSgd::new(0.9, 0.0)), 6, 0.05);
        let momentum = MomentumConfig::new().with_momentum(0.9).with_dampening(0.0).with_nesterov(true);
        let burns = train_linear(&mut SgdConfig::new().with_momentum(Some(momentum)).init(), 6, 0.05);
        let max = ours.iter().zip(&burns).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 1e-5, "max difference {max}");
    }
}
