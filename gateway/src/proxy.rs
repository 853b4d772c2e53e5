//! The `/mcp` endpoint: authentication, sessions, policy on `tools/call`, and the relay.

use std::sync::Arc;

use airlock_shared::audit::AuditRecord;
use airlock_shared::ticket::NewTicket;
use airlock_shared::{Principal, SessionId, TicketId, canonical};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::AppState;
use crate::error::{CallError, RequestError, UpstreamError, jsonrpc_error};
use crate::lock::LockError;
use crate::mcp::{self, CANCELLED, INITIALIZE, Incoming, Message, TOOLS_CALL, TOOLS_LIST};
use crate::policy::Action;
use crate::session::SessionInfo;
use crate::upstream::{Outgoing, Relay, SESSION_HEADER, relay};
use crate::{discovery, transport};

/// Rejects requests without a known agent's bearer token, before any other work.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
        .and_then(|t| app.agents.authenticate(t))
        .cloned();
    match principal {
        Some(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        None => RequestError::Unauthorized.into_response(),
    }
}

fn refuse(err: RequestError) -> Response {
    match &err {
        RequestError::Store(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(e), "request failed")
        }
        RequestError::Upstream(e) => {
            tracing::warn!(error = %airlock_shared::telemetry::chain(e), "upstream failed")
        }
        RequestError::Unauthorized
        | RequestError::TooLarge { .. }
        | RequestError::BodyRead
        | RequestError::Parse(_)
        | RequestError::InvalidRequest(_)
        | RequestError::UnsupportedMediaType
        | RequestError::MissingSession
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

fn session_id(headers: &HeaderMap) -> Option<SessionId> {
    headers
        .get(&SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .map(|s| SessionId(s.to_owned()))
}

async fn owned_session(
    app: &AppState,
    headers: &HeaderMap,
    principal: &Principal,
) -> Result<(SessionId, Arc<SessionInfo>), RequestError> {
    let sid = session_id(headers).ok_or(RequestError::MissingSession)?;
    let info = app
        .sessions
        .owned_by(&sid, principal)
        .await?
        .ok_or(RequestError::UnknownSession)?;
    Ok((sid, info))
}

/// `POST /mcp`.
pub async fn post(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match post_inner(app, principal, headers, body).await {
        Ok(r) => r,
        Err(e) => refuse(e),
    }
}

async fn post_inner(
    app: AppState,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, RequestError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_body {
        return Err(RequestError::UnsupportedMediaType);
    }
    let bytes = read_body(body, app.max_body_bytes).await?;
    let incoming = mcp::parse(&bytes)?;
    if let Incoming::Single(Message::Request { id, method, params }) = &incoming
        && method == INITIALIZE
    {
        return discovery::initialize(&app, &principal, &headers, bytes.clone(), id, params).await;
    }
    let (sid, info) = owned_session(&app, &headers, &principal).await?;
    match incoming {
        Incoming::Single(Message::Request { id, method, params }) if method == TOOLS_CALL => {
            Ok(tools_call_entry(app, principal, sid, info, headers, bytes, id, params).await)
        }
        Incoming::Single(Message::Request { id, method, params }) if method == TOOLS_LIST => {
            discovery::tools_list(&app, &sid, &info, &headers, bytes, &id, &params).await
        }
        // Without an id nobody could be told "denied", and the upstream might run it anyway.
        Incoming::Single(Message::Notification { method, .. }) if method == TOOLS_CALL => Err(
            RequestError::InvalidRequest("tools/call must be a request with an id".into()),
        ),
        Incoming::Single(Message::Notification { method, params }) if method == CANCELLED => {
            if let Some(req_id) = params.get("requestId") {
                app.cancel_held(&sid, req_id);
            }
            forward(&app, &sid, &info, &headers, bytes, None).await
        }
        Incoming::Batch(msgs) => {
            let version = transport::protocol_version(&headers);
            if !transport::allows_batches(version) {
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
                    app.cancel_held(&sid, req_id);
                }
            }
            if msgs.iter().any(|m| m.method() == Some(TOOLS_CALL)) {
                return crate::batch::handle(app, principal, sid, info, headers, &bytes, msgs)
                    .await;
            }
            forward(&app, &sid, &info, &headers, bytes, None).await
        }
        Incoming::Single(m) => {
            let single_id = match m {
                Message::Request { id, .. } => Some(id),
                Message::Notification { .. } | Message::Response { .. } => None,
            };
            forward(&app, &sid, &info, &headers, bytes, single_id).await
        }
    }
}

/// Sends a request in a session; if the upstream forgot the session (404), or never had one
/// (it was opened from the cache while the upstream was down), re-initialises once and retries.
pub(crate) async fn send_in_session(
    app: &AppState,
    sid: &SessionId,
    info: &SessionInfo,
    method: reqwest::Method,
    body: Option<Bytes>,
    headers: &HeaderMap,
) -> Result<reqwest::Response, UpstreamError> {
    let first = app
        .upstream
        .send(Outgoing {
            method: method.clone(),
            body: body.clone(),
            headers,
            upstream_session: info.upstream_session_id.as_deref(),
        })
        .await?;
    let forgotten = first.status() == reqwest::StatusCode::NOT_FOUND
        || (first.status() == reqwest::StatusCode::BAD_REQUEST
            && info.upstream_session_id.is_none());
    if !forgotten {
        return Ok(first);
    }
    let Some(fresh) = reinit(app, sid, info.upstream_session_id.as_deref(), headers).await else {
        return Ok(first);
    };
    app.upstream
        .send(Outgoing {
            method,
            body,
            headers,
            upstream_session: fresh.as_deref(),
        })
        .await
}

/// Opens a new upstream session behind `sid` with the client's own `initialize` request.
/// Returns the new upstream session id, or None (logged) if that failed.
async fn reinit(
    app: &AppState,
    sid: &SessionId,
    failed: Option<&str>,
    headers: &HeaderMap,
) -> Option<Option<String>> {
    let _one_at_a_time = app.reinit.lock().await;
    let row = match airlock_shared::session::get_live(&app.pool, sid).await {
        Ok(Some(row)) => row,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "cannot read session for re-initialise");
            return None;
        }
    };
    // Another request (or pod) already re-initialised it.
    if row.upstream_session_id.as_deref() != failed && row.upstream_session_id.is_some() {
        app.sessions
            .remember_upstream(sid, row.upstream_session_id.as_deref());
        return Some(row.upstream_session_id);
    }
    let init = row.init_request?;
    let no_headers = HeaderMap::new();
    let resp = app
        .upstream
        .send(Outgoing {
            method: reqwest::Method::POST,
            body: Some(Bytes::from(init.to_string())),
            headers: &no_headers,
            upstream_session: None,
        })
        .await;
    let resp = match resp {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracing::warn!(session = %sid, status = r.status().as_u16(), "re-initialise refused upstream");
            return None;
        }
        Err(e) => {
            tracing::warn!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "re-initialise failed");
            return None;
        }
    };
    let fresh = resp
        .headers()
        .get(SESSION_HEADER.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Err(e) = resp.bytes().await {
        tracing::warn!(session = %sid, error = %e, "re-initialise answer broke off");
        return None;
    }
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    if let Err(e) = app
        .upstream
        .send(Outgoing {
            method: reqwest::Method::POST,
            body: Some(Bytes::from(initialized.to_string())),
            headers,
            upstream_session: fresh.as_deref(),
        })
        .await
    {
        tracing::warn!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "initialized notification failed");
        return None;
    }
    if let Err(e) = app.sessions.set_upstream(sid, fresh.as_deref()).await {
        tracing::error!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "cannot record the new upstream session");
        return None;
    }
    tracing::info!(session = %sid, "upstream session re-initialised");
    Some(fresh)
}

