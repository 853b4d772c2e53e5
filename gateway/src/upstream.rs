//! The upstream MCP server: one HTTP client, and sending a request to it.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::error::UpstreamError;

/// The session header of streamable HTTP.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version header.
pub const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// 2026-07-28: the body's `method`, mirrored.
pub const METHOD_HEADER: HeaderName = HeaderName::from_static("mcp-method");
/// 2026-07-28: the body's `params.name` (or `params.uri`), mirrored.
pub const NAME_HEADER: HeaderName = HeaderName::from_static("mcp-name");
/// 2026-07-28: tool arguments whose schema has `x-mcp-header` are mirrored as these.
pub const PARAM_PREFIX: &str = "mcp-param-";
/// SSE resumption.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A client for the one upstream MCP server.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    /// Requests waiting for the upstream's headers at once. When thousands of approvals land
    /// together, the rest queue here, on reused connections, instead of overflowing the
    /// upstream's accept backlog with new ones (dropped SYNs are retried only after 1 s, 3 s...).
    in_flight: Arc<Semaphore>,
}

/// One request to send upstream.
pub struct Outgoing<'a> {
    pub method: reqwest::Method,
    pub body: Option<Bytes>,
    /// The client's headers; MCP-Protocol-Version, Last-Event-ID and the mirrored request
    /// headers of 2026-07-28 (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) are passed on.
    pub headers: &'a HeaderMap,
    /// The upstream's own session id (never the one we handed the client).
    pub upstream_session: Option<&'a str>,
}

/// How long a request that never reached the upstream waits before its one retry when the
/// connection could not be made (an upstream restarting is back by then more often than not).
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Whether no byte of the request can have reached the upstream, so sending it again cannot
/// run a tool twice. Two failures qualify: a connection that could not be made (reqwest's
/// `is_connect`), and hyper's "canceled" (the pooled connection closed before the request was
/// written to it). Everything else, a reset or "connection closed before message completed"
/// included, may have come after the upstream read the request, and is never retried.
fn never_sent(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        source = s.source();
    }
    false
}

impl Upstream {
    /// A client for `url`; `timeout` bounds the wait for the answer's headers, at most
    /// `concurrency` requests wait for them at once, and a connection idle for `idle` is closed
    /// rather than reused.
    pub fn new(
        url: String,
        timeout: Duration,
        concurrency: usize,
        idle: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(idle)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            url,
            timeout,
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    fn request(&self, out: &Outgoing<'_>) -> reqwest::RequestBuilder {
        let mut req = self.client.request(out.method.clone(), &self.url);
        // The gateway itself reads both JSON and SSE, whatever the client accepts; the MCP
        // transport requires a POST to offer both.
        let accept = if out.method == reqwest::Method::GET {
            "text/event-stream"
        } else {
            "application/json, text/event-stream"
        };
        req = req.header(reqwest::header::ACCEPT, accept);
        for name in [&PROTOCOL_HEADER, &LAST_EVENT_ID] {
            if let Some(v) = out.headers.get(name).and_then(|v| v.to_str().ok()) {
                req = req.header(name.as_str(), v);
            }
        }
        // Checked against the body before we get here; an upstream or balancer may route on them.
        for (name, v) in out.headers {
            if *name == METHOD_HEADER
                || *name == NAME_HEADER
                || name.as_str().starts_with(PARAM_PREFIX)
            {
                req = req.header(name, v);
            }
        }
        if let Some(s) = out.upstream_session {
            req = req.header(SESSION_HEADER.as_str(), s);
        }
        if let Some(body) = &out.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        req
    }

    /// Sends a request and returns the answer as soon as its headers arrive. A request that
    /// never reached the upstream (see `never_sent`) is sent once more; the connection it
    /// failed on is gone from the pool by then.
    pub async fn send(&self, out: Outgoing<'_>) -> Result<reqwest::Response, UpstreamError> {
        let send = async {
            // The permit is held until the headers arrive; a streamed body does not keep it.
            let _permit = self.in_flight.acquire().await;
            match self.request(&out).send().await {
                Err(e) if never_sent(&e) => {
                    tracing::debug!(error = %airlock_shared::telemetry::chain(&e), "upstream request not sent; retrying once");
                    if e.is_connect() {
                        tokio::time::sleep(CONNECT_RETRY_PAUSE).await;
                    }
                    self.request(&out).send().await
                }
                sent => sent,
            }
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}
