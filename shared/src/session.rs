//! MCP sessions that the gateway minted, and who owns them.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::ids::{Principal, SessionId};

/// One row of `mcp_sessions`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct McpSession {
    pub id: String,
    pub principal: String,
    pub upstream_session_id: Option<String>,
    pub protocol_version: Option<String>,
    pub init_request: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// Records a new session.
pub async fn create<'e>(
    db: impl PgExecutor<'e>,
    id: &SessionId,
    principal: &Principal,
    upstream_session_id: Option<&str>,
    protocol_version: Option<&str>,
    init_request: Option<&serde_json::Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mcp_sessions (id, principal, upstream_session_id, protocol_version, init_request) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id.0)
    .bind(&principal.0)
    .bind(upstream_session_id)
    .bind(protocol_version)
    .bind(init_request)
    .execute(db)
    .await
    .map(|_| ())
}

/// Reads a live (not deleted) session.
pub async fn get_live<'e>(
    db: impl PgExecutor<'e>,
    id: &SessionId,
) -> Result<Option<McpSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, principal, upstream_session_id, protocol_version, init_request, created_at, deleted_at \
         FROM mcp_sessions WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(&id.0)
    .fetch_optional(db)
    .await
}

/// Replaces the upstream's session id (after a re-initialise).
pub async fn set_upstream<'e>(
    db: impl PgExecutor<'e>,
    id: &SessionId,
    upstream_session_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE mcp_sessions SET upstream_session_id = $2 WHERE id = $1")
        .bind(&id.0)
        .bind(upstream_session_id)
        .execute(db)
        .await
        .map(|_| ())
}

/// Ends a session.
pub async fn mark_deleted<'e>(
    db: impl PgExecutor<'e>,
    id: &SessionId,
) -> Result<bool, sqlx::Error> {
    sqlx::query("UPDATE mcp_sessions SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(&id.0)
        .execute(db)
        .await
        .map(|r| r.rows_affected() == 1)
}
