//! The upstream MCP server: sending to it, and relaying its answers without buffering them.

use std::time::Duration;

use airlock_shared::SessionId;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use crate::error::UpstreamError;

/// The session header of streamable HTTP.
pub const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version header.
pub const PROTOCOL_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// SSE resumption.
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// A client for the one upstream MCP server.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

/// One request to send upstream.
pub struct Outgoing<'a> {
    pub method: reqwest::Method,
    pub body: Option<Bytes>,
    /// The client's headers; MCP-Protocol-Version and Last-Event-ID are passed on.
    pub headers: &'a HeaderMap,
    /// The upstream's own session id (never the one we handed the client).
    pub upstream_session: Option<&'a str>,
}

impl Upstream {
    /// A client for `url`; `timeout` bounds the wait for the answer's headers.
    pub fn new(url: String, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            url,
            timeout,
        })
    }

    /// Sends a request and returns the answer as soon as its headers arrive.
    pub async fn send(&self, out: Outgoing<'_>) -> Result<reqwest::Response, UpstreamError> {
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
        if let Some(s) = out.upstream_session {
            req = req.header(SESSION_HEADER.as_str(), s);
        }
        if let Some(body) = out.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        match tokio::time::timeout(self.timeout, req.send()).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}

/// Turns the upstream's answer into ours, streaming its body event by event. `keep` lives as
/// long as the body (e.g. the session lock). `client_session`, when given (initialize), is the
/// session id the client gets; the upstream's own id never reaches the client.
pub fn relay<K: Send + Sync + 'static>(
    resp: reqwest::Response,
    client_session: Option<&SessionId>,
    keep: K,
) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers() {
        let n = name.as_str();
        if matches!(
            n,
            "content-type"
                | "cache-control"
                | "mcp-protocol-version"
                | "www-authenticate"
                | "retry-after"
        ) && let Ok(v) = HeaderValue::from_bytes(value.as_bytes())
            && let Ok(hn) = HeaderName::from_bytes(n.as_bytes())
        {
            headers.insert(hn, v);
        }
    }
    if let Some(sid) = client_session
        && let Ok(v) = HeaderValue::from_str(&sid.0)
    {
        headers.insert(SESSION_HEADER, v);
    }
    let stream = resp.bytes_stream().map(move |chunk| {
        let _ = &keep;
        chunk
    });
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
