//! Queries only tests use (feature `test-util`): rewriting a row to play an attacker who
//! reached the database, and reads that no service needs.

use serde_json::Value;

use crate::ids::TicketId;

/// Replaces the call a ticket holds (and its fingerprint), as a tampered database would.
pub async fn rewrite_ticket_call(
    pool: &crate::db::Db,
    id: TicketId,
    arguments: &Value,
    fingerprint: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tickets SET arguments = $2, fingerprint = $3 WHERE id = $1")
        .bind(id.0)
        .bind(arguments)
        .bind(fingerprint)
        .execute(pool)
        .await
        .map(|_| ())
}

/// The principal and session of the first audit row for `tool`, if any.
pub async fn first_audit_row_for_tool(
    pool: &crate::db::Db,
    tool: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT principal, session_id FROM audit_log WHERE tool = $1 ORDER BY id LIMIT 1",
    )
    .bind(tool)
    .fetch_optional(pool)
    .await
}

/// How many grants exist, active or not.
pub async fn grant_count(pool: &crate::db::Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM grants")
        .fetch_one(pool)
        .await
}
