//! Running an approved task's call, once: the claimed ticket's stored request goes upstream in
//! the caller's name (its session, or none), and the answer is stored on the task, bounded in
//! size, for every later poll on every replica.

use std::sync::Arc;

use airlock_shared::audit::AuditRecord;
use airlock_shared::ticket::Ticket;
use airlock_shared::ticket::task::{self, TaskRow};
use airlock_shared::trace_context;
use airlock_shared::{Principal, SessionId, TicketId};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::Instrument;

use super::Tasks;
use super::wire::{Era, State};
use crate::answer::Whole;
use crate::caller::Caller;
use crate::error::{UpstreamError, upstream_error};
use crate::identity::Identity;

/// Why a task's call got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the session the call was made in has ended")]
    SessionGone,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("the upstream gave no answer to the call")]
    NoAnswer,
    #[error("the result is {size} bytes, over the limit of {limit} (TASK_MAX_RESULT_BYTES)")]
    TooLarge { size: usize, limit: usize },
    #[error("storage error")]
    Store(#[from] sqlx::Error),
}

impl RunError {
    /// The JSON-RPC error object the task fails with, and the audit outcome.
    fn wire(&self) -> (Value, &'static str) {
        let why = self.to_string();
        match self {
            Self::SessionGone | Self::Upstream(_) | Self::NoAnswer => (
                upstream_error(&Value::Null, &why)["error"].clone(),
                "upstream_error",
            ),
            Self::TooLarge { size, limit } => (
                json!({ "code": -32603, "message": "result too large",
                        "data": { "why": why, "size": size, "limit": limit } }),
                "result_too_large",
            ),
            Self::Store(_) => (
                json!({ "code": -32603, "message": "internal error" }),
                "error",
            ),
        }
    }
}

/// The error a task gets when the instance running its call died before storing the answer.
pub fn lost_error() -> Value {
    upstream_error(
        &Value::Null,
        "the gateway instance running the approved call stopped before its answer was stored; \
         the call may have run, and is not run again",
    )["error"]
        .clone()
}

fn headers_of(stored: &Value) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in stored.as_object().into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            h.insert(name, value);
        }
    }
    h
}

impl Tasks {
    /// The caller the task's call is sent in the name of, rebuilt from the row.
    async fn caller_of(&self, row: &TaskRow) -> Result<Caller, RunError> {
        let principal = Principal(row.principal.clone());
        let headers = headers_of(&row.headers);
        let Some(sid) = &row.session_id else {
            return Ok(Caller::stateless(Identity::agent(principal), headers));
        };
        let sid = SessionId(sid.clone());
        let info = self
            .link
            .sessions
            .owned_by(&sid, &principal)
            .await?
            .ok_or(RunError::SessionGone)?;
        Ok(Caller {
            // The verdict was given when the call came; the run needs only the principal.
            identity: Identity::agent(principal),
            sid,
            session: Some(info),
            headers,
        })
    }

