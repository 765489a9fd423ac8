//! Fault injection into the operator's API calls, for chaos tests (the e2e `api_faults`
//! scenario): with `MIMEO_API_FAULTS=RATE` (a share, e.g. `0.2`) that share of requests fails.
//! Reads and watches are refused before they are sent (500, 429; a watch may also get 410
//! Gone, which forces a re-list); writes are either refused (409 Conflict for updates, 500)
//! or sent and their answer lost, the hardest case: the change happened, the operator does
//! not know. Off unless the variable is set; every injected fault is logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::client::{Body, DynBody};
use tower::{BoxError, Layer, Service};

use crate::error::{Error, Result};

/// Environment variable that turns fault injection on.
pub const API_FAULTS_ENV: &str = "MIMEO_API_FAULTS";

/// What happens to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Answered with this status without being sent.
    Refuse(StatusCode),
    /// Sent, then its answer dropped: the caller gets a transport error.
    LoseAnswer,
}

/// The layer: the share of requests to fail, and a count of faults injected.
#[derive(Clone, Debug)]
pub struct ApiFaults {
    rate: f64,
    injected: Arc<AtomicU64>,
}

impl ApiFaults {
    /// From [`API_FAULTS_ENV`]: `None` when unset or empty.
    pub fn from_env() -> Result<Option<ApiFaults>> {
        let Ok(text) = std::env::var(API_FAULTS_ENV) else {
            return Ok(None);
        };
        if text.is_empty() {
            return Ok(None);
        }
        match text.parse::<f64>() {
            Ok(rate) if (0.0..=1.0).contains(&rate) => {
                tracing::warn!(rate, "API fault injection is on ({API_FAULTS_ENV})");
                Ok(Some(ApiFaults {
                    rate,
                    injected: Arc::default(),
                }))
            }
            _ => Err(Error::Operator(format!(
                "{API_FAULTS_ENV} must be a share between 0 and 1, not {text:?}"
            ))),
        }
    }

    /// The fault for a request, if it gets one (`roll`s are uniform in [0, 1)).
    fn pick(&self, method: &Method, watch: bool, roll: f64, kind: f64) -> Option<Fault> {
        if roll >= self.rate {
            return None;
        }
        let read = method == Method::GET;
        Some(match (read, watch) {
            (true, true) if kind < 0.5 => Fault::Refuse(StatusCode::GONE),
            (true, _) if kind < 0.75 => Fault::Refuse(StatusCode::INTERNAL_SERVER_ERROR),
            (true, _) => Fault::Refuse(StatusCode::TOO_MANY_REQUESTS),
            (false, _) if kind < 0.5 => Fault::LoseAnswer,
            (false, _) if kind < 0.75 && (method == Method::PATCH || method == Method::PUT) => {
                Fault::Refuse(StatusCode::CONFLICT)
            }
            (false, _) => Fault::Refuse(StatusCode::INTERNAL_SERVER_ERROR),
        })
    }
}

impl<S> Layer<S> for ApiFaults {
    type Service = FaultyApi<S>;

    fn layer(&self, inner: S) -> FaultyApi<S> {
        FaultyApi {
            inner,
            faults: self.clone(),
        }
    }
}

/// The service [`ApiFaults`] wraps around the client's stack.
#[derive(Clone)]
pub struct FaultyApi<S> {
    inner: S,
    faults: ApiFaults,
}

/// A Kubernetes `Status` answer, as the API server sends it.
fn status_response(code: StatusCode) -> Response<Box<DynBody>> {
    let reason = match code {
        StatusCode::CONFLICT => "Conflict",
        StatusCode::GONE => "Expired",
        StatusCode::TOO_MANY_REQUESTS => "TooManyRequests",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected fault ({API_FAULTS_ENV})"), "reason": reason,
        "code": code.as_u16(),
    });
    let body = Full::new(Bytes::from(body.to_string())).map_err(|e| match e {});
    let body: Box<DynBody> = Box::new(body);
    let mut response = Response::new(body);
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

impl<S> Service<Request<Body>> for FaultyApi<S>
where
    S: Service<Request<Body>, Response = Response<Box<DynBody>>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Box<DynBody>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let watch = super::api_retry::is_watch(&req);
        let fault = self
            .faults
            .pick(req.method(), watch, fastrand::f64(), fastrand::f64());
        let Some(fault) = fault else {
            return Box::pin(self.inner.call(req));
        };
        let n = self.faults.injected.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            fault = ?fault,
            method = %req.method(),
            path = %req.uri().path(),
            injected = n,
            "injected API fault"
        );
        match fault {
            Fault::Refuse(code) => Box::pin(async move { Ok(status_response(code)) }),
            Fault::LoseAnswer => {
                let sent = self.inner.call(req);
                Box::pin(async move {
                    let _ = sent.await;
                    Err("connection reset (injected API fault)".into())
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(rate: f64) -> ApiFaults {
        ApiFaults {
            rate,
            injected: Arc::default(),
        }
    }

    #[test]
    fn share_and_kinds_of_faults() {
        let f = faults(0.2);
        assert_eq!(f.pick(&Method::GET, false, 0.2, 0.0), None);
        assert_eq!(
            f.pick(&Method::GET, true, 0.1, 0.1),
            Some(Fault::Refuse(StatusCode::GONE))
        );
        assert_eq!(
            f.pick(&Method::GET, false, 0.1, 0.1),
            Some(Fault::Refuse(StatusCode::INTERNAL_SERVER_ERROR))
        );
        assert_eq!(
            f.pick(&Method::GET, false, 0.1, 0.9),
            Some(Fault::Refuse(StatusCode::TOO_MANY_REQUESTS))
        );
        assert_eq!(
            f.pick(&Method::POST, false, 0.1, 0.1),
            Some(Fault::LoseAnswer)
        );
        assert_eq!(
            f.pick(&Method::PATCH, false, 0.1, 0.6),
            Some(Fault::Refuse(StatusCode::CONFLICT))
        );
        assert_eq!(
            f.pick(&Method::POST, false, 0.1, 0.6),
            Some(Fault::Refuse(StatusCode::INTERNAL_SERVER_ERROR))
        );
        assert_eq!(faults(0.0).pick(&Method::GET, false, 0.0, 0.0), None);
    }

    #[test]
    fn a_refusal_is_a_kubernetes_status() {
        let r = status_response(StatusCode::CONFLICT);
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
    }
}
