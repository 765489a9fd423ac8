//! Progress on a terminal: per task, a line with the elapsed time, the bytes moved, the rate
//! and the work item being moved (from [`crate::engine::progress`], read a few times a
//! second); plain log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::get::human_bytes;
use crate::engine::progress;

/// Shows progress only when stderr is a terminal.
pub struct Progress {
    tty: bool,
}

/// A task being shown; dropping it stops the display.
pub struct Shown {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

/// The line shown for `what` after `elapsed`, having moved `bytes`, now on `item`. The item can
/// be a volume name listed from media someone else wrote: control characters are escaped, so
/// it cannot drive the terminal.
pub fn progress_line(what: &str, item: &str, bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = match secs > 0.0 {
        true => (bytes as f64 / secs) as u64,
        false => 0,
    };
    let item = match item {
        "" => String::new(),
        i => format!(" · {}", i.escape_debug()),
    };
    format!(
        "{what}{item} · {} at {}/s",
        human_bytes(bytes),
        human_bytes(rate)
    )
}

impl Progress {
    /// Detects the terminal.
    pub fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Starts showing a task.
    pub fn start(&self, what: &str) -> Option<Shown> {
        progress::reset();
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
        let (shown, what, started) = (bar.clone(), what.to_string(), Instant::now());
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let (bytes, item) = progress::snapshot();
                shown.set_message(progress_line(&what, &item, bytes, started.elapsed()));
            }
        });
        Some(Shown { bar, ticker })
    }

    /// Stops showing a task.
    pub fn finish(&self, shown: Option<Shown>) {
        if let Some(s) = shown {
            s.ticker.abort();
            s.bar.finish_and_clear();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_item_bytes_and_rate() {
        assert_eq!(
            progress_line(
                "backuptrail/nightly",
                "finance",
                3 << 30,
                Duration::from_secs(2)
            ),
            "backuptrail/nightly · finance · 3.0 GiB at 1.5 GiB/s"
        );
        assert_eq!(
            progress_line("restore/r1", "", 512, Duration::ZERO),
            "restore/r1 · 512 B at 0 B/s"
        );
        assert_eq!(
            progress_line("copy", "vol\u{1b}[2J", 0, Duration::ZERO),
            "copy · vol\\u{1b}[2J · 0 B at 0 B/s"
        );
    }
}
