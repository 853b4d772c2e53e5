//! Slack user groups as approvers: the click is checked against the ticket's `approvers` and the
//! notifier's stored snapshot of each group, inside the one vote statement; a snapshot older than
//! `USERGROUP_MAX_AGE` (or none at all) refuses the click with a reason.

use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::{NotifyJob, Refusal, TicketId, TicketStatus, ticket, usergroup};

use crate::helpers::*;

const LONG: Duration = Duration::from_secs(600);
const OPS: &str = "S0OPS";

impl TestApp {
    /// A pending ticket naming `approvers` and the group `OPS`, needing `approvals`.
    async fn group_ticket(&self, approvers: &[&str], approvals: u32) -> TicketId {
        self.open_with(approvers, LONG, |t| {
            t.approver_groups = vec![OPS.to_owned()];
            t.approvals = approvals;
        })
        .await
    }

    /// What the notifier writes after reading the group from Slack.
    async fn snapshot(&self, users: &[&str]) {
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        usergroup::record(&self.db.pool, OPS, &users).await.unwrap();
    }

    async fn press_as_member(&self, action: &str, id: TicketId, user: &str) {
        let body = form(&click_payload(action, &id.to_string(), user, user));
        assert_eq!(self.post_signed(body).await.status(), 200);
    }

    async fn counted_votes(&self, id: TicketId) -> usize {
        ticket::votes(&self.db.pool, id).await.unwrap().len()
    }
}

fn refused(id: TicketId, user: &str, refusal: Refusal) -> NotifyJob {
    NotifyJob::RefusedClick {
        ticket_id: Some(id),
        user_id: user.into(),
        channel: "C0APPROVE".into(),
        refusal,
    }
}

fn unknown() -> Refusal {
    Refusal::MembershipUnknown {
        group: OPS.to_owned(),
    }
}

#[tokio::test]
async fn a_member_approves_and_a_non_member_is_refused() {
    // The global list names nobody of the group: a ticket's groups replace it.
    let app = spawn_with(|c| c.approvers = vec!["U0GLOBAL".into()]).await;
    app.snapshot(&["U0ALICE"]).await;
    let id = app.group_ticket(&[], 1).await;

    app.press_as_member(APPROVE_ACTION_ID, id, "U0BOB").await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0GLOBAL").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(app.counted_votes(id).await, 0);

    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0ALICE"));
    assert_eq!(
        app.jobs().await,
        vec![
            refused(id, "U0BOB", Refusal::NotAnApprover),
            refused(id, "U0GLOBAL", Refusal::NotAnApprover),
            NotifyJob::TicketClosed { ticket_id: id },
        ]
    );
}

#[tokio::test]
async fn a_member_may_deny_and_a_non_member_may_not() {
    let app = spawn_app().await;
    app.snapshot(&["U0ALICE"]).await;
    let id = app.group_ticket(&[], 1).await;
    app.press_as_member(DENY_ACTION_ID, id, "U0BOB").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    app.press_as_member(DENY_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Denied);
}

#[tokio::test]
async fn a_removed_member_is_refused_once_the_snapshot_is_updated() {
    let app = spawn_app().await;
    app.snapshot(&["U0ALICE", "U0BOB"]).await;
    let id = app.group_ticket(&[], 1).await;
    // The next refresh no longer lists alice.
    app.snapshot(&["U0BOB"]).await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(app.counted_votes(id).await, 0);
    app.press_as_member(APPROVE_ACTION_ID, id, "U0BOB").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    assert_eq!(
        app.jobs().await,
        vec![
            refused(id, "U0ALICE", Refusal::NotAnApprover),
            NotifyJob::TicketClosed { ticket_id: id },
        ]
    );
}

#[tokio::test]
async fn a_stale_or_missing_snapshot_fails_closed_until_a_refresh_lands() {
    let app = spawn_with(|c| c.membership_max_age = Duration::from_secs(1)).await;
    let id = app.group_ticket(&[], 1).await;
    // Never fetched (Slack failed when the request was posted): nobody can say.
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    app.snapshot(&["U0ALICE"]).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Fetched, but the refreshes since failed: too old to count, even for a member.
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    app.press_as_member(DENY_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(app.counted_votes(id).await, 0);
    // A refresh lands: the same click now counts.
    app.snapshot(&["U0ALICE"]).await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    assert_eq!(
        app.jobs().await,
        vec![
            refused(id, "U0ALICE", unknown()),
            refused(id, "U0ALICE", unknown()),
            refused(id, "U0ALICE", unknown()),
            NotifyJob::TicketClosed { ticket_id: id },
        ]
    );
    assert!(
        app.metrics()
            .await
            .contains("airlock_webhook_requests_total{outcome=\"refused_membership_unknown\"} 3")
    );
}

#[tokio::test]
async fn a_listed_approver_needs_no_snapshot() {
    let app = spawn_app().await;
    let id = app.group_ticket(&["U0CAROL"], 1).await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0CAROL").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
}

#[tokio::test]
async fn one_listed_approver_and_one_group_member_make_a_quorum() {
    let app = spawn_app().await;
    app.snapshot(&["U0ALICE", "U0CAROL"]).await;
    let id = app.group_ticket(&["U0CAROL"], 2).await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0CAROL").await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0BOB").await;
    // Listed and a member: still one person.
    app.press_as_member(APPROVE_ACTION_ID, id, "U0CAROL").await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending);
    assert_eq!(t.approved_by_ids, ["U0CAROL"]);
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.approved_by_ids, ["U0CAROL", "U0ALICE"]);
    assert_eq!(
        app.jobs().await,
        vec![
            NotifyJob::TicketVoted { ticket_id: id },
            refused(id, "U0BOB", Refusal::NotAnApprover),
            refused(id, "U0CAROL", Refusal::AlreadyVoted),
            NotifyJob::TicketClosed { ticket_id: id },
        ]
    );
}

#[tokio::test]
async fn the_owner_is_never_counted_even_as_a_member() {
    let app = spawn_app().await;
    app.snapshot(&["U0ALICE", "U0OWNER"]).await;
    let id = app
        .open_with(&[], LONG, |t| {
            t.approver_groups = vec![OPS.to_owned()];
            t.owner = Some("U0OWNER".into());
        })
        .await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0OWNER").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    assert_eq!(
        app.jobs().await,
        vec![
            refused(id, "U0OWNER", Refusal::SelfApproval),
            NotifyJob::TicketClosed { ticket_id: id },
        ]
    );
}

#[tokio::test]
async fn another_groups_snapshot_does_not_count() {
    let app = spawn_app().await;
    usergroup::record(&app.db.pool, "S0OTHER", &["U0ALICE".to_owned()])
        .await
        .unwrap();
    app.snapshot(&["U0BOB"]).await;
    let id = app.group_ticket(&[], 1).await;
    app.press_as_member(APPROVE_ACTION_ID, id, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(
        app.jobs().await,
        vec![refused(id, "U0ALICE", Refusal::NotAnApprover)]
    );
}
