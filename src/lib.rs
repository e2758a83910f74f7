//! `classify`: train, evaluate and serve small-image classifiers with burn.
//!
//! Data flows one way: [`data`] (sources, split, batches) -> [`model`] -> [`train`]
//! (loop, checkpoints, metrics) -> [`run`] (the run folder) -> [`classifier`] (a loaded
//! model that predicts) -> [`eval`] and the command line.

pub mod data;
pub mod classifier;
pub mod device;
pub mod eval;
pub mod model;
pub mod onnx;
pub mod quantize;
pub mod run;
pub mod train;
pub mod bench;
pub mod report;
pub mod serve;
pub mod sagemaker;
