//! A held call: open a ticket, wait for a person through the hub, and act on what Postgres
//! says; beside it, the table of held calls (for `notifications/cancelled`) and the sweeper of
//! tickets nobody waits on any more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::db::Db;
use airlock_shared::job::{self, NotifyJob};
use airlock_shared::ticket::{self, NewTicket, Opened, Settled, Ticket};
use airlock_shared::{Keys, SessionId, TicketId, TicketStatus, signal};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::hub::{Hub, Registration};
use crate::error::CallError;
use crate::metrics::Metrics;

/// Holds calls for approval: what a hold needs from the gateway.
#[derive(Clone)]
pub struct Holds {
    pub pool: Db,
    pub redis: RedisConn,
    pub keys: Keys,
    pub hub: Hub,
    pub metrics: Metrics,
    /// Cancelled when the shutdown grace has passed: held calls answer "interrupted".
    pub interrupt: CancellationToken,
}

/// How a hold ended well: the ticket is claimed for its single execution.
#[derive(Debug)]
pub struct Cleared {
    pub ticket: Ticket,
}

/// Cancels the ticket if the waiting call goes away (client disconnect drops the future).
struct CancelOnDrop {
    holds: Holds,
    registration: Option<Registration>,
    armed: bool,
    /// How long a re-issue has to reattach before the ticket is cancelled.
    grace: Duration,
    /// When this waiter attached: a caller that attached later, anywhere, keeps the ticket.
    attached: chrono::DateTime<chrono::Utc>,
}

/// A 2026-07-28 client whose stream broke re-issues the call with a new id (there is no
/// resumption); a re-issue within this long reattaches instead of asking again.
pub const REISSUE_GRACE: Duration = Duration::from_secs(10);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(reg) = self.registration.take() else {
            return;
        };
        let ticket = reg.ticket;
        // Another local waiter (a retry that reattached) still wants the decision.
        let others = self.holds.hub.local_waiters(ticket) > 1;
        drop(reg);
        if !self.armed || others {
            return;
        }
        let a = self.holds.clone();
        let (grace, attached) = (self.grace, self.attached);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if !grace.is_zero() {
                    tokio::time::sleep(grace).await;
                    if a.hub.local_waiters(ticket) > 0 {
                        return;
                    }
                }
                match ticket::cancel_abandoned(&a.pool, ticket, attached).await {
                    Ok(Some(_)) => {
                        tracing::info!(ticket = %ticket, "caller went away; ticket cancelled");
                        announce_closed(&a, ticket, TicketStatus::Cancelled).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(ticket = %ticket, error = %e, "could not cancel abandoned ticket"),
                }
            });
        }
    }
}

async fn announce_closed(a: &Holds, ticket: TicketId, status: TicketStatus) {
    let mut conn = a.redis.clone();
    let sig = airlock_shared::DecisionSignal {
        ticket_id: ticket,
        status,
    };
    let job = NotifyJob::TicketClosed { ticket_id: ticket };
    if let Err(e) = signal::publish_with_job(&mut conn, &a.keys, &sig, &job).await {
        tracing::error!(ticket = %ticket, error = %e, "could not enqueue message update");
    }
}

/// Counts a call as held for as long as it waits, even if its future is dropped mid-wait.
struct HeldGauge<'a> {
    metrics: &'a Metrics,
    started: Instant,
}

impl<'a> HeldGauge<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.held_calls.inc();
        Self {
            metrics,
            started: Instant::now(),
        }
    }
}

