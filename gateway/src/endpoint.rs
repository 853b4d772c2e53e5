//! The `/mcp` endpoint: authentication, sessions, and dispatch of each message to its step.

use std::sync::Arc;

use airlock_shared::{Principal, SessionId};
use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

use crate::batch;
use crate::call::Caller;
use crate::era;
use crate::error::RequestError;
use crate::identity::Identity;
use crate::mcp::{self, CANCELLED, INITIALIZE, Incoming, Message, TOOLS_CALL, TOOLS_LIST};
use crate::oauth::{Challenge, Refusal};
use crate::relay::{Relay, relay};
use crate::session::SessionInfo;
use crate::state::AppState;
use crate::stateless::{self, forward};
use crate::task;
use crate::tool_call::ToolCall;
use crate::transport::{allows_batches, protocol_version};
use crate::upstream::SESSION_HEADER;

/// Rejects requests without a known agent's token or a valid access token, before any other
/// work; the caller's [`Identity`] (and its principal) go into the request's extensions.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    // Boxed: token checks (OAuth) make a large future, and a held call would carry its size
    // in this middleware's state for as long as it waits.
    match Box::pin(identify(&app, token)).await {
        Ok(identity) => {
            req.extensions_mut().insert(identity.principal.clone());
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Err(e) => refuse(e),
    }
}

/// The identity behind a bearer token: a static agent key first (a constant-time hash
/// comparison), else an access token when OAuth is on.
async fn identify(app: &AppState, token: Option<&str>) -> Result<Identity, RequestError> {
    let oauth = app.oauth.as_deref();
    let Some(token) = token else {
        return Err(RequestError::Unauthorized(
            oauth.map(|o| o.challenge(None)).unwrap_or_default(),
        ));
    };
    let agents = app.rules.agents();
    if let Some(p) = agents.authenticate(token) {
        return Ok(Identity::agent(p.clone()));
    }
    let Some(oauth) = oauth else {
        return Err(RequestError::Unauthorized(Challenge::default()));
    };
    match oauth.authenticate(token, |p| agents.knows(p)).await {
        Ok(identity) => Ok(identity),
        Err(r @ Refusal::InsufficientScope) => {
            Err(RequestError::InsufficientScope(oauth.challenge(Some(r))))
        }
        Err(r @ Refusal::Invalid(e)) => {
            tracing::debug!(why = %e, "access token refused");
            Err(RequestError::Unauthorized(oauth.challenge(Some(r))))
        }
    }
}

/// Logs why a request was refused (once, here) and answers it.
fn refuse(err: RequestError) -> Response {
    match &err {
        RequestError::Store(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(e), "request failed")
        }
        RequestError::Upstream(e) => {
            tracing::warn!(error = %airlock_shared::telemetry::chain(e), "upstream failed")
        }
        RequestError::Unauthorized(_)
        | RequestError::InsufficientScope(_)
        | RequestError::TooLarge { .. }
        | RequestError::BodyRead
        | RequestError::Parse(_)
        | RequestError::InvalidRequest(_)
        | RequestError::UnsupportedMediaType
        | RequestError::MissingSession
        | RequestError::SessionIdTooLong { .. }
        | RequestError::MalformedSession
        | RequestError::UnsupportedProtocolVersion { .. }
        | RequestError::HeaderMismatch(_)
        | RequestError::MethodNotAllowed(_)
        | RequestError::UnknownSession => tracing::debug!(error = %err, "request refused"),
    }
    err.into_response()
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, RequestError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RequestError::TooLarge { limit })
        }
        Err(_) => Err(RequestError::BodyRead),
    }
}

/// The longest `Mcp-Session-Id` taken; ours are far shorter.
const SESSION_ID_LIMIT: usize = 128;

