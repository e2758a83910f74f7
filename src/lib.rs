//! `classify`: train, evaluate and serve small-image classifiers with burn.
//!
//! Data flows one way: [`data`] (sources, split, batches) -> [`model`] -> [`train`]
//! (loop, checkpoints, metrics) -> [`run`] (the run folder) -> [`classifier`] (a loaded
//! model that predicts) -> [`eval`] and the command line.

pub mod bench;
pub mod classifier;
pub mod data;
pub mod device;
pub mod eval;
pub mod model;
pub mod onnx;
pub mod quantize;
pub mod report;
pub mod run;
pub mod sagemaker;
pub mod serve;
pub mod train;
