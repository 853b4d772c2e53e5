//! JSON-RPC batches that hold `tools/call`s (MCP 2025-03-26 only).
//!
//! Policy works on one call at a time, so the batch is split: every `tools/call` takes the
//! single-call path of its own (deny, budget, session lock, approval hold, audit row), and the
//! rest of the batch goes upstream as one smaller batch. The parts run concurrently, and their
//! answers are matched back to the batch's request ids.
//!
//! Every part is driven by the response itself (the SSE body, or the handler's future for a
//! JSON answer), never by a detached task: a client that goes away drops the parts, and with
//! them the drop guards that cancel held tickets and write the audit rows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::{BoxStream, SelectAll};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::answer::messages;
use crate::call::{Caller, Pipeline};
use crate::error::{RequestError, upstream_error};
use crate::identity::Identity;
use crate::mcp::{Message, TOOLS_CALL, is_response_to};
use crate::policy::Policy;
use crate::sse;
use crate::tool_call::ToolCall;
use crate::transport::{accepts_sse, is_event_stream, progress_event, sse_response, waiting_for};

/// What every part of one batch shares.
struct Ctx {
    pipeline: Arc<Pipeline>,
    caller: Caller,
}

/// The batch taken apart.
struct Plan {
    calls: Vec<ToolCall>,
    /// The messages that are not `tools/call`s, as one batch body, and the ids it must answer.
    rest: Option<(Bytes, Vec<Value>)>,
    /// Every request id of the batch, in the batch's order.
    order: Vec<Value>,
}

/// What a part hands back.
enum Out {
    /// The response to one of the batch's requests.
    Answer(Value),
    /// A request or notification from the server to the client.
    Aside(Value),
}

/// Answers a batch that holds at least one `tools/call`: over SSE, one event per response as
/// soon as it is known, if the client takes SSE; otherwise one JSON array once all are known.
pub async fn handle(
    pipeline: Arc<Pipeline>,
    caller: Caller,
    body: &[u8],
    msgs: Vec<Message>,
) -> Result<Response, RequestError> {
    let plan = split(body, msgs, &pipeline.rules.policy(), &caller.identity)?;
    tracing::debug!(session = %caller.sid, calls = plan.calls.len(), rest = plan.rest.is_some(), "batch split");
    let ctx = Ctx { pipeline, caller };
    if plan.order.is_empty() {
        // Only notifications and responses went upstream: nothing to answer.
        parts(&ctx, plan.calls, plan.rest)
            .for_each(|_| async {})
            .await;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    if accepts_sse(&ctx.caller.headers) {
        return Ok(sse_answer(ctx, plan));
    }
    Ok(json_answer(&ctx, plan).await)
}

/// Takes the batch apart; the raw messages are re-read because the parsed ones keep only what
/// routing needs, and the upstream must get every message exactly as the client sent it.
fn split(
    body: &[u8],
    msgs: Vec<Message>,
    policy: &Policy,
    identity: &Identity,
) -> Result<Plan, RequestError> {
    let raw: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| RequestError::Parse(e.to_string()))?;
    if raw.len() != msgs.len() {
        return Err(RequestError::InvalidRequest(
            "the batch changed between reads".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut calls = Vec::new();
    let mut rest = Vec::new();
    let mut rest_ids = Vec::new();
    let mut order = Vec::new();
    for (raw, msg) in raw.into_iter().zip(msgs) {
        match msg {
            Message::Request { id, method, params } => {
                // Answers are matched by id, and held calls are cancelled by id.
                if !seen.insert(id.to_string()) {
                    return Err(RequestError::InvalidRequest(format!(
                        "request id {id} appears twice in the batch"
                    )));
                }
                order.push(id.clone());
                if method == TOOLS_CALL {
                    let body = Bytes::from(raw.to_string());
                    calls.push(ToolCall::new(id, &params, body, policy, identity));
                } else {
                    rest_ids.push(id);
                    rest.push(raw);
                }
            }
            Message::Notification { method, .. } if method == TOOLS_CALL => {
                // A call without an id cannot be answered, so it cannot be held or refused
                // either: it must not reach the upstream past policy.
                tracing::info!("a tools/call without an id in a batch was not forwarded");
            }
            Message::Notification { .. } | Message::Response { .. } => rest.push(raw),
        }
    }
    let rest = (!rest.is_empty()).then(|| (Bytes::from(Value::Array(rest).to_string()), rest_ids));
    Ok(Plan { calls, rest, order })
}

/// Every part of the batch as one stream of what they hand back.
fn parts(
    ctx: &Ctx,
    calls: Vec<ToolCall>,
    rest: Option<(Bytes, Vec<Value>)>,
) -> SelectAll<BoxStream<'_, Out>> {
    let mut all: SelectAll<BoxStream<'_, Out>> = SelectAll::new();
    for call in calls {
        all.push(call_part(ctx, call));
    }
    if let Some((body, ids)) = rest {
        all.push(rest_part(ctx, body, ids));
    }
    all
}

fn call_part(ctx: &Ctx, call: ToolCall) -> BoxStream<'_, Out> {
    Box::pin(async_stream::stream! {
        let id = call.id.clone();
        let resp = ctx.pipeline.run(&ctx.caller, call).await;
        let sse = is_event_stream(resp.headers());
        // The single-call path has logged whatever went wrong on its way.
        let msgs = messages(resp.into_body().into_data_stream(), sse);
        for await out in settle(vec![id], msgs) {
            yield out;
        }
    })
}

fn rest_part(ctx: &Ctx, body: Bytes, ids: Vec<Value>) -> BoxStream<'_, Out> {
    Box::pin(async_stream::stream! {
        let c = &ctx.caller;
        let sent = c.send(&ctx.pipeline.link, body, &c.headers).await;
        let msgs: BoxStream<'_, Result<Value, String>> = match sent {
            Ok(resp) if resp.status().is_success() => {
                let sse = is_event_stream(resp.headers());
                let sid = &c.sid;
                let body = resp.bytes_stream().inspect_err(move |e| {
                    tracing::warn!(session = %sid, error = %airlock_shared::telemetry::chain(e), "upstream batch answer broke off");
                });
                Box::pin(messages(body, sse))
            }
            Ok(resp) => {
                let status = resp.status().as_u16();
                tracing::warn!(session = %c.sid, status, "upstream refused the rest of a batch");
                Box::pin(futures::stream::iter([Err(format!("upstream answered HTTP {status}"))]))
            }
            Err(e) => {
                tracing::warn!(session = %c.sid, error = %airlock_shared::telemetry::chain(&e), "upstream failed on the rest of a batch");
                Box::pin(futures::stream::iter([Err(e.to_string())]))
            }
        };
        for await out in settle(ids, msgs) {
            yield out;
        }
    })
}

