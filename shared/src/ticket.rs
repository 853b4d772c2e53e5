//! Approval tickets: their states, and every query on the `tickets` table.
//!
//! Each state change is one conditional `UPDATE … WHERE status = …`, so the first writer wins and
//! every later writer learns the state that did win.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::ids::TicketId;

mod claim;
mod close;
pub(crate) mod decision;
mod message;
mod offer;
pub mod task;

pub use decision::{
    ClickDecision, Clicker, Vote, decide, decide_as, decide_many, may_decide, votes,
};

pub use claim::{claim_execution, claim_executions};
pub use close::{cancel_abandoned, close_pending, sweep_expired};
pub use offer::{GrantOffer, GrantScope, UnknownScope};

pub use message::{
    PostedMessage, Reconcile, forget_requeue, record_message, record_messages, record_notify_error,
    record_update, take_stale, take_unposted,
};

/// Where a ticket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// Waiting for a person.
    Pending,
    /// A person approved; the call has not run yet.
    Approved,
    /// A person denied.
    Denied,
    /// Nobody decided in time.
    Expired,
    /// The caller went away or cancelled.
    Cancelled,
    /// Approved and forwarded upstream (single use).
    Executed,
}

impl TicketStatus {
    /// The spelling in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Executed => "executed",
        }
    }

    /// Whether a person's click can still change this ticket.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Pending)
    }
}

impl fmt::Display for TicketStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string the database should never hold.
#[derive(Debug, thiserror::Error)]
#[error("unknown ticket status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for TicketStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            "executed" => Self::Executed,
            other => return Err(UnknownStatus(other.to_owned())),
        })
    }
}

impl TryFrom<String> for TicketStatus {
    type Error = UnknownStatus;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A person's verdict on a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Run the call.
    Approve,
    /// Refuse the call.
    Deny,
}

impl Decision {
    /// The status a ticket takes on this decision.
    pub fn status(self) -> TicketStatus {
        match self {
            Self::Approve => TicketStatus::Approved,
            Self::Deny => TicketStatus::Denied,
        }
    }
}

/// One row of `tickets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Ticket {
    #[sqlx(try_from = "Uuid")]
    pub id: TicketId,
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    pub principal: String,
    /// The issuer of the caller's access token; `None` for a static-token agent.
    #[serde(default)]
    #[sqlx(default)]
    pub principal_issuer: Option<String>,
    /// The token's claims (and `scope`) that the holding rule looked at, shown to approvers.
    #[serde(default)]
    #[sqlx(default)]
    pub principal_claims: Option<serde_json::Value>,
    pub session_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub rule: String,
    pub reason: Option<String>,
    pub approvers: Vec<String>,
    pub slack_channel: Option<String>,
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by_id: Option<String>,
    pub decided_by_name: Option<String>,
    pub message_channel: Option<String>,
    pub message_ts: Option<String>,
    pub executed_at: Option<DateTime<Utc>>,
    pub notify_error: Option<String>,
    /// The state the Slack message last showed (`None`: unknown, or nothing posted).
    pub message_status: Option<TicketStatus>,
    /// How many distinct people must approve (one deny is enough to deny).
    pub approvals_needed: i32,
    /// Who approved so far, in order (ids and names side by side).
    pub approved_by_ids: Vec<String>,
    /// The names of `approved_by_ids`, same order.
    pub approved_by_names: Vec<String>,
    /// The agent's owner, whose approval never counts for this ticket.
    pub owner: Option<String>,
    /// SHA-256 of the canonical call (see `canonical::fingerprint`); `None` on older tickets.
    pub fingerprint: Option<String>,
    /// The revision of the policy that held the call; `None` on older tickets.
    pub policy_revision: Option<String>,
    /// Slack user groups (`S…`) whose members may decide, besides `approvers`.
    pub approver_groups: Vec<String>,
    /// Seconds an "Approve for" grant lasts, when the rule offers one (see `grant::GrantOffer`).
    pub grant_for_secs: Option<i32>,
    /// `tool` or `arguments`, with `grant_for_secs`.
    pub grant_scope: Option<String>,
    /// The rule's hash when the call was held, with `grant_for_secs`.
    pub grant_rule_hash: Option<String>,
    /// When a caller last started waiting on it: its creation, or the newest retry that
    /// reattached, on any gateway instance.
    #[serde(default)]
    pub attached_at: DateTime<Utc>,
}

