//! Tickets served as MCP tasks: the task row beside its ticket, and every query on it.
//!
//! The ticket stays the truth for the decision; a task row adds what any gateway instance needs
//! to run the approved call, and the upstream's answer once it ran. The answer is written once
//! (`outcome IS NULL` guards every write), so every later poll on every replica reads the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::TicketStatus;
use crate::ids::TicketId;

/// What the gateway knows when it makes a task of a held call.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub task_id: String,
    pub ticket_id: TicketId,
    pub principal: String,
    /// `classic` (2025-11-25) or `extension` (2026-07-28).
    pub era: String,
    /// The gateway session of the call; `None` without one.
    pub session_id: Option<String>,
    /// The JSON-RPC request to send upstream once approved.
    pub request: serde_json::Value,
    /// The headers that go upstream with it, as a JSON object of strings.
    pub headers: serde_json::Value,
    pub poll_interval_ms: i32,
}

/// One row of `ticket_tasks`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct TaskRow {
    pub task_id: String,
    #[sqlx(try_from = "Uuid")]
    pub ticket_id: TicketId,
    pub principal: String,
    pub era: String,
    pub session_id: Option<String>,
    pub request: serde_json::Value,
    pub headers: serde_json::Value,
    pub poll_interval_ms: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `result`, `error` or `cancelled` once set (only once); `None` while it runs or waits.
    pub outcome: Option<String>,
    /// The upstream's `result`, or the JSON-RPC `error` object, with `outcome`.
    pub response: Option<serde_json::Value>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// A task that reached a terminal status just now (reported once, to the writer that ended it).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Ended {
    pub task_id: String,
    pub outcome: Option<String>,
    #[sqlx(try_from = "String")]
    pub ticket_status: TicketStatus,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// Inserts the task of a ticket; a ticket that already has one (a retry that reattached)
/// keeps it, and that row is returned.
pub async fn create<'e>(db: impl PgExecutor<'e>, new: &NewTask) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO ticket_tasks (task_id, ticket_id, principal, era, session_id, request, \
             headers, poll_interval_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (ticket_id) DO UPDATE SET updated_at = ticket_tasks.updated_at \
         RETURNING *",
    )
    .bind(&new.task_id)
    .bind(new.ticket_id.0)
    .bind(&new.principal)
    .bind(&new.era)
    .bind(&new.session_id)
    .bind(&new.request)
    .bind(&new.headers)
    .bind(new.poll_interval_ms)
    .fetch_one(db)
    .await
}

/// The task `task_id` if it belongs to `principal` (another principal's task is not found).
pub async fn get_for<'e>(
    db: impl PgExecutor<'e>,
    task_id: &str,
    principal: &str,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM ticket_tasks WHERE task_id = $1 AND principal = $2")
        .bind(task_id)
        .bind(principal)
        .fetch_optional(db)
        .await
}

/// The task of a ticket, if it has one.
pub async fn of_ticket<'e>(
    db: impl PgExecutor<'e>,
    ticket: TicketId,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM ticket_tasks WHERE ticket_id = $1")
        .bind(ticket.0)
        .fetch_optional(db)
        .await
}

/// Stores the task's outcome (`result`, `error` or `cancelled`) unless it has one already;
/// `Some` for the writer that ended the task.
pub async fn end<'e>(
    db: impl PgExecutor<'e>,
    task_id: &str,
    outcome: &str,
    response: Option<&serde_json::Value>,
) -> Result<Option<Ended>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE ticket_tasks t SET outcome = $2, response = $3, updated_at = now(), \
             ended_at = coalesce(t.ended_at, now()) \
         FROM tickets k WHERE t.task_id = $1 AND k.id = t.ticket_id AND t.outcome IS NULL \
         AND t.ended_at IS NULL \
         RETURNING t.task_id, t.outcome, k.status AS ticket_status, t.created_at, k.decided_at",
    )
    .bind(task_id)
    .bind(outcome)
    .bind(response)
    .fetch_optional(db)
    .await
}

/// Marks the end of tasks whose ticket was denied, expired or cancelled (nothing to store:
/// the ticket says why): `only` that ticket's task, or all; each is reported once.
pub async fn end_settled<'e>(
    db: impl PgExecutor<'e>,
    only: Option<TicketId>,
) -> Result<Vec<Ended>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE ticket_tasks t SET ended_at = now(), updated_at = now() FROM tickets k \
         WHERE k.id = t.ticket_id AND t.ended_at IS NULL \
         AND k.status IN ('denied', 'expired', 'cancelled') \
         AND ($1::uuid IS NULL OR t.ticket_id = $1) \
         RETURNING t.task_id, t.outcome, k.status AS ticket_status, t.created_at, k.decided_at",
    )
    .bind(only.map(|t| t.0))
    .fetch_all(db)
    .await
}

/// Tasks whose ticket was approved at least `older_than` ago and never claimed: their creator
/// is gone (or slow), so another instance may claim and run them.
pub async fn approved_unclaimed<'e>(
    db: impl PgExecutor<'e>,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.* FROM ticket_tasks t JOIN tickets k ON k.id = t.ticket_id \
         WHERE t.ended_at IS NULL AND t.outcome IS NULL AND k.status = 'approved' \
         AND k.decided_at < now() - make_interval(secs => $1) ORDER BY k.decided_at LIMIT $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Fails tasks whose ticket was claimed more than `older_than` ago with no answer stored: the
/// instance running the call died mid-call. The call may have run; it is never run again.
pub async fn fail_lost<'e>(
    db: impl PgExecutor<'e>,
    older_than: Duration,
    error: &serde_json::Value,
) -> Result<Vec<Ended>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE ticket_tasks t SET outcome = 'error', response = $2, updated_at = now(), \
             ended_at = now() FROM tickets k \
         WHERE k.id = t.ticket_id AND t.outcome IS NULL AND k.status = 'executed' \
         AND k.executed_at < now() - make_interval(secs => $1) \
         RETURNING t.task_id, t.outcome, k.status AS ticket_status, t.created_at, k.decided_at",
    )
    .bind(older_than.as_secs_f64())
    .bind(error)
    .fetch_all(db)
    .await
}

/// Deletes tasks that ended more than `retention` ago (their results go with them).
pub async fn purge<'e>(db: impl PgExecutor<'e>, retention: Duration) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM ticket_tasks WHERE ended_at IS NOT NULL \
         AND ended_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(db)
    .await
    .map(|r| r.rows_affected())
}

/// A page of `principal`'s tasks in task id order, after `after` (exclusive) when given.
pub async fn list_for<'e>(
    db: impl PgExecutor<'e>,
    principal: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM ticket_tasks WHERE principal = $1 AND ($2::text IS NULL OR task_id > $2) \
         ORDER BY task_id LIMIT $3",
    )
    .bind(principal)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