/// Matches a part's messages to the ids it must answer: server-to-client messages pass, stray
/// responses are dropped, and every id still unanswered when the part ends gets an error.
fn settle<'a>(
    ids: Vec<Value>,
    msgs: impl Stream<Item = Result<Value, String>> + Send + 'a,
) -> impl Stream<Item = Out> + Send + 'a {
    async_stream::stream! {
        futures::pin_mut!(msgs);
        let mut pending = ids;
        let mut why: Option<String> = None;
        // Reading stops at the last answer: whatever the upstream sends after it answers nothing.
        while !pending.is_empty() {
            let m = match msgs.next().await {
                None => break,
                Some(Err(e)) => {
                    why = Some(e);
                    break;
                }
                Some(Ok(m)) => m,
            };
            if m.get("method").is_some() {
                yield Out::Aside(m);
                continue;
            }
            if let Some(i) = pending.iter().position(|id| is_response_to(&m, id)) {
                pending.swap_remove(i);
                yield Out::Answer(m);
            } else if m.get("id").is_some_and(Value::is_null) && m.get("error").is_some() {
                // The upstream refused the body as a whole; its reason is the best one to give.
                why = m.pointer("/error/message").and_then(Value::as_str).map(str::to_owned);
            } else {
                tracing::debug!(message = %m, "dropped a message that answers no request of the batch");
            }
        }
        for id in pending {
            let why = why.as_deref().unwrap_or("upstream closed the stream without an answer");
            yield Out::Answer(upstream_error(&id, why));
        }
    }
}

