//! Streamable HTTP as clients see it: what they accept, holds answered over SSE with
//! keepalives, and plain JSON for clients that take nothing else.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{UpstreamError, jsonrpc_error};
use crate::sse;
use crate::upstream::{PROTOCOL_HEADER, Relay, is_event_stream, is_response_to, relay};

/// The protocol version a request without the header speaks (the spec's rule).
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-03-26";

/// The largest SSE answer collected for a client that takes only JSON.
const MAX_COLLECTED: usize = 64 << 20;

/// Who a held call waits for, as the progress message says it.
pub fn waiting_for(approvers: &[String]) -> String {
    if approvers.is_empty() {
        "a person in Slack".to_owned()
    } else {
        approvers.join(", ")
    }
}

/// The `n`th progress notification of a held call.
pub fn progress_event(token: &Value, n: u64, waiting_for: &str) -> Bytes {
    sse::message(&json!({
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "params": {
            "progressToken": token,
            "progress": n,
            "message": format!("waiting for approval by {waiting_for}"),
        },
    }))
}

/// Whether the client takes an SSE answer.
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The request's `MCP-Protocol-Version`, or the version the spec assumes without one.
pub fn protocol_version(headers: &HeaderMap) -> &str {
    headers
        .get(&PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(DEFAULT_PROTOCOL_VERSION)
}

/// JSON-RPC batches were dropped from MCP in 2025-06-18.
pub fn allows_batches(version: &str) -> bool {
    version < "2025-06-18"
}

/// Relays the upstream's answer: as it came, or, for a client that takes only JSON, the one
/// JSON-RPC response to `id` taken out of the upstream's SSE stream.
pub async fn deliver<K: Send + Sync + 'static>(
    app: &AppState,
    resp: reqwest::Response,
    headers: &HeaderMap,
    id: Option<Value>,
    keep: K,
) -> Result<Response, UpstreamError> {
    if let Some(id) = &id
        && !accepts_sse(headers)
        && resp.status().is_success()
        && is_event_stream(resp.headers())
    {
        let answer = collect_answer(resp, id).await?;
        drop(keep);
        return Ok(Json(answer).into_response());
    }
    Ok(relay(
        resp,
        Relay {
            client_session: None,
            keep,
            answers: id,
            keepalive: Some(app.keepalive),
        },
    ))
}

/// Reads the upstream's SSE stream until the response to `id`.
pub async fn collect_answer(resp: reqwest::Response, id: &Value) -> Result<Value, UpstreamError> {
    let mut stream = resp.bytes_stream();
    let mut parser = sse::Parser::default();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(UpstreamError::Body)?;
        seen += chunk.len();
        if seen > MAX_COLLECTED {
            return Err(UpstreamError::NoAnswer("answer too large"));
        }
        for ev in parser.feed(&chunk) {
            if let Some(m) = ev.json()
                && is_response_to(&m, id)
            {
                return Ok(m);
            }
        }
    }
    Err(UpstreamError::NoAnswer(
        "upstream closed the stream without an answer",
    ))
}

enum Step {
    Done(Response),
    Tick,
}

/// Answers a held call over SSE at once: keepalives while `fut` waits for a person (progress
/// notifications if the request carried a progress token, else comments), then whatever
/// `fut` answers, in the same stream. Dropping the stream (client gone) drops `fut`.
pub fn held_stream<F>(
    fut: F,
    keepalive: Duration,
    progress_token: Option<Value>,
    waiting_for: String,
) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    let stream = async_stream::stream! {
        let mut fut = Box::pin(fut);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let resp = loop {
            let step = tokio::select! {
                r = &mut fut => Step::Done(r),
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Done(r) => break r,
                Step::Tick => {
                    n += 1;
                    yield Ok::<Bytes, std::io::Error>(match &progress_token {
                        Some(t) => progress_event(t, n, &waiting_for),
                        None => sse::comment("waiting for approval"),
                    });
                }
            }
        };
        if is_sse_response(&resp) {
            let mut body = resp.into_body().into_data_stream();
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(b) => yield Ok(b),
                    Err(e) => {
                        yield Err(std::io::Error::other(e));
                        break;
                    }
                }
            }
        } else {
            // A JSON answer becomes one event; `data:` must be a single line.
            let out = match resp.into_body().collect().await {
                Ok(c) => match serde_json::from_slice::<Value>(&c.to_bytes()) {
                    Ok(v) => sse::message(&v),
                    Err(e) => sse::message(&jsonrpc_error(&Value::Null, -32603, "upstream error", json!({ "why": e.to_string() }))),
                },
                Err(e) => sse::message(&jsonrpc_error(&Value::Null, -32603, "upstream error", json!({ "why": e.to_string() }))),
            };
            yield Ok(out);
        }
    };
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn is_sse_response(r: &Response) -> bool {
    r.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_with_2025_06_18() {
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(!allows_batches("2025-11-25"));
    }

    #[test]
    fn sse_is_accepted_only_when_offered() {
        let mut h = HeaderMap::new();
        assert!(!accepts_sse(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_sse(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, Text/Event-Stream"),
        );
        assert!(accepts_sse(&h));
    }
}
