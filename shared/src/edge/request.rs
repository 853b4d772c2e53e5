//! Per request: 413 from a declared length, the body deadline, and in-flight tracking.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::ServiceExt;

use super::Edge;
use super::conn::Activity;

/// The body did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimeout(std::time::Duration);

/// The hyper service for one connection.
#[derive(Clone)]
pub(super) struct Requests {
    router: Router,
    edge: Arc<Edge>,
    busy: Arc<watch::Sender<Activity>>,
}

impl Requests {
    pub fn new(router: Router, edge: Arc<Edge>, busy: Arc<watch::Sender<Activity>>) -> Self {
        Self { router, edge, busy }
    }
}

impl hyper::service::Service<Request<Incoming>> for Requests {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

impl Requests {
    async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        let guard = InFlight::new(self.busy);
        let version = req.version();
        if declared_len(&req).is_some_and(|n| n > self.edge.max_body_bytes as u64) {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, version);
        }
        let late = Arc::new(AtomicBool::new(false));
        let timeout = self.edge.body_timeout;
        let req = req.map(|inner| {
            Body::new(Deadline {
                inner,
                timer: Box::pin(tokio::time::sleep(timeout)),
                timeout,
                late: late.clone(),
            })
        });
        let resp = match self.router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if late.load(Ordering::Relaxed) {
            return refuse(StatusCode::REQUEST_TIMEOUT, version);
        }
        resp.map(|inner| {
            Body::new(Tracked {
                inner,
                _guard: guard,
            })
        })
    }
}

fn declared_len(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// An answer after which the connection closes: the body is unread or incomplete.
fn refuse(status: StatusCode, version: Version) -> Response<Body> {
    let mut resp = Response::new(Body::from(status.canonical_reason().unwrap_or("")));
    *resp.status_mut() = status;
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Counts a request as in flight from its head until its response body is done or dropped.
struct InFlight(Arc<watch::Sender<Activity>>);

impl InFlight {
    fn new(activity: Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| {
            a.busy += 1;
            a.head_begun = false;
        });
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|a| a.busy = a.busy.saturating_sub(1));
    }
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Incoming,
    timer: Pin<Box<Sleep>>,
    timeout: std::time::Duration,
    late: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // What has arrived is handed on; only waiting for more is bounded.
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.late.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout(self.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request in flight.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