/// One JSON array with every response, in the batch's order, once every part has finished.
async fn json_answer(ctx: &Ctx, plan: Plan) -> Response {
    let Plan { calls, rest, order } = plan;
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut dropped = 0usize;
    let mut all = parts(ctx, calls, rest);
    while let Some(out) = all.next().await {
        match out {
            Out::Answer(v) => {
                let key = v.get("id").map(Value::to_string).unwrap_or_default();
                answers.insert(key, v);
            }
            Out::Aside(_) => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::info!(session = %ctx.caller.sid, dropped, "server-to-client messages of a batch dropped: the client takes only JSON");
    }
    let list: Vec<Value> = order
        .iter()
        .filter_map(|id| answers.remove(&id.to_string()))
        .collect();
    Json(Value::Array(list)).into_response()
}

enum Step {
    Out(Option<Out>),
    Tick,
}

/// An SSE stream that carries every response (and server-to-client message) as its own event
/// as soon as it is known, with comments while the parts are quiet.
fn sse_answer(ctx: Ctx, plan: Plan) -> Response {
    let keepalive = ctx.pipeline.keepalive;
    let Plan { calls, rest, .. } = plan;
    // Held calls that carry a progress token get progress notifications while they wait, as a
    // single held call does; everything else gets comments.
    let mut held: Vec<(Value, Value, String)> = calls
        .iter()
        .filter(|c| c.is_held())
        .filter_map(|c| {
            let token = c.progress_token.clone()?;
            Some((c.id.clone(), token, waiting_for(&c.verdict.approvers)))
        })
        .collect();
    let stream = async_stream::stream! {
        let ctx = ctx;
        let mut all = parts(&ctx, calls, rest);
        let mut ticks: u64 = 0;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                out = all.next() => Step::Out(out),
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Out(Some(Out::Answer(m))) => {
                    tick.reset();
                    held.retain(|(id, _, _)| m.get("id") != Some(id));
                    yield Ok::<Bytes, std::io::Error>(sse::message(&m));
                }
                Step::Out(Some(Out::Aside(m))) => {
                    tick.reset();
                    yield Ok::<Bytes, std::io::Error>(sse::message(&m));
                }
                Step::Out(None) => break,
                Step::Tick if held.is_empty() => yield Ok(sse::comment("waiting for the batch")),
                Step::Tick => {
                    ticks += 1;
                    let mut out = Vec::new();
                    for (_, token, waiting_for) in &held {
                        out.extend_from_slice(&progress_event(token, ticks, waiting_for));
                    }
                    yield Ok(Bytes::from(out));
                }
            }
        }
    };
    sse_response(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{Incoming, parse};
    use serde_json::json;

    fn plan(body: &str) -> Result<Plan, RequestError> {
        let Ok(Incoming::Batch(msgs)) = parse(body.as_bytes()) else {
            panic!("not a batch: {body}");
        };
        let policy = Policy::parse("version: 1\ndefault: deny\n").unwrap();
        split(
            body.as_bytes(),
            msgs,
            &policy,
            &Identity::agent(airlock_shared::Principal("a".into())),
        )
    }

    #[test]
    fn calls_go_alone_and_the_rest_goes_as_sent() {
        let p = plan(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},
               {"jsonrpc":"2.0","id":"p","method":"ping","extra":true},
               {"jsonrpc":"2.0","method":"notifications/initialized"},
               {"jsonrpc":"2.0","id":"s1","result":{"roots":[]}},
               {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"b"}}]"#,
        )
        .unwrap();
        assert_eq!(p.order, vec![json!(1), json!("p"), json!(2)]);
        assert_eq!(p.calls.len(), 2);
        assert_eq!(p.calls[1].id, json!(2));
        assert_eq!(
            serde_json::from_slice::<Value>(&p.calls[0].body).unwrap(),
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}})
        );
        let (rest, ids) = p.rest.unwrap();
        assert_eq!(ids, vec![json!("p")]);
        assert_eq!(
            serde_json::from_slice::<Value>(&rest).unwrap(),
            json!([
                {"jsonrpc":"2.0","id":"p","method":"ping","extra":true},
                {"jsonrpc":"2.0","method":"notifications/initialized"},
                {"jsonrpc":"2.0","id":"s1","result":{"roots":[]}},
            ])
        );
    }

    #[test]
    fn duplicate_ids_and_calls_without_an_id_are_not_passed_on() {
        assert!(matches!(
            plan(
                r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}},{"jsonrpc":"2.0","id":1,"method":"ping"}]"#
            ),
            Err(RequestError::InvalidRequest(_))
        ));
        let p = plan(r#"[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}]"#).unwrap();
        assert!(p.calls.is_empty() && p.rest.is_none() && p.order.is_empty());
    }

    async fn settled(ids: Vec<Value>, msgs: Vec<Result<Value, String>>) -> Vec<(bool, Value)> {
        settle(ids, futures::stream::iter(msgs))
            .map(|o| match o {
                Out::Answer(v) => (true, v),
                Out::Aside(v) => (false, v),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn answers_are_matched_by_id_and_missing_ones_become_errors() {
        let got = settled(
            vec![json!(1), json!("two")],
            vec![
                Ok(json!({"jsonrpc":"2.0","method":"notifications/progress"})),
                Ok(json!({"jsonrpc":"2.0","id":9,"result":{}})),
                Ok(json!({"jsonrpc":"2.0","id":"two","result":{"ok":true}})),
                Err("upstream answer broke off: reset".into()),
            ],
        )
        .await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(!got[0].0);
        assert_eq!(
            got[1],
            (
                true,
                json!({"jsonrpc":"2.0","id":"two","result":{"ok":true}})
            )
        );
        assert_eq!(got[2].1["id"], 1);
        assert_eq!(got[2].1["error"]["code"], -32603);
        assert_eq!(
            got[2].1["error"]["data"]["why"],
            "upstream answer broke off: reset"
        );
    }
}
