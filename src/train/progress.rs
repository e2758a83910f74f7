//! What the training loop tells the world as it goes: a progress bar with loss, accuracy
//! and ETA on a terminal, one plain line per epoch otherwise (logs, CI, `nohup`), metric
//! lines in `name=value` form for log scrapers (SageMaker metric definitions), and a hook
//! called after each epoch's checkpoint, with which the command line redraws the curves.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::run::{EpochMetrics, RunDir};

/// Called with the run and every completed epoch's metrics, once the epoch's checkpoint is
/// on disk.
pub type EpochHook = Arc<dyn Fn(&RunDir, &[EpochMetrics]) + Send + Sync>;

/// How training reports progress on stderr, and whom it tells of each finished epoch.
#[derive(Clone)]
pub struct Progress {
    bars: bool,
    quiet: bool,
    metric_lines: bool,
    on_epoch: Option<EpochHook>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("bars", &self.bars)
            .field("quiet", &self.quiet)
            .field("metric_lines", &self.metric_lines)
            .field("on_epoch", &self.on_epoch.is_some())
            .finish()
    }
}

impl Progress {
    /// Bars when `terminal`, plain epoch lines otherwise.
    pub fn new(terminal: bool) -> Self {
        Progress { bars: terminal, quiet: false, metric_lines: false, on_epoch: None }
    }

    /// Reports nothing (library use, tests).
    pub fn silent() -> Self {
        Progress { bars: false, quiet: true, metric_lines: false, on_epoch: None }
    }

    /// Also prints each epoch's [`metric_line`].
    pub fn with_metric_lines(self) -> Self {
        Progress { metric_lines: true, ..self }
    }

    /// Calls `hook` after each epoch's checkpoint is written.
    pub fn on_epoch(self, hook: impl Fn(&RunDir, &[EpochMetrics]) + Send + Sync + 'static) -> Self {
        Progress { on_epoch: Some(Arc::new(hook)), ..self }
    }

    /// Tells the hook (if any) that the last epoch of `history` is complete and saved.
    pub(crate) fn epoch_done(&self, run: &RunDir, history: &[EpochMetrics]) {
        if let (Some(last), true) = (history.last(), self.metric_lines && !self.quiet) {
            eprintln!("{}", metric_line(last));
        }
        if let Some(hook) = &self.on_epoch {
            hook(run, history);
        }
        pause_point(&format!("epoch-{}", history.len()));
    }

    pub(crate) fn epoch(&self, epoch: usize, epochs: usize, batches: u64) -> EpochBar {
        let bar = (self.bars && !self.quiet).then(|| {
            let bar = ProgressBar::new(batches);
            let style = ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar
        });
        EpochBar { bar, epochs, quiet: self.quiet, started: std::time::Instant::now() }
    }
}

/// Progress within one epoch.
pub(crate) struct EpochBar {
    bar: Option<ProgressBar>,
    epochs: usize,
    quiet: bool,
    started: std::time::Instant,
}

impl EpochBar {
    /// One more step done; `seen` images of the epoch so far, at running `loss` and `acc`.
    pub(crate) fn step(&self, loss: f64, acc: f64, seen: usize) {
        if let Some(bar) = &self.bar {
            let rate = seen as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss:.4} acc {acc:.4} {rate:.1} img/s"));
            bar.inc(1);
        }
    }

    pub(crate) fn finish(self, m: &EpochMetrics) {
        if self.quiet {
            return;
        }
        let line = epoch_line(m, self.epochs);
        match self.bar {
            Some(bar) => {
                bar.finish_and_clear();
                eprintln!("{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

/// The one line printed per epoch.
pub fn epoch_line(m: &EpochMetrics, epochs: usize) -> String {
    format!(
        "epoch {}/{}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  {:.1}s",
        m.epoch, epochs, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.seconds
    )
}

/// The environment variable that holds `classify train` at a named point until the process
/// is killed: `loaded` (data in memory, nothing of the run written yet), `started` (the run
/// folder and `config.json` written, no epoch done), `epoch-N` (epoch N's checkpoint and
/// curves written). For the tests that kill a run at a known moment (`tests/robust.rs`);
/// unset, it costs one environment look-up per point.
pub const PAUSE_ENV: &str = "CLASSIFY_PAUSE_AT";

/// Holds the process here, forever, when [`PAUSE_ENV`] names `point`.
pub(crate) fn pause_point(point: &str) {
    if std::env::var(PAUSE_ENV).is_ok_and(|at| at == point) {
        eprintln!("paused at {point} ({PAUSE_ENV}); waiting to be killed");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// One epoch's metrics as `name=value` pairs, for log scrapers: a SageMaker metric
/// definition such as `val_acc=([0-9.]+)` reads it (see the README).
pub fn metric_line(m: &EpochMetrics) -> String {
    format!(
        "metrics: epoch={} train_loss={:.6} train_acc={:.6} val_loss={:.6} val_acc={:.6} seconds={:.3}",
        m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc, m.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_name_every_value() {
        let m =
            EpochMetrics { epoch: 3, seconds: 1.5, train_loss: 0.5, train_acc: 0.75, val_loss: 0.625, val_acc: 0.8123 };
        assert_eq!(
            metric_line(&m),
            "metrics: epoch=3 train_loss=0.500000 train_acc=0.750000 val_loss=0.625000 val_acc=0.812300 seconds=1.500"
        );
    }
}
