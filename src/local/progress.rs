//! Progress on a terminal (a spinner per task with elapsed time), plain log lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Shows progress only when stderr is a terminal.
pub struct Progress {
    tty: bool,
}

impl Progress {
    /// Detects the terminal.
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Starts showing a task.
    pub fn start(&self, what: &str) -> Option<ProgressBar> {
        if !self.tty {
            tracing::info!("{what}");
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("static template"),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }

    /// Stops showing a task.
    pub fn finish(&self, bar: Option<ProgressBar>) {
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}
