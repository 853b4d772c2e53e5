//! A person's decision on a ticket: who may decide, and the conditional writes that record it.

use uuid::Uuid;

use super::{Decided, Decision, Ticket, get};
use crate::ids::TicketId;

/// Whether `user` may decide a ticket naming `ticket_approvers`, given the global list.
/// The ticket's own list, when it has one, is the one that counts; no list at all lets anyone.
pub fn may_decide(user: &str, ticket_approvers: &[String], global: &[String]) -> bool {
    let list = if ticket_approvers.is_empty() {
        global
    } else {
        ticket_approvers
    };
    list.is_empty() || list.iter().any(|a| a == user)
}

/// Who clicked a decision button.
#[derive(Clone, Copy, Debug)]
pub struct Clicker<'a> {
    /// Slack user id.
    pub id: &'a str,
    /// Slack user name, for the record.
    pub name: &'a str,
    /// The global approver list (used for tickets that name no approvers of their own).
    pub global_approvers: &'a [String],
}

/// Records a person's decision if, and only if, the ticket is still pending and unexpired.
pub async fn decide(
    pool: &sqlx::PgPool,
    id: TicketId,
    decision: Decision,
    by_id: &str,
    by_name: &str,
    message: Option<(&str, &str)>,
) -> Result<Decided, sqlx::Error> {
    let (channel, ts) = message.unzip();
    let changed: Option<Ticket> = sqlx::query_as(
        "UPDATE tickets SET status = $2, decided_at = now(), decided_by_id = $3, decided_by_name = $4, \
             message_channel = COALESCE(message_channel, $5), message_ts = COALESCE(message_ts, $6) \
         WHERE id = $1 AND status = 'pending' AND expires_at > now() \
         RETURNING *",
    )
    .bind(id.0)
    .bind(decision.status().as_str())
    .bind(by_id)
    .bind(by_name)
    .bind(channel)
    .bind(ts)
    .fetch_optional(pool)
    .await?;
    if let Some(t) = changed {
        return Ok(Decided::Changed(t));
    }
    Ok(match get(pool, id).await? {
        Some(t) => Decided::Unchanged(t),
        None => Decided::Unknown,
    })
}

/// Decides a ticket for `clicker` if they may, in one statement on the common path (the
/// approver check of [`may_decide`] is repeated in SQL so that check and write cannot race or
/// cost two round trips). Only a click that changes nothing pays for a second read, to say why.
pub async fn decide_as(
    pool: &sqlx::PgPool,
    id: TicketId,
    decision: Decision,
    clicker: Clicker<'_>,
    message: Option<(&str, &str)>,
) -> Result<Decided, sqlx::Error> {
    let (channel, ts) = message.unzip();
    let allowed_by_global = may_decide(clicker.id, &[], clicker.global_approvers);
    let changed: Option<Ticket> = sqlx::query_as(
        "UPDATE tickets SET status = $2, decided_at = now(), decided_by_id = $3, decided_by_name = $4, \
             message_channel = COALESCE(message_channel, $5), message_ts = COALESCE(message_ts, $6) \
         WHERE id = $1 AND status = 'pending' AND expires_at > now() \
           AND CASE WHEN cardinality(approvers) = 0 THEN $7 ELSE $3 = ANY(approvers) END \
         RETURNING *",
    )
    .bind(id.0)
    .bind(decision.status().as_str())
    .bind(clicker.id)
    .bind(clicker.name)
    .bind(channel)
    .bind(ts)
    .bind(allowed_by_global)
    .fetch_optional(pool)
    .await?;
    if let Some(t) = changed {
        return Ok(Decided::Changed(t));
    }
    Ok(match get(pool, id).await? {
        Some(t) if !may_decide(clicker.id, &t.approvers, clicker.global_approvers) => {
            Decided::NotApprover(t)
        }
        Some(t) => Decided::Unchanged(t),
        None => Decided::Unknown,
    })
}

/// One click for [`decide_many`].
#[derive(Clone, Debug)]
pub struct ClickDecision {
    pub ticket: TicketId,
    pub decision: Decision,
    pub user_id: String,
    pub user_name: String,
    pub message: Option<(String, String)>,
    /// Whether the global approver list lets this user decide tickets that name no approvers.
    pub allowed_by_global: bool,
}

/// [`decide_as`] for many clicks in one statement and one commit, for bursts. Returns, per
/// click, the ticket if this click decided it. A ticket must appear at most once per call (the
/// caller decides duplicates alone); a click that changed nothing is answered `None`, and its
/// caller learns why with [`decide_as`].
pub async fn decide_many(
    pool: &sqlx::PgPool,
    clicks: &[ClickDecision],
) -> Result<Vec<Option<Ticket>>, sqlx::Error> {
    let ids: Vec<Uuid> = clicks.iter().map(|c| c.ticket.0).collect();
    let statuses: Vec<&str> = clicks
        .iter()
        .map(|c| c.decision.status().as_str())
        .collect();
    let users: Vec<&str> = clicks.iter().map(|c| c.user_id.as_str()).collect();
    let names: Vec<&str> = clicks.iter().map(|c| c.user_name.as_str()).collect();
    let channels: Vec<Option<&str>> = clicks
        .iter()
        .map(|c| c.message.as_ref().map(|m| m.0.as_str()))
        .collect();
    let ts: Vec<Option<&str>> = clicks
        .iter()
        .map(|c| c.message.as_ref().map(|m| m.1.as_str()))
        .collect();
    let allowed: Vec<bool> = clicks.iter().map(|c| c.allowed_by_global).collect();
    let changed: Vec<Ticket> = sqlx::query_as(
        "UPDATE tickets t SET status = v.status, decided_at = now(), decided_by_id = v.uid, \
             decided_by_name = v.uname, message_channel = COALESCE(t.message_channel, v.ch), \
             message_ts = COALESCE(t.message_ts, v.ts) \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[]) \
             AS v(id, status, uid, uname, ch, ts, allowed) \
         WHERE t.id = v.id AND t.status = 'pending' AND t.expires_at > now() \
           AND CASE WHEN cardinality(t.approvers) = 0 THEN v.allowed ELSE v.uid = ANY(t.approvers) END \
         RETURNING t.*",
    )
    .bind(ids)
    .bind(statuses)
    .bind(users)
    .bind(names)
    .bind(channels)
    .bind(ts)
    .bind(allowed)
    .fetch_all(pool)
    .await?;
    let mut by_id: std::collections::HashMap<TicketId, Ticket> =
        changed.into_iter().map(|t| (t.id, t)).collect();
    Ok(clicks.iter().map(|c| by_id.remove(&c.ticket)).collect())
}
