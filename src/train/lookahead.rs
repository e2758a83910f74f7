//! airbench's lookahead (`--lookahead`): a slow copy of the weights that the trained
//! weights are pulled back to at regular intervals.
//!
//! ```text
//! every 5,120 images, and after the last step:
//!     slow = slow + (1 - decay) (w - slow);  w = slow;  decay = 0.95^5 (step / total)^3
//! ```
//!
//! Early in a run `decay` is near zero, so the slow copy just follows the weights; towards
//! the end it approaches 0.77 and each sync undoes most of the last interval's noise, like
//! a moving average that the optimiser keeps training from. The interval is counted in
//! images (5 steps of airbench's batch of 1,024) so the horizon does not change with
//! `--batch-size`, and shortened to a fiftieth of the run for runs too short for it. As in
//! airbench, BatchNorm running statistics take part with the weights, so a sync leaves them
//! consistent. A resumed run starts its slow copy from the checkpoint's weights, which are
//! at most one interval away from the uninterrupted run's.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::prelude::*;

use crate::model::Network;

/// Images between syncs: airbench's 5 steps of 1,024.
pub const IMAGES_PER_SYNC: usize = 5 * 1024;

/// The slow weights, on the host.
pub struct Lookahead {
    slow: HashMap<ParamId, Vec<f32>>,
}

/// Steps between syncs at `batch_size` images per step in a run of `total` steps: 5,120
/// images' worth, but at least 50 syncs in the run.
pub fn every(batch_size: usize, total: usize) -> usize {
    (IMAGES_PER_SYNC / batch_size.max(1)).min(total / 50).max(1)
}

/// Whether a sync follows step `step` (1-based) of `total`.
pub fn syncs_after(step: usize, total: usize, every: usize) -> bool {
    step.is_multiple_of(every.max(1)) || step == total
}

/// How much of the slow weights a sync after `step` of `total` steps keeps: airbench's
/// `0.95^5 (step / total)^3`.
pub fn decay_at(step: usize, total: usize) -> f64 {
    0.95f64.powi(5) * (step.min(total) as f64 / total.max(1) as f64).powi(3)
}

impl Lookahead {
    /// Starts the slow copy at `model`'s weights.
    pub fn new(model: &Network) -> Self {
        let mut lookahead = Lookahead { slow: HashMap::new() };
        // A parameter without a slow copy yet gets the weights themselves as one.
        let _ = lookahead.sync(model.clone(), 0.0);
        lookahead
    }

    /// Moves the slow weights towards `model`'s, keeping `decay` of them, and returns
    /// `model` set to the result.
    pub fn sync(&mut self, model: Network, decay: f64) -> Network {
        model.map(&mut Sync { slow: &mut self.slow, decay })
    }
}

struct Sync<'a> {
    slow: &'a mut HashMap<ParamId, Vec<f32>>,
    decay: f64,
}

impl ModuleMapper for Sync<'_> {
    /// Every float tensor: trained weights, BatchNorm running statistics, and the fixed
    /// whitening filters (which stay as they are, the slow copy of a constant being the
    /// constant).
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let trainable = tensor.is_require_grad();
        let (device, shape) = (tensor.device(), tensor.shape());
        let mut weights = tensor.into_data().try_into_vec_as::<f32>().unwrap_or_default();
        let keep = self.decay as f32;
        match self.slow.get_mut(&id).filter(|s| s.len() == weights.len()) {
            Some(slow) => {
                for (s, w) in slow.iter_mut().zip(weights.iter_mut()) {
                    *s += (1.0 - keep) * (*w - *s);
                    *w = *s;
                }
            }
            None => {
                self.slow.insert(id, weights.clone());
            }
        }
        let tensor = Tensor::from_data(TensorData::new(weights, shape), &device).set_require_grad(trainable);
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;
    use crate::train::testing::first_weight as first_weights;

    #[test]
    fn the_decay_grows_as_a_cube_and_syncs_come_every_5120_images_and_at_the_end() {
        assert_eq!(decay_at(0, 100), 0.0);
        assert!((decay_at(50, 100) - 0.95f64.powi(5) / 8.0).abs() < 1e-12);
        assert!((decay_at(100, 100) - 0.95f64.powi(5)).abs() < 1e-12);
        assert_eq!((every(1024, 10_000), every(256, 10_000), every(100_000, 10_000)), (5, 20, 1));
        // A short run syncs often enough for the slow copy to follow it.
        assert_eq!((every(256, 500), every(16, 32)), (10, 1));
        assert!(syncs_after(40, 1000, 20) && !syncs_after(41, 1000, 20) && syncs_after(999, 999, 20));
    }

    #[test]
    fn a_sync_pulls_the_weights_part_way_back_and_keeps_them_trainable() {
        let device = Device::flex().autodiff();
        let start = Network::init(ModelKind::Seed, 10, &device);
        let mut lookahead = Lookahead::new(&start);
        let slow = first_weights(&start);
        // Weights that moved by +1 everywhere since the slow copy was taken.
        let moved = start.map(&mut Shift(1.0));
        let moved_weights = first_weights(&moved);
        let synced = lookahead.sync(moved, 0.75);
        for ((s, m), w) in slow.iter().zip(&moved_weights).zip(first_weights(&synced)) {
            // A quarter of the way from the slow weights to the moved ones.
            assert!((w - (s + 0.25 * (m - s))).abs() < 1e-5, "{w} from {s} and {m}");
        }
        // The next sync with decay 1 returns exactly the slow weights, whatever the model.
        let pulled = lookahead.sync(synced.map(&mut Shift(5.0)), 1.0);
        for (s, w) in slow.iter().zip(first_weights(&pulled)) {
            assert!((w - (s + 0.25)).abs() < 1e-5);
        }
        struct RequiresGrad(bool);
        impl burn::module::ModuleVisitor for RequiresGrad {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0 &= param.val().is_require_grad();
            }
        }
        let mut check = RequiresGrad(true);
        pulled.visit(&mut check);
        assert!(check.0, "synced weights must still train");
    }

    #[test]
    fn batchnorm_running_statistics_are_synced_with_the_weights() {
        let device = Device::flex().autodiff();
        let start = Network::init(ModelKind::Fast, 10, &device);
        let mut lookahead = Lookahead::new(&start);
        let synced = lookahead.sync(start.map(&mut Shift(1.0)), 0.5);
        let Network::Fast(net) = synced else { unreachable!() };
        // Running means start at 0: moved to 1, half of the move is kept.
        let mean = net.blocks[0].norm1.running_mean.value().into_data().iter::<f32>().collect::<Vec<_>>();
        assert!(mean.iter().all(|m| (m - 0.5).abs() < 1e-6), "{mean:?}");
        assert!(!net.blocks[0].norm1.running_mean.value().is_require_grad());
    }

    /// Adds a constant to every float tensor.
    struct Shift(f32);
    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let shift = self.0;
            param.map(|t| {
                let (device, shape) = (t.device(), t.shape());
                let values = t.into_data().iter::<f32>().map(|w| w + shift).collect::<Vec<_>>();
                Tensor::from_data(TensorData::new(values, shape), &device).require_grad()
            })
        }
    }
}
