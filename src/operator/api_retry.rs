//! Retries of single API requests that failed on the way: refused with 429, 500, 502, 503 or
//! 504, or without an answer. A few quick retries in place, before a reconcile fails as a
//! whole and waits its backoff ([`super::retries`]): a reconcile makes several calls, and when
//! a share of calls fails, most reconciles would fail, and a Restore waited minutes for its
//! status. Writes are retried too: every write the operator makes already tolerates being
//! sent twice (creates take 409 as done, status patches are idempotent, Lease writes carry
//! their resourceVersion), as they must when an answer is lost. Watches are left to the
//! watcher, which re-lists on its own backoff.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tower::BoxError;
use tower::buffer::BufferLayer;
use tower::layer::util::Stack;
use tower::retry::{Policy, RetryLayer};

/// Retries after the first attempt.
const RETRIES: u32 = 2;
/// The wait before the first retry; it doubles with each one, and a random half is added.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// Requests that may wait for the retrying service at once.
const BUFFER: usize = 1024;

/// The policy: [`RETRIES`] retries of a transient failure.
#[derive(Clone, Debug, Default)]
pub struct RetryTransient {
    retried: u32,
}

/// The layer to put on the client's stack: a buffer (a retried service must be cloned; the
/// client's stack cannot be) under [`RetryTransient`].
pub fn layer() -> Stack<BufferLayer<Request<Body>>, RetryLayer<RetryTransient>> {
    Stack::new(
        BufferLayer::new(BUFFER),
        RetryLayer::new(RetryTransient::default()),
    )
}

/// Whether `req` opens a watch (a long-lived stream, not a single answer).
pub(super) fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// Statuses that say "not now" rather than "no".
fn transient(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

impl<B> Policy<Request<Body>, Response<B>, BoxError> for RetryTransient {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<B>, BoxError>,
    ) -> Option<Self::Future> {
        let why = match result {
            Ok(r) if transient(r.status()) => r.status().to_string(),
            Ok(_) => return None,
            Err(e) => e.to_string(),
        };
        if self.retried >= RETRIES || is_watch(req) {
            return None;
        }
        let wait = FIRST_WAIT * 2u32.pow(self.retried);
        self.retried += 1;
        tracing::debug!(method = %req.method(), path = %req.uri().path(), retry = self.retried, "API request failed ({why}): retrying");
        Some(tokio::time::sleep(
            wait + wait.mul_f64(fastrand::f64() / 2.0),
        ))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        if is_watch(req) {
            return None;
        }
        let mut copy = Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use http::Method;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn request(method: Method, uri: &str) -> Request<Body> {
        let mut r = Request::new(Body::from(b"{\"a\":1}".to_vec()));
        *r.method_mut() = method;
        *r.uri_mut() = uri.parse().unwrap();
        r
    }

    /// Sends `req` through [`layer`] to a server that answers the first `fail` requests with
    /// `status` and the rest with 200; the answer, and how many requests the server got.
    async fn send(fail: u32, status: StatusCode, req: Request<Body>) -> (StatusCode, u32) {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let server = tower::service_fn(move |req: Request<Body>| {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            async move {
                use http_body_util::BodyExt;
                let body = req.into_body().collect().await?.to_bytes();
                assert_eq!(&body[..], b"{\"a\":1}", "a retry sends the same body");
                let mut r = Response::new(());
                *r.status_mut() = if n < fail { status } else { StatusCode::OK };
                Ok::<_, BoxError>(r)
            }
        });
        let mut svc = layer().layer(server);
        let r = svc.ready().await.unwrap().call(req).await.unwrap();
        (r.status(), calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn transient_refusals_are_retried_twice() {
        let get = || request(Method::GET, "/api/v1/namespaces/a/pods");
        assert_eq!(
            send(2, StatusCode::INTERNAL_SERVER_ERROR, get()).await,
            (StatusCode::OK, 3)
        );
        assert_eq!(
            send(3, StatusCode::TOO_MANY_REQUESTS, get()).await,
            (StatusCode::TOO_MANY_REQUESTS, 3),
            "after two retries the failure is the caller's"
        );
        let post = request(Method::POST, "/apis/batch/v1/namespaces/a/jobs");
        assert_eq!(
            send(1, StatusCode::SERVICE_UNAVAILABLE, post).await,
            (StatusCode::OK, 2),
            "writes too, with their body"
        );
    }

    #[tokio::test]
    async fn answers_that_mean_no_and_watches_are_not_retried() {
        for status in [
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::GONE,
        ] {
            let get = request(Method::GET, "/api/v1/namespaces/a/pods/p");
            assert_eq!(send(1, status, get).await, (status, 1));
        }
        let watch = request(Method::GET, "/api/v1/pods?watch=true&resourceVersion=1");
        assert_eq!(
            send(1, StatusCode::INTERNAL_SERVER_ERROR, watch).await,
            (StatusCode::INTERNAL_SERVER_ERROR, 1)
        );
    }

    #[tokio::test]
    async fn a_request_without_an_answer_is_sent_again() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let svc = tower::service_fn(move |_: Request<Body>| {
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                match first {
                    true => Err::<Response<()>, BoxError>("connection reset".into()),
                    false => Ok(Response::new(())),
                }
            }
        });
        let mut svc = layer().layer(svc);
        let req = request(
            Method::PATCH,
            "/apis/mimeo.dev/v1alpha1/namespaces/a/restores/r/status",
        );
        let r = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(
            (r.status(), calls.load(Ordering::SeqCst)),
            (StatusCode::OK, 2)
        );
    }
}