/// The client's `Mcp-Session-Id`: present, at most 128 characters, visible ASCII (the spec's
/// alphabet for session ids).
fn session_id(headers: &HeaderMap) -> Result<SessionId, RequestError> {
    let v = headers
        .get(&SESSION_HEADER)
        .ok_or(RequestError::MissingSession)?
        .as_bytes();
    if v.len() > SESSION_ID_LIMIT {
        return Err(RequestError::SessionIdTooLong {
            limit: SESSION_ID_LIMIT,
        });
    }
    match std::str::from_utf8(v) {
        Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(SessionId(s.to_owned()))
        }
        Ok(_) | Err(_) => Err(RequestError::MalformedSession),
    }
}

async fn owned_session(
    app: &AppState,
    headers: &HeaderMap,
    principal: &Principal,
) -> Result<(SessionId, Arc<SessionInfo>), RequestError> {
    protocol_version(headers)?;
    let sid = session_id(headers)?;
    let info = app
        .link()
        .sessions
        .owned_by(&sid, principal)
        .await?
        .ok_or(RequestError::UnknownSession)?;
    Ok((sid, info))
}

/// `POST /mcp`.
pub async fn post(
    State(app): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match post_inner(app, identity, headers, body).await {
        Ok(r) => r,
        Err(e) => refuse(e),
    }
}

/// Refuses a POST whose body is not declared JSON.
fn require_json(headers: &HeaderMap) -> Result<(), RequestError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    json_body
        .then_some(())
        .ok_or(RequestError::UnsupportedMediaType)
}

async fn post_inner(
    app: AppState,
    identity: Identity,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    require_json(&headers)?;
    // Checked before anything is forwarded, `initialize` included.
    let version = protocol_version(&headers)?;
    // A future is as large as its largest state, and a held call parks this one for minutes:
    // every step beside the call's own pipeline is boxed, so a hold costs only its wait.
    let bytes = Box::pin(read_body(body, app.max_body_bytes)).await?;
    let incoming = mcp::parse(&bytes)?;
    if era::is_modern(&headers, version, &incoming)? {
        return Box::pin(stateless::post(&app, identity, headers, bytes, incoming)).await;
    }
    if let Incoming::Single(Message::Request { id, method, params }) = &incoming
        && method == INITIALIZE
    {
        let discovery = &app.discovery;
        let init = discovery.initialize(&identity.principal, &headers, bytes.clone(), id, params);
        return Box::pin(init).await;
    }
    if let Some(why) = misplaced_initialize(&incoming) {
        return Err(RequestError::InvalidRequest(why.into()));
    }
    let (sid, info) = Box::pin(owned_session(&app, &headers, &identity.principal)).await?;
    let caller = Caller {
        identity,
        sid,
        session: Some(info),
        headers,
    };
    match incoming {
        Incoming::Single(Message::Request { id, method, params }) if method == TOOLS_CALL => {
            let policy = app.pipeline.rules.policy();
            let mut call = ToolCall::new(id, &params, bytes, &policy, &caller.identity);
            call.task = task::classic_ask(&caller.headers, &params);
            Ok(app.pipeline.clone().answer(caller, call).await)
        }
        Incoming::Single(Message::Request { id, method, params })
            if task::handles(&method, &params) =>
        {
            let tasks = &app.pipeline.tasks;
            let answer = tasks.answer(&caller, task::Era::Classic, &method, &id, &params);
            Ok(Box::pin(answer).await)
        }
        Incoming::Single(Message::Request { id, method, params })
            if method == task::list::LIST && task::speaks_classic(&caller.headers) =>
        {
            Ok(Box::pin(app.pipeline.tasks.list(&caller, &id, &params)).await)
        }
        Incoming::Single(Message::Request { id, method, params }) if method == TOOLS_LIST => {
            Box::pin(app.discovery.tools_list(&caller, bytes, &id, &params)).await
        }
        // Without an id nobody could be told "denied", and the upstream might run it anyway.
        Incoming::Single(Message::Notification { method, .. }) if method == TOOLS_CALL => Err(
            RequestError::InvalidRequest("tools/call must be a request with an id".into()),
        ),
        Incoming::Single(Message::Notification { method, params }) if method == CANCELLED => {
            if let Some(req_id) = params.get("requestId") {
                app.pipeline.held.cancel(&caller.sid, req_id);
            }
            Box::pin(forward(&app, &caller, bytes, None)).await
        }
        Incoming::Batch(msgs) => Box::pin(post_batch(&app, caller, bytes, msgs)).await,
        Incoming::Single(m) => {
            let single_id = match m {
                Message::Request { id, .. } => Some(id),
                Message::Notification { .. } | Message::Response { .. } => None,
            };
            Box::pin(forward(&app, &caller, bytes, single_id)).await
        }
    }
}

