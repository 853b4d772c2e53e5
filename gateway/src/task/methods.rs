//! `tasks/get`, `tasks/result` (2025-11-25), `tasks/cancel` and `tasks/update` (2026-07-28) on
//! the gateway's own tasks, answered from Postgres by whichever replica the request reaches.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::TicketStatus;
use airlock_shared::ticket::task::{self, TaskRow};
use airlock_shared::ticket::{self as tickets, Ticket};
use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Tasks;
use super::run::spawn_take_over;
use super::wire::{self, Era, State};
use crate::caller::Caller;
use crate::held_stream::held_stream;
use crate::transport::accepts_sse;

/// Polls the status.
pub const GET: &str = "tasks/get";
/// Blocks until the task ends and answers what the call would have (2025-11-25).
pub const RESULT: &str = "tasks/result";
/// Cancels the task (and its pending ticket).
pub const CANCEL: &str = "tasks/cancel";
/// Answers a task's input requests (2026-07-28); the gateway's tasks never ask for any.
pub const UPDATE: &str = "tasks/update";

/// Whether `method` is one of the task methods.
pub fn is_task_method(method: &str) -> bool {
    matches!(method, GET | RESULT | CANCEL | UPDATE)
}

/// Why a task request was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task, or another principal's (which must look the same).
    #[error("Failed to retrieve task: Task not found")]
    NotFound,
    /// A 2026-07-28 request without the extension in its per-request capabilities.
    #[error("Missing required client capability")]
    MissingCapability,
    /// A 2025-11-25 cancel of an ended task.
    #[error("Cannot cancel task: already in terminal status '{0}'")]
    Terminal(&'static str),
    /// `tasks/result` is not part of the 2026-07-28 extension.
    #[error("Method not found")]
    NoSuchMethod,
    #[error("internal error")]
    Store(#[from] sqlx::Error),
}

impl TaskError {
    pub(super) fn to_jsonrpc(&self, id: &Value) -> Value {
        let (code, data) = match self {
            Self::NotFound | Self::Terminal(_) => (-32602, Value::Null),
            Self::MissingCapability => (
                -32021,
                json!({ "requiredCapabilities": { "extensions": { wire::EXTENSION: {} } } }),
            ),
            Self::NoSuchMethod => (-32601, Value::Null),
            Self::Store(_) => (-32603, Value::Null),
        };
        let mut error = json!({ "code": code, "message": self.to_string() });
        if !data.is_null() {
            error["data"] = data;
        }
        json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }
}

/// How often a blocked `tasks/result` looks at the task again.
const RESULT_RECHECK: Duration = Duration::from_millis(250);

impl Tasks {
    /// Answers a task method on one of the gateway's own tasks.
    pub async fn answer(
        self: &Arc<Self>,
        caller: &Caller,
        era: Era,
        method: &str,
        id: &Value,
        params: &Value,
    ) -> Response {
        let task_id = wire::own_task_id(params).unwrap_or_default().to_owned();
        if era == Era::Extension && !wire::declares_extension(params) {
            return Json(TaskError::MissingCapability.to_jsonrpc(id)).into_response();
        }
        if method == RESULT && era == Era::Classic {
            return self.result(caller, id.clone(), task_id).await;
        }
        let answered = match method {
            GET => self.get(caller, era, &task_id).await,
            CANCEL => self.cancel(caller, era, &task_id).await,
            UPDATE => self
                .load(caller, &task_id)
                .await
                .map(|_| json!({ "resultType": "complete" })),
            _ => Err(TaskError::NoSuchMethod),
        };
        let body = match answered {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(e) => {
                if let TaskError::Store(s) = &e {
                    tracing::error!(task = %task_id, error = %s, "task request failed");
                }
                e.to_jsonrpc(id)
            }
        };
        Json(body).into_response()
    }

    /// The task and its ticket, if the task is the caller's; an approved one nobody claimed
    /// is taken over here (its creator is gone, or slower than this poll).
    pub(super) async fn load(
        self: &Arc<Self>,
        caller: &Caller,
        task_id: &str,
    ) -> Result<(TaskRow, Ticket, State), TaskError> {
        let row = task::get_for(&self.pool, task_id, &caller.principal().0)
            .await?
            .ok_or(TaskError::NotFound)?;
        let ticket = tickets::get(&self.pool, row.ticket_id)
            .await?
            .ok_or(TaskError::NotFound)?;
        if ticket.status == TicketStatus::Approved && row.outcome.is_none() {
            spawn_take_over(self, ticket.clone());
        }
        let state = wire::state(&row, &ticket, chrono::Utc::now());
        Ok((row, ticket, state))
    }

    async fn get(
        self: &Arc<Self>,
        caller: &Caller,
        era: Era,
        task_id: &str,
    ) -> Result<Value, TaskError> {
        let (row, ticket, state) = self.load(caller, task_id).await?;
        let object = wire::task_object(&row, &ticket, &state, self.shown(), era);
        Ok(wire::get_result(object, era))
    }

    async fn cancel(
        self: &Arc<Self>,
        caller: &Caller,
        era: Era,
        task_id: &str,
    ) -> Result<Value, TaskError> {
        let (row, ticket, state) = self.load(caller, task_id).await?;
        if state.is_terminal() {
            return match era {
                Era::Classic => Err(TaskError::Terminal(state.status(era))),
                Era::Extension => Ok(json!({ "resultType": "complete" })),
            };
        }
        // The ticket's cancel path: the Slack message says so, and nobody can approve it now.
        self.holds.cancel_pending(ticket.id).await?;
        // Approved but not run yet, or running: the task is cancelled all the same, and a
        // call that completes after this never changes that.
        if let Some(ended) = task::end(&self.pool, task_id, "cancelled", None).await? {
            self.count_ended(&ended, "cancelled");
        }
        tracing::info!(task = %task_id, ticket = %ticket.id, "task cancelled by its client");
        let (row, ticket, state) = match self.load(caller, task_id).await {
            Ok(again) => again,
            Err(_) => (row, ticket, state),
        };
        Ok(match era {
            Era::Classic => wire::task_object(&row, &ticket, &state, self.shown(), era),
            Era::Extension => json!({ "resultType": "complete" }),
        })
    }

    /// `tasks/result` (2025-11-25): blocks until the task ends, then answers exactly what the
    /// call would have. Over SSE (when the client takes it) with keepalives while it waits.
    async fn result(self: &Arc<Self>, caller: &Caller, id: Value, task_id: String) -> Response {
        let (me, c) = (self.clone(), caller.clone());
        let fut = async move {
            let body = loop {
                match me.load(&c, &task_id).await {
                    Ok((_, _, s)) if s.is_terminal() => {
                        break wire::final_answer(&id, &s, &task_id);
                    }
                    Ok(_) => {}
                    Err(e) => break e.to_jsonrpc(&id),
                }
                let wait = me.settings.poll_interval.min(RESULT_RECHECK);
                tokio::time::sleep(wait).await;
            };
            Json(body).into_response()
        };
        match accepts_sse(&caller.headers) {
            true => held_stream(fut, self.keepalive, None, String::new()),
            false => fut.await,
        }
    }
}
