//! A layer that retries an object store's transient failures (throttling, 5xx, resets, stalls)
//! with exponential backoff and full jitter, so that one bad response does not fail a run that
//! has already moved gigabytes.
//!
//! Only calls that are safe to repeat go through it: reads, lists, deletes and write-once puts
//! (a put whose unseen first attempt succeeded is recognised by the store as its own object).
//! Streaming writers are not replayed here; their requests are retried by the S3 client, which
//! still holds each part. `probe` gets at most [`PROBE_ATTEMPTS`]: it answers "reachable now?",
//! and one glitch must not make media look unreachable (a restore would skip them), nor may a
//! dead server hold a reconcile for long.

use std::future::Future;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::base::backoff::{Backoff, retry_while};
use crate::media::error::{MediaError, Result};
use crate::media::store::{ObjectInfo, ObjectStore, ObjectWriter};

/// Attempts of a probe, including the first.
pub const PROBE_ATTEMPTS: u32 = 3;

/// An [`ObjectStore`] whose repeatable calls are retried on transient errors.
#[derive(Debug)]
pub struct Retrying<S> {
    inner: S,
    backoff: Backoff,
}

impl<S: ObjectStore> Retrying<S> {
    pub fn new(inner: S) -> Self {
        Self::with_backoff(inner, Backoff::default())
    }

    pub fn with_backoff(inner: S, backoff: Backoff) -> Self {
        Retrying { inner, backoff }
    }

    async fn run<T, F, Fut>(&self, op: &str, key: &str, call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        self.run_at_most(self.backoff.attempts, op, key, call).await
    }

    async fn run_at_most<T, F, Fut>(&self, attempts: u32, op: &str, key: &str, call: F) -> Result<T>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
    {
        let backoff = Backoff {
            attempts,
            ..self.backoff
        };
        retry_transient(&backoff, &self.inner, op, key, call).await
    }
}

/// Calls `call` until it succeeds, fails with a permanent error, or `backoff.attempts` are
/// used up, sleeping [`Backoff::delay`] between attempts. Also used by the S3 writer for the
/// calls of a multipart upload that the SDK does not resend.
pub async fn retry_transient<T, F, Fut>(
    backoff: &Backoff,
    store: &dyn ObjectStore,
    op: &str,
    key: &str,
    call: F,
) -> Result<T>
where
    F: FnMut() -> Fut + Send,
    Fut: Future<Output = Result<T>> + Send,
{
    let what = || format!("{op} {}/{key}", store.describe());
    retry_while(backoff, what, MediaError::is_transient, call).await
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for Retrying<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.run("put", key, || self.inner.put(key, data.clone()))
            .await
    }

    async fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        self.inner.create(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.run("get_range", key, || {
            self.inner.get_range(key, range.clone())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    async fn probe(&self) -> Result<()> {
        let attempts = self.backoff.attempts.min(PROBE_ATTEMPTS);
        self.run_at_most(attempts, "probe", "", || self.inner.probe())
            .await
    }

    async fn purge_incomplete(&self, prefix: &str, before: DateTime<Utc>) -> Result<usize> {
        self.run("purge_incomplete", prefix, || {
            self.inner.purge_incomplete(prefix, before)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::media::error::MediaError;
    use std::time::Duration;

    /// Fails every call with the next error of its script, then answers.
    #[derive(Debug, Default)]
    struct Flaky {
        script: Mutex<Vec<MediaError>>,
        calls: AtomicU32,
    }

    impl Flaky {
        fn failing(errors: Vec<MediaError>) -> Self {
            Flaky {
                script: Mutex::new(errors),
                calls: AtomicU32::new(0),
            }
        }

        fn next(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut script = self.script.lock().unwrap();
            if script.is_empty() {
                Ok(())
            } else {
                Err(script.remove(0))
            }
        }
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        fn describe(&self) -> String {
            "flaky://".into()
        }
        async fn put(&self, _: &str, _: Bytes) -> Result<()> {
            self.next()
        }
        async fn create(&self, _: &str) -> Result<Box<dyn ObjectWriter>> {
            unreachable!("writers are not retried")
        }
        async fn get_range(&self, _: &str, range: Range<u64>) -> Result<Bytes> {
            self.next()
                .map(|()| Bytes::from(vec![7; (range.end - range.start) as usize]))
        }
        async fn get(&self, _: &str) -> Result<Bytes> {
            self.next().map(|()| Bytes::new())
        }
        async fn head(&self, _: &str) -> Result<Option<u64>> {
            self.next().map(|()| Some(1))
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectInfo>> {
            self.next().map(|()| Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<()> {
            self.next()
        }
        async fn probe(&self) -> Result<()> {
            self.next()
        }
        async fn purge_incomplete(&self, _: &str, _: DateTime<Utc>) -> Result<usize> {
            self.next().map(|()| 0)
        }
    }

    fn store_error(transient: bool) -> MediaError {
        MediaError::Store {
            store: "flaky://".into(),
            key: "k".into(),
            message: "boom".into(),
            transient,
        }
    }

    fn quick(attempts: u32) -> Backoff {
        Backoff {
            attempts,
            first: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_call_succeeds() {
        let store = Retrying::with_backoff(
            Flaky::failing((0..4).map(|_| store_error(true)).collect()),
            quick(5),
        );
        let data = store.get_range("k", 10..20).await.unwrap();
        assert_eq!(data.len(), 10);
        assert_eq!(store.inner.calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn permanent_failures_and_exhausted_attempts_are_returned() {
        let store = Retrying::with_backoff(Flaky::failing(vec![store_error(false)]), quick(5));
        assert!(matches!(
            store.head("k").await,
            Err(MediaError::Store {
                transient: false,
                ..
            })
        ));
        assert_eq!(store.inner.calls.load(Ordering::SeqCst), 1);

        let store = Retrying::with_backoff(
            Flaky::failing((0..9).map(|_| store_error(true)).collect()),
            quick(3),
        );
        assert!(store.list("").await.unwrap_err().is_transient());
        assert_eq!(store.inner.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn probes_are_retried_a_few_times_only() {
        let store = Retrying::with_backoff(
            Flaky::failing((0..2).map(|_| store_error(true)).collect()),
            quick(5),
        );
        store.probe().await.unwrap();
        let store = Retrying::with_backoff(
            Flaky::failing((0..9).map(|_| store_error(true)).collect()),
            quick(5),
        );
        assert!(store.probe().await.is_err());
        assert_eq!(store.inner.calls.load(Ordering::SeqCst), PROBE_ATTEMPTS);
    }
}