impl Drop for HeldGauge<'_> {
    fn drop(&mut self) {
        self.metrics.held_calls.dec();
        self.metrics
            .approval_wait
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// What a held call keeps of its ticket while it waits.
pub struct Waiting {
    pub id: TicketId,
    pub status: TicketStatus,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// When this waiter attached: a caller that attached later, anywhere, keeps the ticket.
    pub attached_at: chrono::DateTime<chrono::Utc>,
    /// How long a re-issue has to reattach before the ticket is cancelled.
    pub grace: Duration,
}

impl Waiting {
    /// The parts of `ticket` a wait needs.
    pub fn of(ticket: &Ticket) -> Self {
        let grace = match SessionId(ticket.session_id.clone()).is_principal_scope() {
            true => REISSUE_GRACE,
            false => Duration::ZERO,
        };
        Self {
            id: ticket.id,
            status: ticket.status,
            expires_at: ticket.expires_at,
            attached_at: ticket.attached_at,
            grace,
        }
    }
}

/// Takes the two strings a hold keeps from its request; the rest (and the box) is freed now,
/// not when the hold ends.
fn rule_and_fingerprint(new: Box<NewTicket>) -> (String, String) {
    let new = *new;
    (new.rule, new.fingerprint)
}

/// How the wait itself ended.
pub enum Waited {
    Settled(Settled),
    Deadline,
    Interrupted,
    Cancelled,
}

impl Holds {
    /// Opens (or reattaches to) a ticket and waits until it is approved and claimed, or fails.
    /// `ticket_seen` learns the ticket's id as soon as it exists, so an abandoned call can name it.
    pub async fn hold(
        &self,
        new: Box<NewTicket>,
        cancel: CancellationToken,
        ticket_seen: &mut Option<TicketId>,
    ) -> Result<Cleared, CallError> {
        // Boxed: the insert is done before the wait, which should not carry its size.
        let opening = tracing::info_span!("ticket_open", tool = %new.tool, ticket = %new.id);
        let (ticket, _) = Box::pin(self.open(&new)).instrument(opening).await?;
        *ticket_seen = Some(ticket.id);
        // A hold parks for minutes, by the thousand: it keeps what the wait and the claim need,
        // and lets the request and the row go.
        let waiting = Waiting::of(&ticket);
        drop(ticket);
        let (rule, fingerprint) = rule_and_fingerprint(new);
        let span = tracing::info_span!("hold", ticket = %waiting.id);
        self.settle(&waiting, &rule, &fingerprint, cancel, true)
            .instrument(span)
            .await
    }

    /// Opens a ticket and asks for approval, or reattaches to the live one for the same call;
    /// `true` when the ticket is new.
    pub async fn open(&self, new: &NewTicket) -> Result<(Ticket, bool), CallError> {
        let rule = new.rule.clone();
        match ticket::open(&self.pool, new).await? {
            Opened::Created(t) => {
                let mut conn = self.redis.clone();
                let job = NotifyJob::ApprovalRequest { ticket_id: t.id };
                if let Err(source) = job::enqueue(&mut conn, &self.keys, &job).await {
                    // Nobody would ever be asked: close the ticket and fail fast.
                    let _ = ticket::close_pending(&self.pool, t.id, TicketStatus::Cancelled).await;
                    return Err(CallError::NotifyFailed { rule, source });
                }
                tracing::info!(ticket = %t.id, "approval requested");
                Ok((t, true))
            }
            Opened::Reattached(t) => {
                tracing::info!(ticket = %t.id, status = %t.status, "retry reattached to its ticket");
                Ok((t, false))
            }
        }
    }

    /// Cancels a pending ticket (its Slack message then says so); `false` if it had left
    /// pending already.
    pub async fn cancel_pending(&self, id: TicketId) -> Result<bool, sqlx::Error> {
        match ticket::close_pending(&self.pool, id, TicketStatus::Cancelled).await? {
            Some(_) => {
                announce_closed(self, id, TicketStatus::Cancelled).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Waits on an open ticket until it is approved and claimed for the call whose fingerprint
    /// is `fingerprint`, or fails. With `cancel_if_dropped`, dropping the wait (the client went
    /// away) cancels the ticket; a task's wait is nobody's connection and leaves it be.
    pub async fn settle(
        &self,
        ticket: &Waiting,
        rule: &str,
        fingerprint: &str,
        cancel: CancellationToken,
        cancel_if_dropped: bool,
    ) -> Result<Cleared, CallError> {
        if ticket.status == TicketStatus::Approved {
            return Box::pin(self.claim(ticket.id, rule, fingerprint)).await;
        }
        let waited = {
            let _held = HeldGauge::new(&self.metrics);
            self.wait(ticket, cancel, cancel_if_dropped).await
        };
        // Boxed: what follows the wait is a far larger future than the wait itself, and a
        // held call (or pending task) should cost only its wait while it waits.
        Box::pin(self.conclude(ticket.id, rule, fingerprint, waited)).await
    }

    /// Acts on how the wait ended: claim an approved ticket, or say why the call fails.
    pub async fn conclude(
        &self,
        id: TicketId,
        rule: &str,
        fingerprint: &str,
        waited: Waited,
    ) -> Result<Cleared, CallError> {
        let rule = rule.to_owned();
        let status = match waited {
            Waited::Settled(s) => s,
            Waited::Interrupted => {
                return Err(CallError::ApprovalInterrupted { rule, ticket: id });
            }
            Waited::Deadline => {
                match ticket::close_pending(&self.pool, id, TicketStatus::Expired).await? {
                    Some(_) => {
                        announce_closed(self, id, TicketStatus::Expired).await;
                        return Err(CallError::ApprovalTimeout { rule, ticket: id });
                    }
                    // A decision landed in the same instant: it wins.
                    None => self.current(id).await?,
                }
            }
            Waited::Cancelled => {
                match ticket::close_pending(&self.pool, id, TicketStatus::Cancelled).await? {
                    Some(_) => {
                        announce_closed(self, id, TicketStatus::Cancelled).await;
                        return Err(CallError::ApprovalCancelled { rule, ticket: id });
                    }
                    None => self.current(id).await?,
                }
            }
        };
        match status.status {
            TicketStatus::Approved => self.claim(id, &rule, fingerprint).await,
            TicketStatus::Denied => Err(CallError::ApprovalDenied {
                rule,
                ticket: id,
                decided_by: status.decided_by_name.or(status.decided_by_id),
            }),
            TicketStatus::Expired => Err(CallError::ApprovalTimeout { rule, ticket: id }),
            TicketStatus::Cancelled => Err(CallError::ApprovalCancelled { rule, ticket: id }),
            TicketStatus::Executed => Err(CallError::ApprovalAlreadyUsed { rule, ticket: id }),
            // The checker only reports settled tickets; a pending one here means a bug upstream
            // of us, and waiting again is the safe answer the caller can retry.
            TicketStatus::Pending => Err(CallError::ApprovalInterrupted { rule, ticket: id }),
        }
    }

    async fn current(&self, id: TicketId) -> Result<Settled, CallError> {
        let t = ticket::get(&self.pool, id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(Settled {
            id,
            status: t.status,
            decided_by_id: t.decided_by_id,
            decided_by_name: t.decided_by_name,
        })
    }

    /// Claims the approved ticket for exactly this call: the fingerprint the approvers saw must
    /// be the one of the call about to be forwarded, or the ticket is not claimed at all.
    async fn claim(&self, id: TicketId, rule: &str, call: &str) -> Result<Cleared, CallError> {
        if let Some(ticket) = self.hub.claim(&self.pool, id, call).await? {
            return Ok(Cleared { ticket });
        }
        // Rare: say whether it ran already or was approved for another call.
        let other_call = ticket::get(&self.pool, id).await?.is_some_and(|t| {
            t.status == TicketStatus::Approved
                && t.fingerprint.as_deref().is_some_and(|f| f != call)
        });
        let rule = rule.to_owned();
        if other_call {
            tracing::error!(ticket = %id, "approved ticket holds another call than the one waiting; not forwarded");
            return Err(CallError::ApprovalMismatch { rule, ticket: id });
        }
        Err(CallError::ApprovalAlreadyUsed { rule, ticket: id })
    }

    async fn wait(&self, ticket: &Waiting, cancel: CancellationToken, armed: bool) -> Waited {
        let mut guard = CancelOnDrop {
            holds: self.clone(),
            registration: Some(self.hub.register(ticket.id)),
            armed,
            grace: ticket.grace,
            attached: ticket.attached_at,
        };
        let Some(rx) = guard.registration.as_mut().and_then(|r| r.rx.take()) else {
            return Waited::Interrupted;
        };
        // The row's deadline, in this pod's clock.
        let remaining = (ticket.expires_at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        let deadline = Instant::now() + remaining;
        let out = tokio::select! {
            s = rx => match s {
                Ok(s) => Waited::Settled(s),
                Err(_) => Waited::Interrupted,
            },
            () = tokio::time::sleep_until(deadline) => Waited::Deadline,
            () = self.interrupt.cancelled() => Waited::Interrupted,
            () = cancel.cancelled() => Waited::Cancelled,
        };
        // Every ending above is handled by the caller; only a dropped future cancels.
        guard.armed = false;
        out
    }
}

/// Held calls by (session, JSON-RPC id), so that `notifications/cancelled` can reach them.
#[derive(Default)]
pub struct HeldCalls(Mutex<HashMap<(SessionId, String), CancellationToken>>);

/// Removes a held call from the table when it ends.
pub struct HeldEntry<'a> {
    table: &'a HeldCalls,
    key: (SessionId, String),
}

impl Drop for HeldEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock() {
            t.remove(&self.key);
        }
    }
}

impl HeldCalls {
    /// Enters a held call; it leaves the table when the entry is dropped.
    pub fn track(&self, sid: &SessionId, id: &Value, cancel: CancellationToken) -> HeldEntry<'_> {
        let key = (sid.clone(), id.to_string());
        if let Ok(mut t) = self.0.lock() {
            t.insert(key.clone(), cancel);
        }
        HeldEntry { table: self, key }
    }

    /// Cancels the held call `id` of `sid`, if there is one.
    pub fn cancel(&self, sid: &SessionId, id: &Value) {
        let token = self
            .0
            .lock()
            .ok()
            .and_then(|t| t.get(&(sid.clone(), id.to_string())).cloned());
        if let Some(t) = token {
            tracing::info!(session = %sid, request = %id, "client cancelled a held call");
            t.cancel();
        }
    }
}

/// Expires tickets whose waiter vanished (a crashed pod), so their messages are updated.
pub async fn sweep_loop(pool: Db, redis: RedisConn, keys: Keys, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match ticket::sweep_expired(&pool, Duration::from_secs(5)).await {
            Ok(expired) => {
                for t in expired {
                    tracing::info!(ticket = %t.id, "swept an expired ticket nobody waited on");
                    let mut conn = redis.clone();
                    let job = NotifyJob::TicketClosed { ticket_id: t.id };
                    if let Err(e) = job::enqueue(&mut conn, &keys, &job).await {
                        tracing::error!(ticket = %t.id, error = %e, "could not enqueue message update");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "ticket sweep failed"),
        }
    }
}