/// Why an `initialize` that is not a request of its own is refused (rather than as a request
/// without a session, which would send the client looking for the wrong fault).
fn misplaced_initialize(incoming: &Incoming) -> Option<&'static str> {
    match incoming {
        Incoming::Single(Message::Notification { method, .. }) if method == INITIALIZE => {
            Some("initialize must be a request with an id")
        }
        Incoming::Batch(msgs) if msgs.iter().any(|m| m.method() == Some(INITIALIZE)) => {
            Some("initialize must be sent on its own, not in a batch")
        }
        Incoming::Single(_) | Incoming::Batch(_) => None,
    }
}

/// A batch: its cancellations reach held calls, and its calls go through policy one by one.
async fn post_batch(
    app: &AppState,
    caller: Caller,
    bytes: Bytes,
    msgs: Vec<Message>,
) -> Result<Response, RequestError> {
    let version = protocol_version(&caller.headers)?;
    if !allows_batches(version) {
        return Err(RequestError::InvalidRequest(format!(
            "JSON-RPC batches are not part of MCP protocol version {version}"
        )));
    }
    // A cancellation reaches a held call whether it comes alone or in a batch.
    for m in &msgs {
        if let Message::Notification { method, params } = m
            && method == CANCELLED
            && let Some(req_id) = params.get("requestId")
        {
            app.pipeline.held.cancel(&caller.sid, req_id);
        }
    }
    if msgs.iter().any(|m| m.method() == Some(TOOLS_CALL)) {
        return batch::handle(app.pipeline.clone(), caller, &bytes, msgs).await;
    }
    forward(app, &caller, bytes, None).await
}

/// 2026-07-28 has neither the GET stream nor sessions to delete: 405, as the spec says.
fn no_stream_in_modern(headers: &HeaderMap, method: &'static str) -> Result<(), RequestError> {
    match protocol_version(headers)? {
        era::MODERN => Err(RequestError::MethodNotAllowed(method)),
        _ => Ok(()),
    }
}

/// `GET /mcp`: the standalone server-to-client stream.
pub async fn get(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let res = async {
        no_stream_in_modern(&headers, "GET")?;
        let (sid, info) = owned_session(&app, &headers, &principal).await?;
        let resp = app
            .link()
            .send(&sid, &info, reqwest::Method::GET, None, &headers)
            .await?;
        Ok::<_, RequestError>(relay(
            resp,
            Relay {
                client_session: None,
                keep: (),
                answers: None,
                keepalive: Some(app.pipeline.keepalive),
            },
        ))
    }
    .await;
    res.unwrap_or_else(refuse)
}

/// `DELETE /mcp`: ends the session here and upstream.
pub async fn delete(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let res = async {
        no_stream_in_modern(&headers, "DELETE")?;
        let (sid, info) = owned_session(&app, &headers, &principal).await?;
        let resp = app.link().end(&info, &headers).await;
        app.link().sessions.delete(&sid).await?;
        tracing::info!(session = %sid, "session deleted");
        Ok::<_, RequestError>(match resp {
            Ok(r) => relay(
                r,
                Relay {
                    client_session: None,
                    keep: (),
                    answers: None,
                    keepalive: None,
                },
            ),
            Err(e) => {
                tracing::warn!(error = %airlock_shared::telemetry::chain(&e), "upstream delete failed");
                StatusCode::OK.into_response()
            }
        })
    }
    .await;
    res.unwrap_or_else(refuse)
}
