//! Reading back the W3C trace context recorded on tickets and audit rows (operators, tests,
//! and work done later for a ticket, which joins its trace). The columns are written by
//! `ticket::open` and `audit::insert_batch`.

use uuid::Uuid;

use crate::ids::TicketId;
use crate::otel::Carrier;

/// The `traceparent` and `tracestate` recorded on one ticket (`None` when no such ticket).
pub async fn of_ticket(
    pool: &crate::db::Db,
    id: TicketId,
) -> Result<Option<(Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT traceparent, tracestate FROM tickets WHERE id = $1")
        .bind(id.0)
        .fetch_optional(pool)
        .await
}

/// Makes `span` (not yet entered) a child of the span whose context ticket `id` keeps (the
/// held call's), so that work done later for the ticket, elsewhere, joins that call's trace.
/// Reads only while spans are exported; a ticket without a context leaves `span` a trace of
/// its own.
pub async fn join_ticket(
    pool: &crate::db::Db,
    id: TicketId,
    span: &tracing::Span,
) -> Result<(), sqlx::Error> {
    if !crate::telemetry::exporting() {
        return Ok(());
    }
    if let Some((traceparent, tracestate)) = of_ticket(pool, id).await? {
        Carrier::new(traceparent, tracestate).parent(span);
    }
    Ok(())
}

/// One audit row as trace and continuation checks read it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct AuditedCall {
    pub tool: String,
    pub decision: String,
    pub outcome: String,
    pub ticket_id: Option<Uuid>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// The audit rows of one principal, oldest first.
pub async fn audited_calls(
    pool: &crate::db::Db,
    principal: &str,
) -> Result<Vec<AuditedCall>, sqlx::Error> {
    sqlx::query_as(
        "SELECT tool, decision, outcome, ticket_id, traceparent, tracestate FROM audit_log \
         WHERE principal = $1 ORDER BY id",
    )
    .bind(principal)
    .fetch_all(pool)
    .await
}
