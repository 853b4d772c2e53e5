//! Closing pending tickets that nobody decided: expiry, cancellation, and the sweep of tickets
//! whose waiter is gone.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{Ticket, TicketStatus, interval_secs};
use crate::ids::TicketId;

/// Moves a pending ticket to `to` (expired or cancelled); `None` when it had already left pending.
pub async fn close_pending<'e>(
    db: impl PgExecutor<'e>,
    id: TicketId,
    to: TicketStatus,
) -> Result<Option<Ticket>, sqlx::Error> {
    debug_assert!(matches!(
        to,
        TicketStatus::Expired | TicketStatus::Cancelled
    ));
    sqlx::query_as(
        "UPDATE tickets SET status = $2, decided_at = now() \
         WHERE id = $1 AND status = 'pending' RETURNING *",
    )
    .bind(id.0)
    .bind(to.as_str())
    .fetch_optional(db)
    .await
}

/// Cancels a pending ticket whose waiter went away, unless a caller attached to it after
/// `attached` (a retry on any instance now waits on it).
pub async fn cancel_abandoned<'e>(
    db: impl PgExecutor<'e>,
    id: TicketId,
    attached: DateTime<Utc>,
) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE tickets SET status = 'cancelled', decided_at = now() \
         WHERE id = $1 AND status = 'pending' AND attached_at <= $2 RETURNING *",
    )
    .bind(id.0)
    .bind(attached)
    .fetch_optional(db)
    .await
}

/// Expires pending tickets whose deadline passed more than `grace` ago (their waiter is gone).
pub async fn sweep_expired<'e>(
    db: impl PgExecutor<'e>,
    grace: Duration,
) -> Result<Vec<Ticket>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE tickets SET status = 'expired', decided_at = now() \
         WHERE status = 'pending' AND expires_at < now() - make_interval(secs => $1) \
         RETURNING *",
    )
    .bind(interval_secs(grace))
    .fetch_all(db)
    .await
}
