//! A person's decision on a ticket: who may decide, and the conditional writes that record it.

use std::time::Duration;

use uuid::Uuid;

use super::{Decided, Decision, Ticket, get};
use crate::ids::TicketId;
use crate::usergroup::{self, Eligibility};

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
    /// How old a user group's membership snapshot may be and still count.
    pub membership_max_age: Duration,
}

/// Records a person's vote if, and only if, the ticket is still pending and unexpired, whoever
/// they are (for tools and tests; clicks go through [`decide_as`]). With a quorum, an approval
/// may leave the ticket pending: [`Decided::Changed`] then holds the pending ticket.
pub async fn decide(
    pool: &crate::db::Db,
    id: TicketId,
    decision: Decision,
    by_id: &str,
    by_name: &str,
    message: Option<(&str, &str)>,
) -> Result<Decided, sqlx::Error> {
    let click = ClickDecision {
        ticket: id,
        decision,
        user_id: by_id.to_owned(),
        user_name: by_name.to_owned(),
        message: message.map(|(c, t)| (c.to_owned(), t.to_owned())),
        allowed_by_global: true,
        fingerprint: None,
        membership_max_age: Duration::ZERO,
    };
    let changed = vote(pool, std::slice::from_ref(&click), false).await?;
    explain(pool, &click, changed.into_iter().next().flatten(), None).await
}

/// Records `clicker`'s vote if they may, in one statement on the common path (the approver,
/// owner, quorum and fingerprint checks are in the SQL, so that check and write cannot race or
/// cost two round trips). Only a click that changes nothing pays for a second read, to say why.
pub async fn decide_as(
    pool: &crate::db::Db,
    id: TicketId,
    decision: Decision,
    clicker: Clicker<'_>,
    message: Option<(&str, &str)>,
    fingerprint: Option<&str>,
) -> Result<Decided, sqlx::Error> {
    let click = ClickDecision {
        ticket: id,
        decision,
        user_id: clicker.id.to_owned(),
        user_name: clicker.name.to_owned(),
        message: message.map(|(c, t)| (c.to_owned(), t.to_owned())),
        allowed_by_global: may_decide(clicker.id, &[], clicker.global_approvers),
        fingerprint: fingerprint.map(str::to_owned),
        membership_max_age: clicker.membership_max_age,
    };
    let changed = vote(pool, std::slice::from_ref(&click), true).await?;
    explain(
        pool,
        &click,
        changed.into_iter().next().flatten(),
        Some(clicker.global_approvers),
    )
    .await
}

