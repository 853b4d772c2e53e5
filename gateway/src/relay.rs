//! The relay: the upstream's answer passed on to the client as it comes, event by event,
//! with an error for the request it answers if the stream ends without the response.

use std::time::Duration;

use airlock_shared::SessionId;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::error::upstream_error;
use crate::mcp::is_response_to;
use crate::sse;
use crate::transport::is_event_stream;
use crate::upstream::SESSION_HEADER;

/// What a relay of an answer should know about the request it answers.
pub struct Relay<K> {
    /// For `initialize`: the session id the client gets.
    pub client_session: Option<SessionId>,
    /// Lives until the upstream has answered the request, or its stream ends (e.g. the session
    /// lock): a queued call need not wait for this client to read the rest.
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
        let mut keep = Some(keep);
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
                                drop(keep.take());
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
        drop(keep);
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
            out.extend_from_slice(&sse::message(&upstream_error(id, &why)));
            yield Ok(Bytes::from(out));
        } else if let Some(e) = failed {
            yield Err(std::io::Error::other(e));
        }
    }
}
