//! Streamable HTTP as clients see it: what they accept, the protocol version they speak, and
//! how the gateway's own SSE answers and progress notifications look.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};

use crate::error::RequestError;
use crate::sse;
use crate::upstream::PROTOCOL_HEADER;

/// The protocol version a request without the header speaks (the spec's rule).
pub const DEFAULT_PROTOCOL_VERSION: &str = "2025-03-26";

/// Every MCP protocol version the gateway speaks, oldest first.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] = &[
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    MODERN_PROTOCOL_VERSION,
];

/// The stateless revision: no session, no `initialize` (see `era.rs`).
pub const MODERN_PROTOCOL_VERSION: &str = "2026-07-28";

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

/// Whether a body (the upstream's, or one of ours) is an SSE stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim_start().starts_with("text/event-stream"))
}

/// The request's `MCP-Protocol-Version`, or the version the spec assumes without one; a
/// version the gateway does not speak is refused (and so never reaches the upstream).
pub fn protocol_version(headers: &HeaderMap) -> Result<&'static str, RequestError> {
    let Some(v) = headers.get(&PROTOCOL_HEADER) else {
        return Ok(DEFAULT_PROTOCOL_VERSION);
    };
    let bytes = v.as_bytes();
    SUPPORTED_PROTOCOL_VERSIONS
        .iter()
        .copied()
        .find(|s| s.as_bytes() == bytes)
        .ok_or_else(|| RequestError::UnsupportedProtocolVersion {
            // Enough to recognise it; a client's header is not echoed in full.
            got: String::from_utf8_lossy(bytes).chars().take(40).collect(),
            supported: SUPPORTED_PROTOCOL_VERSIONS,
        })
}

/// JSON-RPC batches were dropped from MCP in 2025-06-18.
pub fn allows_batches(version: &str) -> bool {
    version < "2025-06-18"
}

/// An SSE answer of the gateway's own: the stream, with headers that keep proxies from
/// buffering it.
pub fn sse_response<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_with_2025_06_18() {
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(!allows_batches("2025-11-25"));
        assert!(!allows_batches(MODERN_PROTOCOL_VERSION));
    }

    #[test]
    fn only_supported_protocol_versions_pass() {
        let mut h = HeaderMap::new();
        assert_eq!(protocol_version(&h).unwrap(), DEFAULT_PROTOCOL_VERSION);
        for v in SUPPORTED_PROTOCOL_VERSIONS {
            h.insert(&PROTOCOL_HEADER, HeaderValue::from_static(v));
            assert_eq!(protocol_version(&h).unwrap(), *v);
        }
        for bad in ["2024-11-05", "2099-01-01", "banana", "", " 2025-06-18"] {
            h.insert(&PROTOCOL_HEADER, HeaderValue::from_str(bad).unwrap());
            assert!(protocol_version(&h).is_err(), "{bad:?} passed");
        }
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