/// Why a click changed nothing (one read), or the ticket it changed.
pub(crate) async fn explain(
    pool: &crate::db::Db,
    click: &ClickDecision,
    changed: Option<Ticket>,
    global_approvers: Option<&[String]>,
) -> Result<Decided, sqlx::Error> {
    if let Some(t) = changed {
        return Ok(Decided::Changed(t));
    }
    let Some(t) = get(pool, click.ticket).await? else {
        return Ok(Decided::Unknown);
    };
    let uid = click.user_id.as_str();
    let approving = click.decision == Decision::Approve;
    let wrong_call = click.fingerprint.as_deref().is_some_and(|fp| {
        !t.fingerprint
            .as_deref()
            .is_some_and(|full| full.starts_with(fp))
    });
    let eligible = match global_approvers {
        None => Eligibility::Eligible,
        Some(global) => {
            // Snapshots are read only when they could matter: a listed user needs none.
            let snapshots = if t.approver_groups.is_empty() || t.approvers.iter().any(|a| a == uid)
            {
                Vec::new()
            } else {
                usergroup::snapshots(pool, &t.approver_groups, click.membership_max_age).await?
            };
            usergroup::eligibility(uid, &t.approvers, &t.approver_groups, &snapshots, global)
        }
    };
    Ok(match eligible {
        Eligibility::NotEligible => Decided::NotApprover(t),
        _ if !t.status.is_pending() => Decided::Unchanged(t),
        Eligibility::Unknown(group) => Decided::MembershipUnknown(t, group),
        _ if wrong_call => Decided::WrongCall(t),
        _ if approving && t.owner.as_deref() == Some(uid) => Decided::SelfApproval(t),
        _ if approving && t.approved_by_ids.iter().any(|a| a == uid) => Decided::AlreadyVoted(t),
        _ => Decided::Unchanged(t),
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
    /// The short fingerprint the clicked message showed; the ticket's must start with it.
    pub fingerprint: Option<String>,
    /// How old a user group's membership snapshot may be and still count for this click.
    pub membership_max_age: Duration,
}

/// [`decide_as`] for many clicks in one statement and one commit, for bursts. Returns, per
/// click, the ticket if this click's vote counted (it may still be pending, short of its
/// quorum). A ticket must appear at most once per call (the caller decides duplicates alone); a
/// click that changed nothing is answered `None`, and its caller learns why with [`decide_as`].
pub async fn decide_many(
    pool: &crate::db::Db,
    clicks: &[ClickDecision],
) -> Result<Vec<Option<Ticket>>, sqlx::Error> {
    vote(pool, clicks, true).await
}

/// The vote statement. Every check is in its `WHERE`, and the new approvals, status and decider
/// are computed from the row it locked: two votes on one ticket serialise on that row, and the
/// second is evaluated against the row the first left (Postgres re-reads a row it waited for),
/// so neither vote is lost and only one of them completes the quorum. The vote row is written
/// by the same statement, only for a vote that counted. A ticket that names approvers or user
/// groups lets the listed users and the members of each group's snapshot decide, a snapshot
/// counting only while younger than the click's maximum age (so a stale one fails closed).
const VOTE: &str = "WITH d AS ( \
    UPDATE tickets t SET \
        approved_by_ids = CASE WHEN v.status = 'approved' \
            THEN array_append(t.approved_by_ids, v.uid) ELSE t.approved_by_ids END, \
        approved_by_names = CASE WHEN v.status = 'approved' \
            THEN array_append(t.approved_by_names, v.uname) ELSE t.approved_by_names END, \
        status = CASE WHEN v.status = 'denied' OR cardinality(t.approved_by_ids) + 1 >= t.approvals_needed \
            THEN v.status ELSE 'pending' END, \
        decided_at = CASE WHEN v.status = 'denied' OR cardinality(t.approved_by_ids) + 1 >= t.approvals_needed \
            THEN now() END, \
        decided_by_id = CASE WHEN v.status = 'denied' OR cardinality(t.approved_by_ids) + 1 >= t.approvals_needed \
            THEN v.uid END, \
        decided_by_name = CASE WHEN v.status = 'denied' OR cardinality(t.approved_by_ids) + 1 >= t.approvals_needed \
            THEN v.uname END, \
        message_channel = COALESCE(t.message_channel, v.ch), \
        message_ts = COALESCE(t.message_ts, v.ts) \
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::text[], \
            $10::float8[]) \
        AS v(id, status, uid, uname, ch, ts, allowed, fp, max_age) \
    WHERE t.id = v.id AND t.status = 'pending' AND t.expires_at > now() \
      AND (NOT $9 OR CASE WHEN cardinality(t.approvers) = 0 AND cardinality(t.approver_groups) = 0 THEN v.allowed \
          ELSE v.uid = ANY(t.approvers) OR EXISTS (SELECT 1 FROM approver_group_members m \
              WHERE m.group_id = ANY(t.approver_groups) AND v.uid = ANY(m.users) \
                AND m.fetched_at > now() - make_interval(secs => v.max_age)) END) \
      AND (v.fp IS NULL OR starts_with(t.fingerprint, v.fp)) \
      AND (v.status = 'denied' OR (NOT (v.uid = ANY(t.approved_by_ids)) AND t.owner IS DISTINCT FROM v.uid)) \
    RETURNING t.*, v.uid AS vote_uid, v.uname AS vote_uname, v.status AS vote_status \
), votes AS ( \
    INSERT INTO ticket_votes (ticket_id, user_id, user_name, vote) \
    SELECT id, vote_uid, vote_uname, CASE vote_status WHEN 'approved' THEN 'approve' ELSE 'deny' END FROM d \
    ON CONFLICT DO NOTHING \
) SELECT * FROM d";

pub(crate) async fn vote<'e>(
    pool: impl sqlx::PgExecutor<'e>,
    clicks: &[ClickDecision],
    check_approvers: bool,
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
    let fps: Vec<Option<&str>> = clicks.iter().map(|c| c.fingerprint.as_deref()).collect();
    let max_ages: Vec<f64> = clicks
        .iter()
        .map(|c| c.membership_max_age.as_secs_f64())
        .collect();
    let changed: Vec<Ticket> = sqlx::query_as(VOTE)
        .bind(ids)
        .bind(statuses)
        .bind(users)
        .bind(names)
        .bind(channels)
        .bind(ts)
        .bind(allowed)
        .bind(fps)
        .bind(check_approvers)
        .bind(max_ages)
        .fetch_all(pool)
        .await?;
    let mut by_id: std::collections::HashMap<TicketId, Ticket> =
        changed.into_iter().map(|t| (t.id, t)).collect();
    Ok(clicks.iter().map(|c| by_id.remove(&c.ticket)).collect())
}

/// The votes that counted on a ticket, oldest first: (user id, user name, vote, when).
pub async fn votes<'e>(
    db: impl sqlx::PgExecutor<'e>,
    id: TicketId,
) -> Result<Vec<Vote>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, user_name, vote, at FROM ticket_votes WHERE ticket_id = $1 ORDER BY at, user_id",
    )
    .bind(id.0)
    .fetch_all(db)
    .await
}

/// One recorded vote.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Vote {
    /// Slack user id.
    pub user_id: String,
    /// Slack user name at the time.
    pub user_name: String,
    /// `approve` or `deny`.
    pub vote: String,
    /// When it was recorded.
    pub at: chrono::DateTime<chrono::Utc>,
}
