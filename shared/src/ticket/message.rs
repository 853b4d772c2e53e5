//! A ticket's Slack message: where it is, what state it last showed, and the reconciler's
//! queries for messages that lag their ticket (never posted, or never updated), which are what
//! a lost notification job leaves behind.

use std::time::Duration;

use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::{PgExecutor, Postgres};
use uuid::Uuid;

use super::{Ticket, TicketStatus, interval_secs};
use crate::ids::TicketId;

impl sqlx::Type<Postgres> for TicketStatus {
    fn type_info() -> PgTypeInfo {
        <&str as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for TicketStatus {
    fn decode(value: PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&str as sqlx::Decode<Postgres>>::decode(value)?.parse()?)
    }
}

/// An approval request that was posted, and the state its body showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedMessage {
    pub ticket: TicketId,
    pub channel: String,
    pub ts: String,
    /// The ticket state the posted body rendered (pending, unless it closed before the post).
    pub shown: TicketStatus,
}

/// Stores where the approval request was posted, unless a message is already recorded.
/// Returns the ticket as it now stands; its `message_ts` is the one that counts.
pub async fn record_message<'e>(
    db: impl PgExecutor<'e>,
    posted: &PostedMessage,
) -> Result<Option<Ticket>, sqlx::Error> {
    // The shown state goes with the ts: a losing message's state is not the kept one's.
    sqlx::query_as(
        "UPDATE tickets SET message_channel = COALESCE(message_channel, $2), \
             message_ts = COALESCE(message_ts, $3), \
             message_status = CASE WHEN message_ts IS NULL \
                 OR (message_ts = $3 AND message_status IS NULL) THEN $4 ELSE message_status END \
         WHERE id = $1 RETURNING *",
    )
    .bind(posted.ticket.0)
    .bind(&posted.channel)
    .bind(&posted.ts)
    .bind(posted.shown.as_str())
    .fetch_optional(db)
    .await
}

/// [`record_message`] for many tickets in one statement (and one commit). Two posts for one
/// ticket in the same batch: one is kept, and the returned row says which.
pub async fn record_messages<'e>(
    db: impl PgExecutor<'e>,
    posts: &[PostedMessage],
) -> Result<Vec<Ticket>, sqlx::Error> {
    let ids: Vec<Uuid> = posts.iter().map(|p| p.ticket.0).collect();
    let channels: Vec<&str> = posts.iter().map(|p| p.channel.as_str()).collect();
    let ts: Vec<&str> = posts.iter().map(|p| p.ts.as_str()).collect();
    let shown: Vec<&str> = posts.iter().map(|p| p.shown.as_str()).collect();
    sqlx::query_as(
        "UPDATE tickets t SET message_channel = COALESCE(t.message_channel, v.channel), \
             message_ts = COALESCE(t.message_ts, v.ts), \
             message_status = CASE WHEN t.message_ts IS NULL \
                 OR (t.message_ts = v.ts AND t.message_status IS NULL) THEN v.shown \
                 ELSE t.message_status END \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS v(id, channel, ts, shown) \
         WHERE t.id = v.id RETURNING t.*",
    )
    .bind(ids)
    .bind(channels)
    .bind(ts)
    .bind(shown)
    .fetch_all(db)
    .await
}

/// Records that message `ts` of the ticket now shows `shown` (after a successful update).
pub async fn record_update<'e>(
    db: impl PgExecutor<'e>,
    id: TicketId,
    ts: &str,
    shown: TicketStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tickets SET message_status = $3 WHERE id = $1 AND message_ts = $2")
        .bind(id.0)
        .bind(ts)
        .bind(shown.as_str())
        .execute(db)
        .await
        .map(|_| ())
}

/// Marks that the notifier gave up on a job for this ticket.
pub async fn record_notify_error<'e>(
    db: impl PgExecutor<'e>,
    id: TicketId,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE tickets SET notify_error = $2 WHERE id = $1")
        .bind(id.0)
        .bind(error)
        .execute(db)
        .await
        .map(|_| ())
}

/// The bounds of one reconciler pass.
#[derive(Clone, Copy, Debug)]
pub struct Reconcile {
    /// A ticket younger than this (since creation, or since it closed) is left to its own job.
    pub grace: Duration,
    /// A ticket re-queued less than this ago is left to that job.
    pub retry: Duration,
    /// At most this many tickets per query.
    pub limit: i64,
}

/// Pending tickets whose approval request was never posted (and not given up on), oldest
/// first; each is marked re-queued, so a concurrent or repeated pass skips it for `retry`.
pub async fn take_unposted<'e>(
    db: impl PgExecutor<'e>,
    r: Reconcile,
) -> Result<Vec<TicketId>, sqlx::Error> {
    // The first three conditions are the partial index's predicate, word for word.
    take(
        db,
        "UPDATE tickets SET message_requeued_at = now() WHERE id IN (SELECT id FROM tickets \
         WHERE status = 'pending' AND message_ts IS NULL AND notify_error IS NULL \
           AND created_at < now() - make_interval(secs => $1) AND expires_at > now() \
           AND (message_requeued_at IS NULL OR message_requeued_at < now() - make_interval(secs => $2)) \
         ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
        r,
    )
    .await
}

/// Closed tickets whose posted message still shows another state (pending, most often), oldest
/// first; marked like [`take_unposted`]. A message showing "approved" is final for an executed
/// ticket: execution sends no update of its own.
pub async fn take_stale<'e>(
    db: impl PgExecutor<'e>,
    r: Reconcile,
) -> Result<Vec<TicketId>, sqlx::Error> {
    // The first five conditions are the partial index's predicate, word for word.
    take(
        db,
        "UPDATE tickets SET message_requeued_at = now() WHERE id IN (SELECT id FROM tickets \
         WHERE status <> 'pending' AND message_ts IS NOT NULL AND notify_error IS NULL \
           AND message_status IS DISTINCT FROM status \
           AND (status <> 'executed' OR message_status IS DISTINCT FROM 'approved') \
           AND decided_at < now() - make_interval(secs => $1) \
           AND (message_requeued_at IS NULL OR message_requeued_at < now() - make_interval(secs => $2)) \
         ORDER BY decided_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
        r,
    )
    .await
}

/// Runs a marking `statement` (it locks the rows it picks and skips rows another pass holds)
/// and returns their ids: two passes at once never take the same ticket.
async fn take<'e>(
    db: impl PgExecutor<'e>,
    statement: &'static str,
    r: Reconcile,
) -> Result<Vec<TicketId>, sqlx::Error> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(statement)
        .bind(interval_secs(r.grace))
        .bind(interval_secs(r.retry))
        .bind(r.limit)
        .fetch_all(db)
        .await?;
    Ok(ids.into_iter().map(|(id,)| TicketId(id)).collect())
}

/// Clears the re-queue mark of tickets whose job could not be queued, so the next pass retries
/// them at once.
pub async fn forget_requeue<'e>(
    db: impl PgExecutor<'e>,
    ids: &[TicketId],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query("UPDATE tickets SET message_requeued_at = NULL WHERE id = ANY($1)")
        .bind(ids)
        .execute(db)
        .await
        .map(|_| ())
}
