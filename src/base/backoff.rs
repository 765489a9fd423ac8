//! The retry loop every layer uses (object stores, the API server): exponential backoff with
//! full jitter, retrying only what its caller calls transient.

use std::future::Future;
use std::time::Duration;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// Attempts per call, including the first.
    pub attempts: u32,
    /// Upper bound of the first delay; it doubles per attempt up to `max`.
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Four attempts (each of them retried by the S3 client too) with pauses of up to 0.5, 1
    /// and 2 s: rides out the hiccups of a server shedding load, and a dead server fails a
    /// call within a few seconds.
    fn default() -> Self {
        Backoff {
            attempts: 4,
            first: Duration::from_millis(500),
            max: Duration::from_secs(4),
        }
    }
}

impl Backoff {
    /// Delay before attempt `attempt + 1`: uniform in `[0, min(max, first * 2^(attempt-1))]`
    /// ("full jitter"), so that writers hit by the same fault do not retry in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(fastrand::f64())
    }

    /// The longest delay before attempt `attempt + 1`: `first * 2^(attempt-1)`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.first
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max)
    }
}

/// The retry loop itself, for any error type: `transient` says which errors are worth another
/// attempt. Each retry is logged with `what()` (only built when a retry happens: this runs on
/// every ranged read).
pub async fn retry_while<T, E, F, Fut>(
    backoff: &Backoff,
    what: impl Fn() -> String,
    transient: impl Fn(&E) -> bool,
    mut call: F,
) -> std::result::Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if transient(&e) && attempt < backoff.attempts => {
                let delay = backoff.delay(attempt);
                tracing::warn!(
                    what = what(),
                    attempt,
                    delay_ms = delay.as_millis() as u64,
                    error = %e,
                    "transient failure, retrying"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let b = Backoff {
            attempts: 10,
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..10 {
            let cap = Duration::from_millis(100 * (1 << (attempt - 1))).min(b.max);
            let delays: Vec<Duration> = (0..50).map(|_| b.delay(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= cap), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d != delays[0]), "no jitter");
        }
    }
}
