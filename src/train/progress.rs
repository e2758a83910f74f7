//! What a person watching training sees: a progress bar with loss, accuracy and ETA on a
//! terminal, one plain line per epoch otherwise (logs, CI, `nohup`).

use indicatif::{ProgressBar, ProgressStyle};

use crate::run::EpochMetrics;

/// How training reports progress on stderr.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    bars: bool,
    quiet: bool,
}

impl Progress {
    /// Bars when `terminal`, plain epoch lines otherwise.
    pub fn new(terminal: bool) -> Self {
        Progress { bars: terminal, quiet: false }
    }

    /// Reports nothing (library use, tests).
    pub fn silent() -> Self {
        Progress { bars: false, quiet: true }
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
        EpochBar { bar, epochs, quiet: self.quiet }
    }
}

/// Progress within one epoch.
pub(crate) struct EpochBar {
    bar: Option<ProgressBar>,
    epochs: usize,
    quiet: bool,
}

impl EpochBar {
    pub(crate) fn step(&self, loss: f64, acc: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {loss:.4} acc {acc:.4}"));
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