    /// Sends the stored request upstream; the response's `result` or `error`.
    async fn call_upstream(&self, row: &TaskRow) -> Result<(Value, u16), RunError> {
        let caller = self.caller_of(row).await?;
        let id = row.request.get("id").cloned().unwrap_or(Value::Null);
        let body = Bytes::from(row.request.to_string());
        let upstream = tracing::info_span!("upstream_call", held = true, task = true);
        let resp = caller
            .send(&self.link, body, &caller.headers)
            .instrument(upstream)
            .await?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(status).into());
        }
        let response = Whole::read(resp, &id)
            .await?
            .response
            .ok_or(RunError::NoAnswer)?;
        Ok((response, status))
    }

    /// Runs the claimed ticket's call and stores its answer on the task (first writer wins; a
    /// task cancelled in the meantime stays cancelled and its call does not run). Its span joins
    /// the trace of the call that made the task (the ticket keeps that call's context), though
    /// it may run on another replica, long after that call was answered.
    pub(super) async fn execute(&self, ticket: &Ticket) {
        let span = tracing::info_span!("task_run", ticket = %ticket.id);
        if let Err(e) = trace_context::join_ticket(&self.pool, ticket.id, &span).await {
            // The run goes on in a trace of its own.
            tracing::warn!(ticket = %ticket.id, error = %e, "cannot read the ticket's trace context");
        }
        Box::pin(self.run(ticket)).instrument(span).await
    }

    async fn run(&self, ticket: &Ticket) {
        let row = match task::of_ticket(&self.pool, ticket.id).await {
            Ok(Some(r)) if r.outcome.is_none() => r,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(ticket = %ticket.id, error = %e, "cannot read the task of a claimed ticket");
                return;
            }
        };
        let started = Instant::now();
        let answered = self.call_upstream(&row).await;
        let status = answered.as_ref().ok().map(|(_, s)| *s);
        let limit = self.settings.max_result_bytes;
        let stored = answered.and_then(|(response, _)| {
            let size = response.to_string().len();
            match size > limit {
                true => Err(RunError::TooLarge { size, limit }),
                false => Ok(response),
            }
        });
        let (outcome, response, audit) = match stored {
            Ok(r) => match (r.get("result"), r.get("error")) {
                (Some(res), _) => ("result", res.clone(), "approved"),
                (None, Some(err)) => ("error", err.clone(), "approved"),
                (None, None) => {
                    let (e, a) = RunError::NoAnswer.wire();
                    ("error", e, a)
                }
            },
            Err(e) => {
                tracing::warn!(task = %row.task_id, error = %e, "task's call failed");
                let (e, a) = e.wire();
                ("error", e, a)
            }
        };
        match task::end(&self.pool, &row.task_id, outcome, Some(&response)).await {
            Ok(Some(ended)) => {
                let shown = match outcome {
                    "result" => State::Completed(response.clone()),
                    _ => State::Failed {
                        error: response.clone(),
                        message: String::new(),
                    },
                };
                self.count_ended(&ended, shown.status(Era::of_row(&row.era)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(task = %row.task_id, error = %e, "cannot store the task's answer")
            }
        }
        self.audit_run(&row, ticket, audit, status, started);
    }

    /// Claims an approved task whose creator did not (gone, or slower than this poll) and runs
    /// it; another instance's claim wins harmlessly.
    pub(super) async fn take_over(&self, ticket: &Ticket) {
        let fp = ticket.fingerprint.clone().unwrap_or_default();
        match self.holds.hub.claim(&self.pool, ticket.id, &fp).await {
            Ok(Some(claimed)) => {
                tracing::info!(ticket = %ticket.id, "approved task taken over by this instance");
                self.execute(&claimed).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(ticket = %ticket.id, error = %e, "cannot claim an approved task")
            }
        }
    }

    /// Ends (and counts) tasks whose ticket was denied, expired or cancelled: `only` that
    /// ticket's task, or all of them (the sweeper).
    pub(super) async fn note_settled(&self, only: Option<TicketId>) {
        match task::end_settled(&self.pool, only).await {
            Ok(ended) => {
                for e in ended {
                    let status = match e.ticket_status {
                        airlock_shared::TicketStatus::Cancelled => "cancelled",
                        _ => "failed",
                    };
                    self.count_ended(&e, status);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot mark ended tasks"),
        }
    }

    fn audit_run(
        &self,
        row: &TaskRow,
        ticket: &Ticket,
        outcome: &'static str,
        upstream_status: Option<u16>,
        started: Instant,
    ) {
        self.audit.record(AuditRecord {
            at: chrono::Utc::now(),
            principal: row.principal.clone(),
            principal_issuer: ticket.principal_issuer.clone(),
            session_id: row.session_id.clone(),
            tool: ticket.tool.clone(),
            arguments: Some(ticket.arguments.clone()),
            rule: Some(ticket.rule.clone()),
            decision: "approve".to_owned(),
            outcome: outcome.to_owned(),
            ticket_id: Some(ticket.id.0),
            grant_ticket_id: None,
            decided_by: ticket
                .decided_by_name
                .clone()
                .or(ticket.decided_by_id.clone()),
            upstream_status: upstream_status.map(i32::from),
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            policy_revision: ticket.policy_revision.clone(),
            traceparent: None,
            tracestate: None,
            task_id: Some(row.task_id.clone()),
        });
    }
}

/// Spawns a take-over off the request path (a poll answers at once).
pub(super) fn spawn_take_over(tasks: &Arc<Tasks>, ticket: Ticket) {
    let me = tasks.clone();
    tokio::spawn(async move { me.take_over(&ticket).await });
}
