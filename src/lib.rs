//! `classify`: train, evaluate and serve small-image classifiers with burn.
//!
//! Data flows one way:
//!
//! ```text
//! data (sources, split, batches) -> model (architectures, on kernels) -> train (loop,
//! optimisers, checkpoints) -> run (the run folder) -> classifier (a loaded model that
//! predicts) -> eval, predict, report, serve, export
//! ```
//!
//! Leaves that any layer may read: [`geometry`] (image shape), [`settings`] (what a run is
//! told to do, and the one table of training flags), [`scores`] (softmax, arg-max),
//! [`device`]. [`kernels`] holds the CPU backend extensions the models route through. The
//! import rules are checked by `tests/layout.rs`.

pub mod bench;
pub mod classifier;
pub mod data;
pub mod device;
pub mod eval;
pub mod geometry;
pub mod http;
pub mod kernels;
pub mod model;
pub mod onnx;
pub mod predict;
pub mod quantize;
pub mod report;
pub mod run;
pub mod sagemaker_job;
pub mod scores;
pub mod serve;
pub mod settings;
pub mod train;
