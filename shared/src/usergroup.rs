//! Slack user groups as approvers: the membership snapshots the notifier writes, the queries on
//! `approver_group_members`, and who may decide a ticket that names groups.
//!
//! The webhook never asks Slack who is in a group; it trusts a snapshot only while it is younger
//! than a maximum age, so a failing Slack or a stopped notifier makes clicks fail closed instead
//! of counting a membership nobody has confirmed lately.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// One stored membership of a group, as last read from Slack.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    /// The user group id (`S…`).
    pub group_id: String,
    /// Its members' user ids.
    pub users: Vec<String>,
    /// When the notifier wrote it (the database's clock).
    pub fetched_at: DateTime<Utc>,
    /// Whether it is younger than the maximum age asked for (judged by the database's clock,
    /// the one the vote statement uses).
    pub fresh: bool,
}

/// Stores what Slack answered for `group` as its current membership, stamped with `now()`.
pub async fn record<'e>(
    db: impl PgExecutor<'e>,
    group: &str,
    users: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO approver_group_members (group_id, users, fetched_at) VALUES ($1, $2, now()) \
         ON CONFLICT (group_id) DO UPDATE SET users = EXCLUDED.users, fetched_at = EXCLUDED.fetched_at",
    )
    .bind(group)
    .bind(users)
    .execute(db)
    .await
    .map(|_| ())
}

/// The stored snapshots of `groups` (absent: never fetched), each judged against `max_age`.
pub async fn snapshots<'e>(
    db: impl PgExecutor<'e>,
    groups: &[String],
    max_age: Duration,
) -> Result<Vec<Snapshot>, sqlx::Error> {
    sqlx::query_as(
        "SELECT group_id, users, fetched_at, \
             fetched_at > now() - make_interval(secs => $2) AS fresh \
         FROM approver_group_members WHERE group_id = ANY($1) ORDER BY group_id",
    )
    .bind(groups)
    .bind(max_age.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Every group that a pending, unexpired ticket names: the ones worth keeping fresh.
pub async fn pending_groups<'e>(db: impl PgExecutor<'e>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT g FROM tickets, unnest(approver_groups) AS g \
         WHERE status = 'pending' AND cardinality(approver_groups) > 0 AND expires_at > now() \
         ORDER BY g",
    )
    .fetch_all(db)
    .await
}

/// Whether a user may decide a ticket, as far as its lists and the snapshots tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// Listed, in a fresh snapshot of a named group, or allowed by the global list.
    Eligible,
    /// Not listed and in no named group (every snapshot fresh), or refused by the global list.
    NotEligible,
    /// Not listed, and this named group has no fresh snapshot: nobody can say.
    Unknown(String),
}

/// Who may decide a ticket naming `approvers` and `groups`: with neither, the global list (empty:
/// anyone); otherwise the listed users and the members of each group's fresh snapshot. The same
/// rule as the vote statement's, for explaining a refused click.
pub fn eligibility(
    user: &str,
    approvers: &[String],
    groups: &[String],
    snapshots: &[Snapshot],
    global: &[String],
) -> Eligibility {
    if approvers.is_empty() && groups.is_empty() {
        return match global.is_empty() || global.iter().any(|a| a == user) {
            true => Eligibility::Eligible,
            false => Eligibility::NotEligible,
        };
    }
    if approvers.iter().any(|a| a == user) {
        return Eligibility::Eligible;
    }
    let mut unknown = None;
    for g in groups {
        match snapshots.iter().find(|s| &s.group_id == g && s.fresh) {
            Some(s) if s.users.iter().any(|u| u == user) => return Eligibility::Eligible,
            Some(_) => {}
            None => unknown = unknown.or(Some(g.clone())),
        }
    }
    match unknown {
        Some(g) => Eligibility::Unknown(g),
        None => Eligibility::NotEligible,
    }
}

/// Whether `s` looks like a Slack user group id (`S0123ABCD`).
pub fn looks_like_group(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with('S')
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn snap(group: &str, users: &[&str], fresh: bool) -> Snapshot {
        Snapshot {
            group_id: group.into(),
            users: ids(users),
            fetched_at: Utc::now(),
            fresh,
        }
    }

    #[test]
    fn listed_users_and_fresh_members_may_decide() {
        let groups = ids(&["S1"]);
        let fresh = [snap("S1", &["U2"], true)];
        let e = |u, snaps: &[Snapshot]| eligibility(u, &ids(&["U1"]), &groups, snaps, &[]);
        assert_eq!(e("U1", &[]), Eligibility::Eligible);
        assert_eq!(e("U2", &fresh), Eligibility::Eligible);
        assert_eq!(e("U3", &fresh), Eligibility::NotEligible);
        // A stale or missing snapshot cannot say no either: the click is refused as unknown.
        assert_eq!(
            e("U2", &[snap("S1", &["U2"], false)]),
            Eligibility::Unknown("S1".into())
        );
        assert_eq!(e("U3", &[]), Eligibility::Unknown("S1".into()));
        // Groups replace the global list, as a ticket's own approvers do.
        assert_eq!(
            eligibility("U9", &[], &groups, &fresh, &ids(&["U9"])),
            Eligibility::NotEligible
        );
        assert_eq!(
            eligibility("U9", &[], &[], &[], &ids(&["U9"])),
            Eligibility::Eligible
        );
        assert_eq!(eligibility("U9", &[], &[], &[], &[]), Eligibility::Eligible);
        assert_eq!(
            eligibility("U8", &[], &[], &[], &ids(&["U9"])),
            Eligibility::NotEligible
        );
    }

    #[test]
    fn a_member_of_any_fresh_group_counts_even_if_another_is_unknown() {
        let groups = ids(&["S1", "S2"]);
        let snaps = [snap("S2", &["U2"], true)];
        assert_eq!(
            eligibility("U2", &[], &groups, &snaps, &[]),
            Eligibility::Eligible
        );
        assert_eq!(
            eligibility("U3", &[], &groups, &snaps, &[]),
            Eligibility::Unknown("S1".into())
        );
    }

    #[test]
    fn group_ids_look_like_s_ids() {
        assert!(looks_like_group("S0123ABCD"));
        assert!(!looks_like_group("U0123ABCD"));
        assert!(!looks_like_group("S"));
        assert!(!looks_like_group("s0123abcd"));
        assert!(!looks_like_group("S01 23"));
    }
}
