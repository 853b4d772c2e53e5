//! The audit trail: one row per `tools/call`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What happened to one tool call.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub principal: String,
    /// The issuer of the caller's access token; `None` for a static-token agent.
    pub principal_issuer: Option<String>,
    pub session_id: Option<String>,
    pub tool: String,
    pub arguments: Option<serde_json::Value>,
    pub rule: Option<String>,
    /// What policy said: allow, deny, approve, budget.
    pub decision: String,
    /// What came of it: forwarded, denied, approved, approval_denied, timeout, cancelled, …
    pub outcome: String,
    pub ticket_id: Option<Uuid>,
    /// The ticket whose standing grant let this call pass without a ticket of its own.
    pub grant_ticket_id: Option<Uuid>,
    pub decided_by: Option<String>,
    pub upstream_status: Option<i32>,
    pub latency_ms: f64,
    /// The revision of the policy that gave the verdict (none for calls refused before policy).
    pub policy_revision: Option<String>,
    /// The call's validated W3C `traceparent` from `_meta`, if it carried one.
    pub traceparent: Option<String>,
    /// The call's W3C `tracestate`, kept only beside a valid `traceparent`.
    pub tracestate: Option<String>,
    /// The task the call was served as (a held call answered at once with a task handle).
    pub task_id: Option<String>,
}

/// Writes a batch of records in one statement.
pub async fn insert_batch(pool: &crate::db::Db, rows: &[AuditRecord]) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO audit_log (at, principal, session_id, tool, arguments, rule, decision, outcome, \
         ticket_id, grant_ticket_id, decided_by, upstream_status, latency_ms, policy_revision, \
         traceparent, tracestate, task_id, principal_issuer) ",
    );
    qb.push_values(rows, |mut b, r| {
        b.push_bind(r.at)
            .push_bind(&r.principal)
            .push_bind(&r.session_id)
            .push_bind(&r.tool)
            .push_bind(&r.arguments)
            .push_bind(&r.rule)
            .push_bind(&r.decision)
            .push_bind(&r.outcome)
            .push_bind(r.ticket_id)
            .push_bind(r.grant_ticket_id)
            .push_bind(&r.decided_by)
            .push_bind(r.upstream_status)
            .push_bind(r.latency_ms)
            .push_bind(&r.policy_revision)
            .push_bind(&r.traceparent)
            .push_bind(&r.tracestate)
            .push_bind(&r.task_id)
            .push_bind(&r.principal_issuer);
    });
    qb.build().execute(pool).await.map(|r| r.rows_affected())
}

/// Reads the audit rows of one session, oldest first (for tests and operators).
pub async fn for_session(
    pool: &crate::db::Db,
    session_id: &str,
) -> Result<Vec<(String, String, String, Option<Uuid>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tool, decision, outcome, ticket_id FROM audit_log WHERE session_id = $1 ORDER BY id",
    )
    .bind(session_id)
    .fetch_all(pool)
    .await
}

/// Each audit row of one session as (tool, outcome, ticket, grant ticket), oldest first.
pub async fn grants_for_session(
    pool: &crate::db::Db,
    session_id: &str,
) -> Result<Vec<(String, String, Option<Uuid>, Option<Uuid>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tool, outcome, ticket_id, grant_ticket_id FROM audit_log \
         WHERE session_id = $1 ORDER BY id",
    )
    .bind(session_id)
    .fetch_all(pool)
    .await
}

/// The principal of each audit row of one session, oldest first.
pub async fn principals_for_session(
    pool: &crate::db::Db,
    session_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT principal FROM audit_log WHERE session_id = $1 ORDER BY id")
        .bind(session_id)
        .fetch_all(pool)
        .await
}

/// The principal and its issuer of each audit row of one session, oldest first.
pub async fn identities_for_session(
    pool: &crate::db::Db,
    session_id: &str,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT principal, principal_issuer FROM audit_log WHERE session_id = $1 ORDER BY id",
    )
    .bind(session_id)
    .fetch_all(pool)
    .await
}

/// The tool and policy revision of each audit row of one session, oldest first.
pub async fn revisions_for_session(
    pool: &crate::db::Db,
    session_id: &str,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT tool, policy_revision FROM audit_log WHERE session_id = $1 ORDER BY id")
        .bind(session_id)
        .fetch_all(pool)
        .await
}

/// The outcome and task of each audit row of one principal that names a task, oldest first.
pub async fn tasks_for_principal(
    pool: &crate::db::Db,
    principal: &str,
) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outcome, task_id FROM audit_log WHERE principal = $1 AND task_id IS NOT NULL \
         ORDER BY id",
    )
    .bind(principal)
    .fetch_all(pool)
    .await
}
