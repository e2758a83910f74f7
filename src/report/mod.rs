//! Plots and the HTML report of a trained run: what `classify report` writes, and the
//! training curves that `classify train` keeps current in the run folder.
//!
//! ```text
//! OUT/
//!   accuracy.png   train and validation accuracy per epoch      (from metrics.jsonl)
//!   loss.png       train and validation loss per epoch          (from metrics.jsonl)
//!   confusion.png  true x predicted counts on the evaluated split
//!   per_class.png  accuracy of each class on the evaluated split
//!   mistakes.png   the most confident mistakes in 128 px tiles, captioned
//!   report.html    all of the above, the headline numbers and the config, in one file
//! ```
//!
//! [`layout`] decides what is shown and where (pure, unit-tested), `figures` draws shapes
//! with plotters and `text` sets labels in the embedded DejaVu Sans font (so no system
//! fonts are needed), `html` assembles the page. Every file is
//! written atomically with [`crate::run::write_file_atomic`].

mod figures;
mod html;
pub mod layout;
mod text;

use std::path::{Path, PathBuf};

use crate::classifier::Classifier;
use crate::data::ImageSet;
use crate::eval;
use crate::run::{EpochMetrics, RunDir, RunError, write_file_atomic};

pub use figures::{CURVE_SIZE, MISTAKE_COLUMNS, MISTAKE_SCALE, MISTAKE_TILE, mistakes_size, probability_label};

/// Train and validation accuracy per epoch.
pub const ACCURACY_PNG: &str = "accuracy.png";
/// Train and validation loss per epoch.
pub const LOSS_PNG: &str = "loss.png";
/// The confusion matrix of the evaluated split.
pub const CONFUSION_PNG: &str = "confusion.png";
/// Per-class accuracy bars.
pub const PER_CLASS_PNG: &str = "per_class.png";
/// The most confident mistakes.
pub const MISTAKES_PNG: &str = "mistakes.png";
/// The self-contained page.
pub const REPORT_HTML: &str = "report.html";
/// Most mistakes shown in `mistakes.png`.
pub const MAX_MISTAKES: usize = 64;

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The run's metrics could not be read, or a report file could not be written.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The output folder could not be created.
    #[error("cannot create the report folder {}: {source}; choose a writable folder with --out", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A report file could not be written (a full disk, permissions, a folder in the way).
    #[error("cannot write {}: {cause}; free disk space, or choose a writable folder with --out", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's error, shown in the message (not chained, so it is not
        /// printed twice).
        cause: std::io::Error,
    },
    /// A figure could not be drawn or encoded.
    #[error("cannot draw {figure}: {reason}")]
    Draw {
        /// The figure's file name.
        figure: &'static str,
        /// What plotters or the PNG encoder said.
        reason: String,
    },
}

/// Writes one report file atomically.
fn write(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_file_atomic(path, bytes).map_err(|cause| ReportError::Write { path: path.to_path_buf(), cause })
}

fn draw_error(figure: &'static str) -> impl Fn(figures::DrawFailure) -> ReportError {
    move |e| ReportError::Draw { figure, reason: e.0 }
}

/// Writes the report of `run` evaluated on `set` (the `split` split) into `out`, creating
/// it if needed; returns the files written, `report.html` last.
///
/// `accuracy.png` and `loss.png` are left out when `metrics.jsonl` records no epoch.
pub fn write_report(
    classifier: &Classifier,
    run: &RunDir,
    set: &ImageSet,
    split: &str,
    out: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    std::fs::create_dir_all(out).map_err(|source| ReportError::CreateDir { path: out.to_path_buf(), source })?;
    let metrics = run.load_metrics()?;
    let classes = classifier.classes();
    let probs = classifier.probabilities(&set.images);
    let predictions: Vec<u8> = probs.iter().map(|p| crate::scores::argmax(p) as u8).collect();
    let evaluation = eval::evaluate(classes, &set.labels, &predictions);
    let all_mistakes = layout::mistakes(&set.labels, &probs);
    let shown = &all_mistakes[..all_mistakes.len().min(MAX_MISTAKES)];

    let mut pngs: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    if !metrics.is_empty() {
        let (accuracy, loss) = figures::curves(&metrics).map_err(draw_error(ACCURACY_PNG))?;
        pngs.push((ACCURACY_PNG, "Accuracy", accuracy));
        pngs.push((LOSS_PNG, "Loss", loss));
    }
    let confusion = figures::confusion(classes, &evaluation, split).map_err(draw_error(CONFUSION_PNG))?;
    pngs.push((CONFUSION_PNG, "Confusion matrix", confusion));
    let per_class = figures::per_class(&evaluation, split).map_err(draw_error(PER_CLASS_PNG))?;
    pngs.push((PER_CLASS_PNG, "Accuracy per class", per_class));
    let mistakes = figures::mistakes(&set.images, set.shape, classes, shown, all_mistakes.len(), split)
        .map_err(draw_error(MISTAKES_PNG))?;
    pngs.push((MISTAKES_PNG, "Most confident mistakes", mistakes));

    let mut written = Vec::with_capacity(pngs.len() + 1);
    for (file, _, png) in &pngs {
        let path = out.join(file);
        write(&path, png)?;
        written.push(path);
    }
    let run_name =
        run.root().file_name().map_or_else(|| run.root().display().to_string(), |n| n.to_string_lossy().into_owned());
    let figures: Vec<html::Figure> =
        pngs.iter().map(|(file, heading, png)| html::Figure { file, heading, png }).collect();
    let page = html::render(&html::Page {
        run_name: &run_name,
        split,
        config: classifier.config(),
        metrics: &metrics,
        evaluation: &evaluation,
        figures: &figures,
    });
    let path = out.join(REPORT_HTML);
    write(&path, page.as_bytes())?;
    written.push(path);
    Ok(written)
}

/// Writes `accuracy.png` and `loss.png` into the run folder itself from its
/// `metrics.jsonl`; returns them, or nothing when no epoch is recorded yet.
///
/// Cheap (a few milliseconds), so the training loop can call it after every epoch.
pub fn write_curves(run: &RunDir) -> Result<Vec<PathBuf>, ReportError> {
    let metrics = run.load_metrics()?;
    write_curves_from(run.root(), &metrics)
}

/// Writes `accuracy.png` and `loss.png` for `metrics` into `dir`; nothing when it is empty.
pub fn write_curves_from(dir: &Path, metrics: &[EpochMetrics]) -> Result<Vec<PathBuf>, ReportError> {
    if metrics.is_empty() {
        return Ok(Vec::new());
    }
    let (accuracy, loss) = figures::curves(metrics).map_err(draw_error(ACCURACY_PNG))?;
    let mut written = Vec::with_capacity(2);
    for (file, png) in [(ACCURACY_PNG, accuracy), (LOSS_PNG, loss)] {
        let path = dir.join(file);
        write(&path, &png)?;
        written.push(path);
    }
    Ok(written)
}
