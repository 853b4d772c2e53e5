//! Reading an upstream answer, JSON or SSE: the messages in it, the response to one request,
//! or the whole answer to rewrite. One size limit holds for all of them.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde_json::Value;

use airlock_shared::SessionId;

use crate::error::UpstreamError;
use crate::mcp::is_response_to;
use crate::relay::{Relay, relay, relay_headers};
use crate::sse;
use crate::transport::{accepts_sse, is_event_stream};
use crate::upstream::SESSION_HEADER;

/// The most of one answer the gateway holds in memory: a JSON body, or one SSE event.
pub const MAX_ANSWER: usize = 64 << 20;

const TOO_LARGE: &str = "answer too large";

/// A message, or the messages of a batch.
fn unbatch(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// The JSON-RPC messages of one answer body, JSON or SSE; an `Err` ends it and says why.
pub fn messages<'a, S, E>(
    body: S,
    sse: bool,
) -> impl Stream<Item = Result<Value, String>> + Send + 'a
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'a,
    E: std::fmt::Display + Send + 'a,
{
    async_stream::stream! {
        futures::pin_mut!(body);
        let mut parser = sse::Parser::default();
        let mut collected = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    yield Err(format!("upstream answer broke off: {e}"));
                    return;
                }
            };
            if !sse {
                if collected.len() + chunk.len() > MAX_ANSWER {
                    yield Err(TOO_LARGE.to_owned());
                    return;
                }
                collected.extend_from_slice(&chunk);
                continue;
            }
            // Events pass one by one, however many come; only one is held at a time.
            for ev in parser.feed(&chunk) {
                // Events without JSON (priming events, empty data) carry no message.
                for m in ev.json().map(unbatch).unwrap_or_default() {
                    yield Ok(m);
                }
            }
            if parser.pending() > MAX_ANSWER {
                yield Err(TOO_LARGE.to_owned());
                return;
            }
        }
        if !sse {
            match serde_json::from_slice::<Value>(&collected) {
                Ok(v) => {
                    for m in unbatch(v) {
                        yield Ok(m);
                    }
                }
                Err(e) => yield Err(format!("upstream answer is not JSON: {e}")),
            }
        }
    }
}

/// Reads the upstream's SSE stream until the response to `id`.
pub async fn response_to(resp: reqwest::Response, id: &Value) -> Result<Value, UpstreamError> {
    let msgs = messages(resp.bytes_stream(), true);
    futures::pin_mut!(msgs);
    while let Some(m) = msgs.next().await {
        match m {
            Ok(m) if is_response_to(&m, id) => return Ok(m),
            Ok(_) => {}
            Err(why) => return Err(UpstreamError::Unreadable(why)),
        }
    }
    Err(UpstreamError::NoAnswer(
        "upstream closed the stream without an answer",
    ))
}

/// A JSON answer up to this size (by its `Content-Length`) is read whole before it is passed on,
/// so that `keep` (the session lock) goes as soon as the upstream has answered, not once the
/// client has read it all: a queued call's turn then costs no client write.
const READ_WHOLE: u64 = 256 << 10;

/// Relays the upstream's answer: as it came, or, for a client that takes only JSON, the one
/// JSON-RPC response to `id` taken out of the upstream's SSE stream. `keep` lives until the
/// upstream has answered.
pub async fn deliver<K: Send + Sync + 'static>(
    resp: reqwest::Response,
    headers: &HeaderMap,
    id: Option<Value>,
    keep: K,
    keepalive: Duration,
) -> Result<Response, UpstreamError> {
    if let Some(id) = &id
        && !accepts_sse(headers)
        && resp.status().is_success()
        && is_event_stream(resp.headers())
    {
        let answer = response_to(resp, id).await?;
        drop(keep);
        return Ok(Json(answer).into_response());
    }
    if resp.status().is_success()
        && !is_event_stream(resp.headers())
        && resp.content_length().is_some_and(|n| n <= READ_WHOLE)
    {
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let headers = relay_headers(resp.headers(), None);
        let body = resp.bytes().await.map_err(UpstreamError::Body)?;
        drop(keep);
        return Ok((status, headers, body).into_response());
    }
    Ok(relay(
        resp,
        Relay {
            client_session: None,
            keep,
            answers: id,
            keepalive: Some(keepalive),
        },
    ))
}

/// A whole upstream answer, read, with the response to our request picked out.
pub struct Whole {
    headers: HeaderMap,
    status: StatusCode,
    /// SSE events (the response among them), or None for a JSON body.
    events: Option<Vec<sse::Event>>,
    /// The response to the request, if the answer holds one.
    pub response: Option<Value>,
}

impl Whole {
    /// Reads all of `resp` (up to [`MAX_ANSWER`]) and finds the response to `id` in it.
    pub async fn read(mut resp: reqwest::Response, id: &Value) -> Result<Self, UpstreamError> {
        let status =
            StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let headers = relay_headers(resp.headers(), None);
        let sse = is_event_stream(resp.headers());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(UpstreamError::Body)? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER {
                return Err(UpstreamError::NoAnswer(TOO_LARGE));
            }
        }
        let (events, response) = if sse {
            let mut parser = sse::Parser::default();
            let mut events = parser.feed(&body);
            // A stream that ends without the blank line still ends its last event.
            events.extend(parser.feed(b"\n\n"));
            let response = events
                .iter()
                .filter_map(sse::Event::json)
                .find(|m| is_response_to(m, id));
            (Some(events), response)
        } else {
            let response = serde_json::from_slice::<Value>(&body)
                .ok()
                .filter(|m| is_response_to(m, id));
            (None, response)
        };
        Ok(Self {
            headers,
            status,
            events,
            response,
        })
    }

    /// The answer again, with the response to `id` replaced by `response`.
    pub fn rebuild(
        self,
        id: &Value,
        response: &Value,
        client_session: Option<&SessionId>,
    ) -> Response {
        let mut headers = self.headers;
        if let Some(sid) = client_session
            && let Ok(v) = HeaderValue::from_str(&sid.0)
        {
            headers.insert(SESSION_HEADER, v);
        }
        let body = match self.events {
            Some(events) => {
                let mut out = Vec::new();
                for mut ev in events {
                    if ev.json().is_some_and(|m| is_response_to(&m, id)) {
                        ev.data = response.to_string();
                    }
                    out.extend_from_slice(&ev.to_bytes());
                }
                Body::from(out)
            }
            None => Body::from(response.to_string()),
        };
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = headers;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sse_and_json_bodies_give_the_same_messages() {
        let a = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{}});
        let n = serde_json::json!({"jsonrpc":"2.0","method":"notifications/message"});
        let wire =
            format!("id: 1\ndata: {n}\n\n: keepalive\n\ndata: \n\nevent: message\ndata: {a}\n\n");
        let chunks: Vec<Result<Bytes, std::io::Error>> = wire
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let from_sse: Vec<_> = messages(futures::stream::iter(chunks), true)
            .collect()
            .await;
        assert_eq!(from_sse, vec![Ok(n.clone()), Ok(a.clone())]);
        let body = Value::Array(vec![n.clone(), a.clone()]).to_string();
        let from_json: Vec<_> = messages(
            futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(body))]),
            false,
        )
        .collect()
        .await;
        assert_eq!(from_json, vec![Ok(n), Ok(a)]);
    }
}
