//! The single-use claim of an approved ticket by the call it approved.

use sqlx::PgExecutor;
use uuid::Uuid;

use super::Ticket;
use crate::ids::TicketId;

/// Claims an approved ticket for execution of the call whose fingerprint is `fingerprint`
/// (single use). A ticket approved for another call is left as it is: nothing ran.
pub async fn claim_execution<'e>(
    db: impl PgExecutor<'e>,
    id: TicketId,
    fingerprint: &str,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE tickets SET status = 'executed', executed_at = now() \
         WHERE id = $1 AND status = 'approved' \
         AND (fingerprint IS NULL OR fingerprint = $2) RETURNING *",
    )
    .bind(id.0)
    .bind(fingerprint)
    .fetch_optional(db)
    .await
}

/// Claims many approved tickets at once, each for the call with the fingerprint beside it;
/// returns those this call claimed (single use).
pub async fn claim_executions<'e>(
    db: impl PgExecutor<'e>,
    claims: &[(TicketId, String)],
) -> Result<Vec<Ticket>, sqlx::Error> {
    let ids: Vec<Uuid> = claims.iter().map(|(i, _)| i.0).collect();
    let fingerprints: Vec<&str> = claims.iter().map(|(_, f)| f.as_str()).collect();
    sqlx::query_as(
        "UPDATE tickets t SET status = 'executed', executed_at = now() \
         FROM (SELECT DISTINCT ON (id) id, fp FROM unnest($1::uuid[], $2::text[]) AS c(id, fp)) c \
         WHERE t.id = c.id AND t.status = 'approved' \
         AND (t.fingerprint IS NULL OR t.fingerprint = c.fp) RETURNING t.*",
    )
    .bind(ids)
    .bind(fingerprints)
    .fetch_all(db)
    .await
}
