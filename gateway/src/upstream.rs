//! The upstream MCP server: sending to it, and relaying its answers without buffering them.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::SessionId;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::error::{UpstreamError, jsonrpc_error};
use crate::sse;

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
    /// Requests waiting for the upstream's headers at once. When thousands of approvals land
    /// together, the rest queue here, on reused connections, instead of overflowing the
    /// upstream's accept backlog with new ones (dropped SYNs are retried only after 1 s, 3 s...).
    in_flight: Arc<Semaphore>,
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
    /// A client for `url`; `timeout` bounds the wait for the answer's headers, and at most
    /// `concurrency` requests wait for them at once.
    pub fn new(url: String, timeout: Duration, concurrency: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            url,
            timeout,
            in_flight: Arc::new(Semaphore::new(concurrency.max(1))),
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
        let send = async {
            // The permit is held until the headers arrive; a streamed body does not keep it.
            let _permit = self.in_flight.acquire().await;
            req.send().await
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(UpstreamError::Unreachable(e)),
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }
}

/// What a relay of an answer should know about the request it answers.
pub struct Relay<K> {
    /// For `initialize`: the session id the client gets.
    pub client_session: Option<SessionId>,
    /// Lives as long as the body (e.g. the session lock).
    pub keep: K,
    /// The id of the request being answered: if the upstream's stream ends without its answer
    /// and without an event id to resume from, the client gets `upstream error` for it.
    pub answers: Option<Value>,
    /// Idle SSE streams get a comment this often, so proxies in between do not cut them.
    pub keepalive: Option<Duration>,
}

/// Turns the upstream's answer into ours, streaming its body event by event. The upstream's
/// own session id never reaches the client.
pub fn relay<K: Send + Sync + 'static>(resp: reqwest::Response, r: Relay<K>) -> Response {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = relay_headers(resp.headers(), r.client_session.as_ref());
    let is_sse = is_event_stream(resp.headers());
    let body = if is_sse && status.is_success() {
        Body::from_stream(sse_relay(resp, r))
    } else {
        let keep = r.keep;
        Body::from_stream(resp.bytes_stream().map(move |chunk| {
            let _ = &keep;
            chunk
        }))
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The headers of the upstream's answer that the client may see.
pub fn relay_headers(
    from: &reqwest::header::HeaderMap,
    client_session: Option<&SessionId>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from {
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
    headers
}

/// Whether a response's body is an SSE stream.
pub fn is_event_stream(h: &reqwest::header::HeaderMap) -> bool {
    h.get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().starts_with("text/event-stream"))
}

/// Whether a JSON-RPC message is the response to `id`.
pub fn is_response_to(msg: &Value, id: &Value) -> bool {
    msg.get("id") == Some(id) && (msg.get("result").is_some() || msg.get("error").is_some())
}

fn sse_relay<K: Send + Sync + 'static>(
    resp: reqwest::Response,
    r: Relay<K>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let Relay {
        keep,
        answers,
        keepalive,
        ..
    } = r;
    async_stream::stream! {
        let _keep = keep;
        let mut upstream = resp.bytes_stream();
        let mut parser = sse::Parser::default();
        let mut answered = answers.is_none();
        let mut resumable = false;
        let mut mid_event = false;
        let failed = loop {
            let next = match keepalive {
                Some(d) => tokio::time::timeout(d, upstream.next()).await.ok(),
                None => Some(upstream.next().await),
            };
            match next {
                None => {
                    // A comment may only go between events.
                    if !mid_event {
                        yield Ok(sse::comment("keepalive"));
                    }
                }
                Some(None) => break None,
                Some(Some(Err(e))) => break Some(e),
                Some(Some(Ok(chunk))) => {
                    // Once answered, or resumable by the client, nothing is left to watch for:
                    // the bytes then pass without being parsed.
                    if !answered && !resumable {
                        for ev in parser.feed(&chunk) {
                            resumable |= ev.id.as_deref().is_some_and(|i| !i.is_empty());
                            if let Some(id) = &answers
                                && (ev.data.contains("\"result\"") || ev.data.contains("\"error\""))
                                && ev.json().is_some_and(|m| is_response_to(&m, id))
                            {
                                answered = true;
                            }
                        }
                        mid_event = !parser.at_boundary();
                    } else {
                        mid_event = !chunk.ends_with(b"\n\n");
                    }
                    yield Ok(chunk);
                }
            }
        };
        if let Some(e) = &failed {
            tracing::warn!(error = %airlock_shared::telemetry::chain(e), "upstream stream broke");
        }
        if let (false, false, Some(id)) = (answered, resumable, &answers) {
            let why = match &failed {
                Some(e) => format!("upstream stream broke: {e}"),
                None => "upstream closed the stream without an answer".to_owned(),
            };
            let mut out = Vec::new();
            if mid_event {
                out.extend_from_slice(b"\n\n");
            }
            out.extend_from_slice(&sse::message(&jsonrpc_error(
                id,
                -32603,
                "upstream error",
                json!({ "why": why }),
            )));
            yield Ok(Bytes::from(out));
        } else if let Some(e) = failed {
            yield Err(std::io::Error::other(e));
        }
    }
}
