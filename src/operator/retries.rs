//! Backoff of reconciles that fail with a transient error (the API server overloaded, a store
//! throttling): each object waits twice as long after each failure in a row, up to a ceiling,
//! and a success starts it over. A flat requeue would hammer a server that is already
//! struggling with every object it holds at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::base::backoff::Backoff;

/// Failures in a row, per object.
#[derive(Debug)]
pub struct Retries {
    backoff: Backoff,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Retries {
    /// 5 s after the first failure, doubling to at most 5 minutes.
    fn default() -> Self {
        Retries::new(Backoff {
            attempts: u32::MAX,
            first: Duration::from_secs(5),
            max: Duration::from_secs(300),
        })
    }
}

impl Retries {
    /// Waits as `backoff` says (its `attempts` is not used: a reconcile is never given up).
    pub fn new(backoff: Backoff) -> Self {
        Retries {
            backoff,
            failures: Mutex::default(),
        }
    }

    /// Records a failure of `key` (kind/namespace/name); how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        self.backoff.ceiling(*n)
    }

    /// `key` reconciled: its next failure waits the shortest time again.
    pub fn succeeded(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

/// The key of an object in [`Retries`].
pub fn key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_per_failure_up_to_the_ceiling_and_a_success_starts_over() {
        let r = Retries::default();
        let waits: Vec<u64> = (0..9).map(|_| r.failed("A/ns/a").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        // Other objects keep their own count.
        assert_eq!(r.failed("A/ns/b").as_secs(), 5);
        r.succeeded("A/ns/a");
        assert_eq!(r.failed("A/ns/a").as_secs(), 5);
        assert_eq!(r.failed("A/ns/b").as_secs(), 10);
    }
}