async fn forward(
    app: &AppState,
    sid: &SessionId,
    info: &SessionInfo,
    headers: &HeaderMap,
    body: Bytes,
    request_id: Option<Value>,
) -> Result<Response, RequestError> {
    let sent = send_in_session(app, sid, info, reqwest::Method::POST, Some(body), headers).await;
    let delivered = match sent {
        Ok(resp) => transport::deliver(app, resp, headers, request_id.clone(), ()).await,
        Err(e) => Err(e),
    };
    match (delivered, request_id) {
        (Ok(resp), _) => Ok(resp),
        // A request still gets a JSON-RPC answer it can match to its id.
        (Err(e), Some(id)) => {
            tracing::warn!(error = %airlock_shared::telemetry::chain(&e), "upstream failed");
            Ok(Json(jsonrpc_error(
                &id,
                -32603,
                "upstream error",
                json!({ "why": e.to_string() }),
            ))
            .into_response())
        }
        (Err(e), None) => Err(e.into()),
    }
}

/// `GET /mcp`: the standalone server-to-client stream.
pub async fn get(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Response {
    let res = async {
        let (sid, info) = owned_session(&app, &headers, &principal).await?;
        let resp = send_in_session(&app, &sid, &info, reqwest::Method::GET, None, &headers).await?;
        Ok::<_, RequestError>(relay(
            resp,
            Relay {
                client_session: None,
                keep: (),
                answers: None,
                keepalive: Some(app.keepalive),
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
        let (sid, info) = owned_session(&app, &headers, &principal).await?;
        let resp = app
            .upstream
            .send(Outgoing {
                method: reqwest::Method::DELETE,
                body: None,
                headers: &headers,
                upstream_session: info.upstream_session_id.as_deref(),
            })
            .await;
        app.sessions.delete(&sid).await?;
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

/// A `tools/call`: held calls answer over SSE (with keepalives) when the client accepts it.
#[allow(clippy::too_many_arguments)]
async fn tools_call_entry(
    app: AppState,
    principal: Principal,
    sid: SessionId,
    info: Arc<SessionInfo>,
    headers: HeaderMap,
    body: Bytes,
    id: Value,
    params: Value,
) -> Response {
    let tool = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let verdict = app.policy.evaluate(tool, &args);
    if verdict.action != Action::Approve || !transport::accepts_sse(&headers) {
        return tools_call(&app, &principal, &sid, &info, &headers, body, id, &params).await;
    }
    let waiting_for = transport::waiting_for(&verdict.approvers);
    let token = params.pointer("/_meta/progressToken").cloned();
    let keepalive = app.keepalive;
    let fut =
        async move { tools_call(&app, &principal, &sid, &info, &headers, body, id, &params).await };
    transport::held_stream(fut, keepalive, token, waiting_for)
}

/// What the audit row of one call says.
#[derive(Default)]
struct CallRecord {
    rule: Option<String>,
    decision: &'static str,
    ticket: Option<TicketId>,
    upstream_status: Option<u16>,
}

/// The audit row of one call, written exactly once: when the call ends, or when its future is
/// dropped because the client went away mid-call (a held call's ticket is cancelled then too).
struct AuditTrail<'a> {
    app: &'a AppState,
    principal: &'a Principal,
    session: &'a SessionId,
    tool: String,
    args: Value,
    started: Instant,
    rec: CallRecord,
    written: bool,
}

impl AuditTrail<'_> {
    fn write(&mut self, outcome: &'static str, decided_by: Option<String>) {
        self.written = true;
        self.app
            .metrics
            .tool_calls
            .with_label_values(&[outcome])
            .inc();
        self.app.audit.record(AuditRecord {
            at: chrono::Utc::now(),
            principal: self.principal.0.clone(),
            session_id: Some(self.session.0.clone()),
            tool: std::mem::take(&mut self.tool),
            arguments: Some(std::mem::take(&mut self.args)),
            rule: self.rec.rule.take(),
            decision: self.rec.decision.to_owned(),
            outcome: outcome.to_owned(),
            ticket_id: self.rec.ticket.map(|t| t.0),
            decided_by,
            upstream_status: self.rec.upstream_status.map(i32::from),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        });
    }
}

impl Drop for AuditTrail<'_> {
    fn drop(&mut self) {
        if !self.written {
            tracing::info!(session = %self.session, tool = %self.tool, "client went away mid-call");
            self.write("client_gone", None);
        }
    }
}

/// One `tools/call` through policy, answered as its own response (also for batch members).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn tools_call(
    app: &AppState,
    principal: &Principal,
    sid: &SessionId,
    info: &SessionInfo,
    headers: &HeaderMap,
    body: Bytes,
    id: Value,
    params: &Value,
) -> Response {
    let tool = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let span = tracing::info_span!("tools_call", principal = %principal, session = %sid, tool = %tool, ticket = tracing::field::Empty);
    let mut trail = AuditTrail {
        app,
        principal,
        session: sid,
        tool,
        args,
        started: Instant::now(),
        rec: CallRecord {
            decision: "none",
            ..CallRecord::default()
        },
        written: false,
    };
    let result = call(
        app,
        principal,
        sid,
        info,
        headers,
        body,
        &id,
        &trail.tool,
        &trail.args,
        &mut trail.rec,
    )
    .instrument(span.clone())
    .await;
    let (outcome, decided_by, response) = match result {
        Ok(resp) => {
            let outcome = if trail.rec.ticket.is_some() {
                "approved"
            } else {
                "forwarded"
            };
            (outcome, None, resp)
        }
        Err(e) => {
            let (code, message, data) = e.to_jsonrpc();
            let _enter = span.enter();
            if e.is_fault() {
                tracing::error!(error = %airlock_shared::telemetry::chain(&e), "tool call failed");
            } else {
                tracing::info!(outcome = e.outcome(), "tool call refused");
            }
            trail.rec.ticket = trail.rec.ticket.or(e.ticket());
            let decided_by = data
                .get("decided_by")
                .and_then(Value::as_str)
                .map(str::to_owned);
            (
                e.outcome(),
                decided_by,
                Json(jsonrpc_error(&id, code, message, data)).into_response(),
            )
        }
    };
    trail.write(outcome, decided_by);
    response
}

#[allow(clippy::too_many_arguments)]
async fn call(
    app: &AppState,
    principal: &Principal,
    sid: &SessionId,
    info: &SessionInfo,
    headers: &HeaderMap,
    body: Bytes,
    id: &Value,
    tool: &str,
    args: &Value,
    rec: &mut CallRecord,
) -> Result<Response, CallError> {
    if tool.is_empty() {
        return Err(CallError::InvalidParams(
            "params.name must be a tool name".into(),
        ));
    }
    if !args.is_object() {
        return Err(CallError::InvalidParams(
            "params.arguments must be an object".into(),
        ));
    }
    let verdict = app.policy.evaluate(tool, args).clone();
    rec.rule = Some(verdict.rule.to_string());
    rec.decision = verdict.action.as_str();
    // Counted before the rules take effect; the lock is taken in the same round trip.
    let wants_lock = !verdict.read_only && verdict.action != Action::Deny;
    let lock = app
        .locks
        .admit(sid, app.policy.max_tool_calls_per_session, wants_lock)
        .await
        .map_err(|e| match e {
            LockError::BudgetExceeded(limit) => {
                rec.decision = "budget";
                CallError::BudgetExceeded { limit }
            }
            LockError::Busy => CallError::SessionBusy,
            LockError::Redis(e) => CallError::Redis(e),
        })?;
    if verdict.action == Action::Deny {
        return Err(CallError::DeniedByPolicy {
            rule: verdict.rule.to_string(),
            reason: verdict.reason.as_deref().map(str::to_owned),
        });
    }
    if verdict.action == Action::Approve {
        let new = NewTicket {
            id: TicketId::new(),
            principal: principal.0.clone(),
            session_id: sid.0.clone(),
            tool: tool.to_owned(),
            arguments: args.clone(),
            rule: verdict.rule.to_string(),
            reason: verdict.reason.as_deref().map(str::to_owned),
            approvers: verdict.approvers.to_vec(),
            slack_channel: verdict.channel.as_deref().map(str::to_owned),
            request_hash: canonical::request_hash(tool, args),
            timeout: verdict.timeout.unwrap_or(app.approval_timeout),
        };
        let cancel = CancellationToken::new();
        let _held = app.track_held(sid, id, cancel.clone());
        let cleared = app.approvals.hold(new, cancel, &mut rec.ticket).await?;
        rec.ticket = Some(cleared.ticket.id);
        tracing::Span::current().record("ticket", tracing::field::display(cleared.ticket.id));
    }
    let resp = send_in_session(app, sid, info, reqwest::Method::POST, Some(body), headers).await?;
    rec.upstream_status = Some(resp.status().as_u16());
    if !resp.status().is_success() {
        return Err(UpstreamError::Status(resp.status().as_u16()).into());
    }
    Ok(transport::deliver(app, resp, headers, Some(id.clone()), lock).await?)
}
