//! Multi round-trip calls (2026-07-28) through the gateway: an upstream `InputRequiredResult`
//! gets the gateway's signed `requestState` on its way to the client, and the client's retry is
//! checked against it before policy runs (see `request_state.rs` for the envelope).

use std::sync::Arc;

use airlock_shared::TicketId;
use axum::http::header::CONTENT_LENGTH;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::answer::MAX_ANSWER;
use crate::mcp::is_response_to;
use crate::request_state::{self, Issue, RequestStateError, RequestStates};
use crate::sse;
use crate::tool_call::ToolCall;
use crate::transport::is_event_stream;

/// The `resultType` of a result that asks the client for more before it retries.
pub const INPUT_REQUIRED: &str = "input_required";

/// A retry's `params.requestState`, verified: the call learns how it continues and its body
/// gets the upstream's own state back. A call without one is left as it is.
pub fn take(states: &RequestStates, call: &mut ToolCall, params: &Value, principal: &str) {
    let Some(wire) = params.get("requestState") else {
        return;
    };
    let opened = states
        .open(wire, &call.tool, &call.arguments, principal, Utc::now())
        .and_then(|c| {
            let body = request_state::restore(&call.body, c.upstream_state.as_deref())
                .ok_or(RequestStateError::Malformed)?;
            call.body = body;
            Ok(c)
        });
    if let Err(e) = &opened {
        tracing::warn!(tool = %call.tool, why = %e, "retry refused: its requestState does not verify");
    }
    call.continuation = Some(opened);
}

/// What the gateway's state for one forwarded call names.
pub struct Sealer {
    pub states: Arc<RequestStates>,
    /// The ticket that approved the call, if one did.
    pub ticket: Option<TicketId>,
    pub request_hash: String,
    pub principal: String,
    pub now: DateTime<Utc>,
}

impl Sealer {
    /// Seals the `requestState` of `msg` if it is an `InputRequiredResult` answering `id`
    /// (also when the upstream gave no state: the retry still has to prove its approval).
    fn seal_in(&self, msg: &mut Value, id: &Value) -> bool {
        if !is_response_to(msg, id) {
            return false;
        }
        let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        if result.get("resultType").and_then(Value::as_str) != Some(INPUT_REQUIRED) {
            return false;
        }
        let upstream = result
            .get("requestState")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let issue = Issue {
            ticket: self.ticket,
            request_hash: &self.request_hash,
            principal: &self.principal,
        };
        let sealed = self.states.seal(&issue, upstream, self.now);
        result.insert("requestState".to_owned(), Value::String(sealed));
        true
    }
}

/// The upstream's answer to `id`, JSON or SSE, with an `InputRequiredResult`'s `requestState`
/// sealed; everything else passes as it came (SSE events re-framed one by one).
pub fn seal_answer(resp: reqwest::Response, id: Value, sealer: Sealer) -> reqwest::Response {
    if !resp.status().is_success() {
        return resp;
    }
    let status = resp.status();
    let mut headers = resp.headers().clone();
    // The body may change length.
    headers.remove(CONTENT_LENGTH);
    let body: BoxStream<'static, Result<Bytes, reqwest::Error>> = if is_event_stream(&headers) {
        sealed_events(resp, id, sealer).boxed()
    } else {
        sealed_json(resp, id, sealer).boxed()
    };
    let mut out = axum::http::Response::new(reqwest::Body::wrap_stream(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    reqwest::Response::from(out)
}

fn sealed_json(
    resp: reqwest::Response,
    id: Value,
    sealer: Sealer,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static {
    async_stream::stream! {
        let mut body = resp.bytes_stream();
        let mut collected = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => collected.extend_from_slice(&c),
                Err(e) => {
                    yield Ok(Bytes::from(collected));
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
        let sealed = serde_json::from_slice::<Value>(&collected)
            .ok()
            .and_then(|mut m| sealer.seal_in(&mut m, &id).then(|| m.to_string()));
        yield Ok(sealed.map_or_else(|| Bytes::from(collected), Bytes::from));
    }
}

fn sealed_events(
    resp: reqwest::Response,
    id: Value,
    sealer: Sealer,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static {
    sse::reframed(resp.bytes_stream(), move |events: Vec<sse::Event>| {
        let mut out = Vec::new();
        for mut ev in events {
            if ev.data.contains(INPUT_REQUIRED)
                && let Some(mut m) = ev.json()
                && sealer.seal_in(&mut m, &id)
            {
                ev.data = m.to_string();
            }
            out.extend_from_slice(&ev.to_bytes());
        }
        Bytes::from(out)
    })
}
