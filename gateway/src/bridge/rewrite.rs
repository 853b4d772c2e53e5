//! An upstream answer carried across the bridge: each JSON-RPC message rewritten (or dropped)
//! as it streams, and the answers the bridge makes itself, shaped as upstream answers so that
//! every step above it reads them as it reads the upstream's.

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::answer::MAX_ANSWER;
use crate::sse;
use crate::transport::is_event_stream;

/// What becomes of one message: the message to pass on, or None to drop it.
pub type Mapper = Box<dyn FnMut(Value) -> Option<Value> + Send>;

type Chunks = BoxStream<'static, Result<Bytes, reqwest::Error>>;

/// The answer with every message passed through `map`, event by event for SSE (the events lose
/// their ids: resumption does not cross the bridge). Refusals pass untouched.
pub fn map_answer(resp: reqwest::Response, map: Mapper) -> reqwest::Response {
    if !resp.status().is_success() {
        return resp;
    }
    let status = resp.status();
    let mut headers = resp.headers().clone();
    headers.remove(CONTENT_LENGTH);
    let body: Chunks = if is_event_stream(&headers) {
        events(resp.bytes_stream().boxed(), map).boxed()
    } else {
        json(resp.bytes_stream().boxed(), map).boxed()
    };
    let mut out = axum::http::Response::new(reqwest::Body::wrap_stream(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    reqwest::Response::from(out)
}

/// An SSE stream of the upstream's, mapped event by event as the chunks come (never buffered).
pub fn events(
    body: Chunks,
    mut map: Mapper,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send {
    sse::reframed(body, move |evs: Vec<sse::Event>| {
        let mut out = Vec::new();
        for ev in evs {
            // Events without JSON (priming events, empty data) carry nothing to pass on.
            if let Some(m) = ev.json().and_then(&mut map) {
                out.extend_from_slice(&sse::message(&m));
            }
        }
        Bytes::from(out)
    })
}

fn json(
    body: Chunks,
    mut map: Mapper,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send {
    async_stream::stream! {
        let mut body = body;
        let mut collected = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => collected.extend_from_slice(&c),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
            // Too large to hold: passed on as it is (the reader downstream refuses it anyway).
            if collected.len() > MAX_ANSWER {
                yield Ok(Bytes::from(std::mem::take(&mut collected)));
                while let Some(c) = body.next().await {
                    yield c;
                }
                return;
            }
        }
        let mapped = match serde_json::from_slice::<Value>(&collected) {
            Ok(Value::Array(items)) => Some(Value::Array(items.into_iter().filter_map(&mut map).collect())),
            Ok(m) => map(m),
            Err(_) => None,
        };
        yield Ok(mapped.map_or_else(|| Bytes::from(collected), |m| Bytes::from(m.to_string())));
    }
}

/// An answer the bridge makes itself, as if the upstream had sent it.
pub fn made(
    status: StatusCode,
    content_type: &'static str,
    body: reqwest::Body,
) -> reqwest::Response {
    let mut out = axum::http::Response::new(body);
    *out.status_mut() = status;
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reqwest::Response::from(out)
}

/// A JSON answer of the bridge's own.
pub fn made_json(status: StatusCode, msg: &Value) -> reqwest::Response {
    made(
        status,
        "application/json",
        reqwest::Body::from(msg.to_string()),
    )
}

/// `202 Accepted` for a notification or response the bridge takes itself.
pub fn accepted() -> reqwest::Response {
    let mut out = axum::http::Response::new(reqwest::Body::from(Bytes::new()));
    *out.status_mut() = StatusCode::ACCEPTED;
    reqwest::Response::from(out)
}

/// A JSON-RPC result of the bridge's own for request `id`.
pub fn result(id: &Value, result: Value) -> reqwest::Response {
    made_json(
        StatusCode::OK,
        &serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}),
    )
}

/// A JSON-RPC error of the bridge's own for request `id`.
pub fn error(status: StatusCode, id: &Value, code: i64, message: &str) -> reqwest::Response {
    made_json(
        status,
        &serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
    )
}

/// Whether a message is a request (a method and an id).
pub fn is_request(m: &Value) -> bool {
    m.get("method").is_some() && m.get("id").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chunks(wire: &str) -> Chunks {
        let parts: Vec<Result<Bytes, reqwest::Error>> = wire
            .as_bytes()
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn events_are_mapped_one_by_one_and_lose_their_ids() {
        let a = json!({"jsonrpc": "2.0", "method": "drop-me"});
        let b = json!({"jsonrpc": "2.0", "id": 1, "result": {}});
        let wire = format!("id: 7\ndata: {a}\n\n: comment\n\nid: 8\ndata: {b}\n\n");
        let map: Mapper = Box::new(|mut m: Value| {
            if m.get("method").is_some() {
                return None;
            }
            m["result"]["seen"] = json!(true);
            Some(m)
        });
        let out: Vec<_> = events(chunks(&wire), map).collect().await;
        let text: String = out
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect();
        assert_eq!(
            text,
            "event: message\ndata: {\"id\":1,\"jsonrpc\":\"2.0\",\"result\":{\"seen\":true}}\n\n"
        );
    }

    #[tokio::test]
    async fn a_json_body_is_mapped_whole() {
        let map: Mapper = Box::new(|mut m: Value| {
            m["x"] = json!(1);
            Some(m)
        });
        let out: Vec<_> = json(chunks(r#"{"id":1}"#), map).collect().await;
        assert_eq!(out.len(), 1);
        assert_eq!(
            serde_json::from_slice::<Value>(out[0].as_ref().unwrap()).unwrap(),
            json!({"id": 1, "x": 1})
        );
    }
}
