//! The 2026-07-28 request path: no session and no `initialize`. Each request carries its
//! protocol version; its headers are checked against its body before anything is forwarded,
//! and its calls are scoped by the principal (lock, budget window, held calls, reattachment).

use axum::Json;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::answer::deliver;
use crate::call::Caller;
use crate::continuation;
use crate::era;
use crate::error::{RequestError, upstream_error};
use crate::identity::Identity;
use crate::mcp::{DISCOVER, Incoming, LISTEN, Message, TOOLS_CALL, TOOLS_LIST};
use crate::state::AppState;
use crate::task;
use crate::tool_call::ToolCall;

/// One 2026-07-28 POST (its era already decided).
pub async fn post(
    app: &AppState,
    identity: Identity,
    headers: HeaderMap,
    bytes: Bytes,
    incoming: Incoming,
) -> Result<Response, RequestError> {
    let Incoming::Single(msg) = incoming else {
        return Err(RequestError::InvalidRequest(format!(
            "JSON-RPC batches are not part of MCP protocol version {}",
            era::MODERN
        )));
    };
    let caller = Caller::stateless(identity, headers);
    match msg {
        Message::Request { id, method, params } => {
            era::check_request_headers(&caller.headers, &method, &params)?;
            match method.as_str() {
                TOOLS_CALL => {
                    let policy = app.pipeline.rules.policy();
                    let mut call = ToolCall::new(id, &params, bytes, &policy, &caller.identity);
                    let states = &app.pipeline.request_states;
                    continuation::take(states, &mut call, &params, &caller.principal().0);
                    call.task = task::extension_ask(&params);
                    // Every step beside the call's pipeline is boxed, as in the session era's
                    // POST: a held call parks this future, as large as its largest state.
                    Box::pin(app.pipeline.check_param_headers(&caller, &call)).await?;
                    Ok(app.pipeline.clone().answer(caller, call).await)
                }
                TOOLS_LIST => {
                    Box::pin(app.discovery.tools_list(&caller, bytes, &id, &params)).await
                }
                DISCOVER => Box::pin(app.discovery.discover(&caller, bytes, &id)).await,
                m if task::handles(m, &params) => {
                    let tasks = &app.pipeline.tasks;
                    let answer = tasks.answer(&caller, task::Era::Extension, m, &id, &params);
                    Ok(Box::pin(answer).await)
                }
                LISTEN => Box::pin(listen(app, &caller, id, &params, bytes)).await,
                // The rest: relayed as they stream.
                _ => Box::pin(forward(app, &caller, bytes, Some(id))).await,
            }
        }
        // Without an id nobody could be told "denied", and the upstream might run it anyway.
        Message::Notification { method, .. } if method == TOOLS_CALL => Err(
            RequestError::InvalidRequest("tools/call must be a request with an id".into()),
        ),
        Message::Notification { .. } | Message::Response { .. } => {
            Box::pin(forward(app, &caller, bytes, None)).await
        }
    }
}

/// `subscriptions/listen`: the gateway's own tasks' status from the gateway, the rest relayed.
async fn listen(
    app: &AppState,
    caller: &Caller,
    id: Value,
    params: &Value,
    bytes: Bytes,
) -> Result<Response, RequestError> {
    use task::listen::{self, Listen};
    match listen::split(params) {
        None => forward(app, caller, bytes, Some(id)).await,
        Some(_) if !task::wire::declares_extension(params) => Ok(listen::missing_capability(&id)),
        Some(Listen::Own(ids)) => Ok(app.pipeline.tasks.listen(caller, id, ids)),
        Some(Listen::Upstream(rest)) => {
            let body = listen::upstream_body(&id, rest);
            forward(app, caller, body, Some(id)).await
        }
    }
}

/// Relays a message the gateway does not look into, in either era; a request still gets a
/// JSON-RPC answer it can match to its id when the upstream fails.
pub async fn forward(
    app: &AppState,
    caller: &Caller,
    body: Bytes,
    request_id: Option<Value>,
) -> Result<Response, RequestError> {
    let sent = caller.send(app.link(), body, &caller.headers).await;
    let delivered = match sent {
        Ok(resp) => {
            let keepalive = app.pipeline.keepalive;
            deliver(resp, &caller.headers, request_id.clone(), (), keepalive).await
        }
        Err(e) => Err(e),
    };
    match (delivered, request_id) {
        (Ok(resp), _) => Ok(resp),
        (Err(e), Some(id)) => {
            tracing::warn!(error = %airlock_shared::telemetry::chain(&e), "upstream failed");
            Ok(Json(upstream_error(&id, &e.to_string())).into_response())
        }
        (Err(e), None) => Err(e.into()),
    }
}