impl Ticket {
    /// The approvals still missing before the ticket is approved.
    pub fn approvals_missing(&self) -> usize {
        usize::try_from(self.approvals_needed)
            .unwrap_or(1)
            .saturating_sub(self.approved_by_ids.len())
    }
}

impl From<Uuid> for TicketId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

/// What the gateway knows when it opens a ticket.
#[derive(Clone, Debug)]
pub struct NewTicket {
    pub id: TicketId,
    pub principal: String,
    /// The issuer of the caller's access token; `None` for a static-token agent.
    pub principal_issuer: Option<String>,
    /// The token's claims the holding rule looked at (an object), shown to approvers.
    pub principal_claims: Option<serde_json::Value>,
    pub session_id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub rule: String,
    pub reason: Option<String>,
    pub approvers: Vec<String>,
    pub slack_channel: Option<String>,
    pub request_hash: String,
    /// How long from the database's `now()` until the ticket expires.
    pub timeout: Duration,
    /// How many distinct people must approve (at least 1).
    pub approvals: u32,
    /// The agent's owner (a Slack user id), who may not approve its calls.
    pub owner: Option<String>,
    /// `canonical::fingerprint` of the call (empty: none, as on tickets made by older code).
    pub fingerprint: String,
    /// The revision of the policy that held the call.
    pub policy_revision: Option<String>,
    /// Slack user groups (`S…`) whose members may decide, besides `approvers`.
    pub approver_groups: Vec<String>,
    /// The grant an "Approve for" click would create, when the rule offers one.
    pub grant: Option<GrantOffer>,
    /// The call's W3C `traceparent` from `_meta`, already validated (never shown on Slack).
    pub traceparent: Option<String>,
    /// The call's W3C `tracestate`, kept only beside a valid `traceparent`.
    pub tracestate: Option<String>,
}

/// The settled state of a ticket, as the batched waiter check reads it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Settled {
    #[sqlx(try_from = "Uuid")]
    pub id: TicketId,
    #[sqlx(try_from = "String")]
    pub status: TicketStatus,
    pub decided_by_id: Option<String>,
    pub decided_by_name: Option<String>,
}

/// Whether an open call made a new ticket or found its earlier one.
#[derive(Clone, Debug)]
pub enum Opened {
    /// A new pending ticket; the approval request still has to be posted.
    Created(Ticket),
    /// A live ticket (pending, or approved but not run) for the same session and request.
    Reattached(Ticket),
}

/// The result of a person's click.
#[derive(Clone, Debug)]
pub enum Decided {
    /// This click decided the ticket.
    Changed(Ticket),
    /// The ticket had already left `pending`, or has expired; it is unchanged.
    Unchanged(Ticket),
    /// No such ticket.
    Unknown,
    /// The clicker may not decide this ticket; it is unchanged.
    NotApprover(Ticket),
    /// The clicker owns the agent whose call this is; their approval never counts.
    SelfApproval(Ticket),
    /// The clicker's approval is already counted; the same person counts once.
    AlreadyVoted(Ticket),
    /// The click was for another call than the one the ticket holds (fingerprints differ).
    WrongCall(Ticket),
    /// The clicker is not listed, and this group's membership is not known recently enough
    /// (no snapshot, or one older than the maximum age): refused, to be tried again.
    MembershipUnknown(Ticket, String),
}

fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Opens a ticket, or reattaches to the live one for the same session and canonical request.
pub async fn open(pool: &crate::db::Db, new: &NewTicket) -> Result<Opened, sqlx::Error> {
    // Another caller may settle the conflicting row between our insert and our select; a few
    // rounds always converge because each round either inserts or finds a live row.
    for _ in 0..5 {
        let inserted: Option<Ticket> = sqlx::query_as(
        "INSERT INTO tickets (id, principal, session_id, tool, arguments, rule, reason, approvers, \
                 slack_channel, request_hash, expires_at, approvals_needed, owner, fingerprint, \
                 policy_revision, approver_groups, grant_for_secs, grant_scope, grant_rule_hash, \
                 traceparent, tracestate, principal_issuer, principal_claims) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now() + make_interval(secs => $11), \
                 $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
             ON CONFLICT (session_id, request_hash) WHERE status IN ('pending', 'approved') DO NOTHING \
             RETURNING *",
    )
        .bind(new.id.0)
        .bind(&new.principal)
        .bind(&new.session_id)
        .bind(&new.tool)
        .bind(&new.arguments)
        .bind(&new.rule)
        .bind(&new.reason)
        .bind(&new.approvers)
        .bind(&new.slack_channel)
        .bind(&new.request_hash)
        .bind(interval_secs(new.timeout))
        .bind(i32::try_from(new.approvals.max(1)).unwrap_or(i32::MAX))
        .bind(&new.owner)
        .bind(Some(new.fingerprint.as_str()).filter(|f| !f.is_empty()))
        .bind(&new.policy_revision)
        .bind(&new.approver_groups)
        .bind(new.grant.as_ref().map(|g| g.secs()))
        .bind(new.grant.as_ref().map(|g| g.scope.as_str()))
        .bind(new.grant.as_ref().map(|g| g.rule_hash.as_str()))
        .bind(&new.traceparent)
        .bind(&new.tracestate)
        .bind(&new.principal_issuer)
        .bind(&new.principal_claims)
        .fetch_optional(pool)
        .await?;
        if let Some(t) = inserted {
            return Ok(Opened::Created(t));
        }
        // Reattaching says "someone waits again", so the waiter that went away leaves it be.
        let live: Option<Ticket> = sqlx::query_as(
            "UPDATE tickets SET attached_at = greatest(attached_at, clock_timestamp()) \
             WHERE session_id = $1 AND request_hash = $2 AND status IN ('pending', 'approved') \
             RETURNING *",
        )
        .bind(&new.session_id)
        .bind(&new.request_hash)
        .fetch_optional(pool)
        .await?;
        if let Some(t) = live {
            return Ok(Opened::Reattached(t));
        }
    }
    Err(sqlx::Error::Protocol(
        "ticket open did not converge after 5 rounds".into(),
    ))
}

/// Reads one ticket.
pub async fn get<'e>(db: impl PgExecutor<'e>, id: TicketId) -> Result<Option<Ticket>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM tickets WHERE id = $1")
        .bind(id.0)
        .fetch_optional(db)
        .await
}

/// Of the given tickets, those that have left `pending` (one query for every waiter of a pod).
pub async fn settled<'e>(
    db: impl PgExecutor<'e>,
    ids: &[TicketId],
) -> Result<Vec<Settled>, sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query_as(
        "SELECT id, status, decided_by_id, decided_by_name FROM tickets \
         WHERE id = ANY($1) AND status <> 'pending'",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// How many tickets are in `status`.
pub async fn count_with_status<'e>(
    db: impl PgExecutor<'e>,
    status: TicketStatus,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = $1")
        .bind(status.as_str())
        .fetch_one(db)
        .await
}

/// The ids of the tickets in `status`, oldest first.
pub async fn ids_with_status<'e>(
    db: impl PgExecutor<'e>,
    status: TicketStatus,
) -> Result<Vec<TicketId>, sqlx::Error> {
    let ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM tickets WHERE status = $1 ORDER BY created_at, id")
            .bind(status.as_str())
            .fetch_all(db)
            .await?;
    Ok(ids.into_iter().map(TicketId).collect())
}

/// Many tickets by id in one statement; ids with no ticket are simply absent.
pub async fn get_many<'e>(
    db: impl PgExecutor<'e>,
    ids: &[TicketId],
) -> Result<Vec<Ticket>, sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    sqlx::query_as("SELECT * FROM tickets WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn ticket_list_wins_then_global_then_anyone() {
        assert!(may_decide("U9", &[], &[]));
        assert!(may_decide("U1", &[], &ids(&["U1"])));
        assert!(!may_decide("U9", &[], &ids(&["U1"])));
        assert!(may_decide("U2", &ids(&["U2"]), &ids(&["U1"])));
        assert!(!may_decide("U1", &ids(&["U2"]), &ids(&["U1"])));
        assert!(!may_decide("", &ids(&["U2"]), &[]));
    }

    #[test]
    fn status_spellings_round_trip() {
        for s in [
            TicketStatus::Pending,
            TicketStatus::Approved,
            TicketStatus::Denied,
            TicketStatus::Expired,
            TicketStatus::Cancelled,
            TicketStatus::Executed,
        ] {
            assert_eq!(s.as_str().parse::<TicketStatus>().ok(), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert!("approve".parse::<TicketStatus>().is_err());
    }
}
