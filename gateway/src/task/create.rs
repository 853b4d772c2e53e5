//! Making a task of a held call: the ticket and the task row first (so a poll on any replica
//! finds it), then the answer at once, and a wait for the decision on this instance.

use std::sync::Arc;

use airlock_shared::TicketId;
use airlock_shared::ticket::NewTicket;
use airlock_shared::ticket::task::{self, NewTask};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Tasks;
use super::watch::Pending;
use super::wire::{self, Era};
use crate::caller::Caller;
use crate::error::CallError;
use crate::upstream::{METHOD_HEADER, NAME_HEADER, PARAM_PREFIX, PROTOCOL_HEADER};

/// A held call to serve as a task.
#[derive(Clone, Copy)]
pub struct TaskCall<'a> {
    pub era: Era,
    pub caller: &'a Caller,
    /// The request as the client sent it.
    pub body: &'a Bytes,
}

/// A task made (or found again, for a retry of the same call).
pub struct Created {
    pub ticket: TicketId,
    pub task_id: String,
    /// The `CreateTaskResult` to answer the `tools/call` with.
    pub result: Value,
}

/// The request the approved call sends upstream: the client's, without `params.task` (the
/// gateway is the one serving it as a task) and with an id of the gateway's own.
fn upstream_request(body: &Bytes, task_id: &str) -> Result<Value, CallError> {
    let mut req: Value = serde_json::from_slice(body)
        .map_err(|_| CallError::InvalidParams("the request is not JSON".to_owned()))?;
    if let Some(p) = req.get_mut("params").and_then(Value::as_object_mut) {
        p.remove("task");
    }
    req["id"] = json!(task_id);
    Ok(req)
}

/// The headers that go upstream with the call (the rest are the gateway's to set).
fn upstream_headers(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, v) in headers {
        let keep = *name == PROTOCOL_HEADER
            || *name == METHOD_HEADER
            || *name == NAME_HEADER
            || name.as_str().starts_with(PARAM_PREFIX);
        if keep && let Ok(v) = v.to_str() {
            out.insert(name.as_str().to_owned(), json!(v));
        }
    }
    Value::Object(out)
}

impl Tasks {
    /// Opens the ticket of a held call and its task, and answers with the task at once. The
    /// approval request goes out as for any hold; this instance then waits for the decision.
    pub async fn create(
        self: &Arc<Self>,
        new: NewTicket,
        call: TaskCall<'_>,
    ) -> Result<Created, CallError> {
        let task_id = wire::new_id();
        let request = upstream_request(call.body, &task_id)?;
        let (ticket, _) = self.holds.open(&new).await?;
        let row = self
            .row_for(&ticket, call, task_id.clone(), request)
            .await?;
        if row.principal != call.caller.principal().0 {
            // Same session and call, other principal: cannot happen (sessions are owned).
            return Err(sqlx::Error::RowNotFound.into());
        }
        if row.task_id == task_id {
            self.metrics.tasks.created.inc();
            tracing::info!(ticket = %ticket.id, task = %task_id, "held call served as a task");
            let _ = self.watch.send(Pending {
                ticket: ticket.id,
                rule: new.rule.clone(),
                fingerprint: new.fingerprint.clone(),
                expires_at: ticket.expires_at,
            });
        }
        let state = wire::state(&row, &ticket, chrono::Utc::now());
        let object = wire::task_object(&row, &ticket, &state, self.shown(), call.era);
        Ok(Created {
            ticket: ticket.id,
            task_id: row.task_id,
            result: wire::create_result(object, call.era),
        })
    }

    /// The task row of a ticket just opened; if it cannot be written, the ticket is cancelled
    /// (nobody would ever learn its outcome) and the call fails.
    async fn row_for(
        &self,
        ticket: &airlock_shared::ticket::Ticket,
        call: TaskCall<'_>,
        task_id: String,
        request: Value,
    ) -> Result<task::TaskRow, CallError> {
        let new_task = NewTask {
            task_id,
            ticket_id: ticket.id,
            principal: call.caller.principal().0.clone(),
            era: call.era.as_str().to_owned(),
            session_id: call
                .caller
                .session
                .as_ref()
                .map(|_| call.caller.sid.0.clone()),
            request,
            headers: upstream_headers(&call.caller.headers),
            poll_interval_ms: self.poll_interval_ms(),
        };
        match task::create(&self.pool, &new_task).await {
            Ok(row) => Ok(row),
            Err(e) => {
                if ticket.status.is_pending() {
                    let _ = self.holds.cancel_pending(ticket.id).await;
                }
                Err(e.into())
            }
        }
    }
}
