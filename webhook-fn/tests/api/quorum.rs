//! Two-person approvals, the owner's refused approval, and the call fingerprint on the buttons.

use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::canonical::short_fingerprint;
use airlock_shared::ticket;
use airlock_shared::{DecisionSignal, NotifyJob, Refusal, TicketId, TicketStatus};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(150);
const LONG: Duration = Duration::from_secs(600);

impl TestApp {
    async fn quorum_ticket(&self, approvals: u32, owner: Option<&str>) -> TicketId {
        self.open_with(&[], LONG, |t| {
            t.approvals = approvals;
            t.owner = owner.map(str::to_owned);
        })
        .await
    }

    async fn click(&self, action: &str, value: &str, user: &str) {
        let body = form(&click_payload(action, value, user, &user.to_lowercase()));
        assert_eq!(self.post_signed(body).await.status(), 200);
    }

    async fn vote_rows(&self, id: TicketId) -> Vec<(String, String)> {
        ticket::votes(&self.db.pool, id)
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.user_id, v.vote))
            .collect()
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

#[tokio::test]
async fn two_distinct_approvals_decide_and_the_first_only_shows_progress() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.quorum_ticket(2, None).await;

    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0ALICE")
        .await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending, "one of two approvals");
    assert_eq!(t.approved_by_ids, ["U0ALICE"]);
    assert_eq!(t.decided_by_id, None);
    assert!(signals.drain(QUIET).await.is_empty(), "no decision yet");
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::TicketVoted { ticket_id: id }]
    );

    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0BOB").await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.approved_by_ids, ["U0ALICE", "U0BOB"]);
    assert_eq!(t.approved_by_names, ["u0alice", "u0bob"]);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0BOB"));
    assert_eq!(
        signals.drain(QUIET).await,
        vec![DecisionSignal {
            ticket_id: id,
            status: TicketStatus::Approved
        }]
    );
    assert_eq!(
        app.jobs().await,
        vec![
            NotifyJob::TicketVoted { ticket_id: id },
            NotifyJob::TicketClosed { ticket_id: id }
        ]
    );
    assert_eq!(
        app.vote_rows(id).await,
        [
            ("U0ALICE".to_owned(), "approve".to_owned()),
            ("U0BOB".to_owned(), "approve".to_owned())
        ]
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("airlock_webhook_requests_total{outcome=\"voted\"} 1"));
    assert!(metrics.contains("airlock_webhook_requests_total{outcome=\"decided\"} 1"));
}

#[tokio::test]
async fn the_same_person_twice_counts_once() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.quorum_ticket(2, None).await;
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0ALICE")
        .await;
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0ALICE")
        .await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending);
    assert_eq!(t.approved_by_ids, ["U0ALICE"]);
    assert!(signals.drain(QUIET).await.is_empty());
    assert_eq!(
        app.jobs().await,
        vec![
            NotifyJob::TicketVoted { ticket_id: id },
            refused(id, "U0ALICE", Refusal::AlreadyVoted)
        ]
    );
    assert_eq!(app.vote_rows(id).await.len(), 1);
}

#[tokio::test]
async fn one_deny_denies_after_an_approval() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.quorum_ticket(2, None).await;
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0ALICE")
        .await;
    app.click(DENY_ACTION_ID, &id.to_string(), "U0BOB").await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Denied);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0BOB"));
    assert_eq!(
        signals.drain(QUIET).await,
        vec![DecisionSignal {
            ticket_id: id,
            status: TicketStatus::Denied
        }]
    );
    // A late approval changes nothing.
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0CAT").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Denied);
    assert_eq!(
        app.vote_rows(id).await,
        [
            ("U0ALICE".to_owned(), "approve".to_owned()),
            ("U0BOB".to_owned(), "deny".to_owned())
        ]
    );
}

#[tokio::test]
async fn two_approvers_in_the_same_instant_give_two_votes_and_one_approval() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let id = app.quorum_ticket(2, None).await;
        let (a, b) = (approve_body(id, "U0ALICE"), approve_body(id, "U0BOB"));
        let (ra, rb) = tokio::join!(app.post_signed(a), app.post_signed(b));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
        ids.push(id);
    }
    for id in &ids {
        let t = app.ticket(*id).await;
        assert_eq!(t.status, TicketStatus::Approved, "{id}: no vote lost");
        let mut by = t.approved_by_ids.clone();
        by.sort();
        assert_eq!(by, ["U0ALICE", "U0BOB"]);
        assert_eq!(app.vote_rows(*id).await.len(), 2);
    }
    let got = signals.drain(Duration::from_millis(500)).await;
    assert_eq!(got.len(), 50, "exactly one decision per ticket");
    assert!(got.iter().all(|s| s.status == TicketStatus::Approved));
    let jobs = app.jobs().await;
    let closed = jobs
        .iter()
        .filter(|j| matches!(j, NotifyJob::TicketClosed { .. }))
        .count();
    let voted = jobs
        .iter()
        .filter(|j| matches!(j, NotifyJob::TicketVoted { .. }))
        .count();
    assert_eq!((closed, voted), (50, 50));
    assert!(
        !jobs
            .iter()
            .any(|j| matches!(j, NotifyJob::RefusedClick { .. }))
    );
}

#[tokio::test]
async fn the_owner_of_the_agent_cannot_approve_its_call() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.quorum_ticket(1, Some("U0CAROL")).await;
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0CAROL")
        .await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending);
    assert!(t.approved_by_ids.is_empty());
    assert!(signals.drain(QUIET).await.is_empty());
    assert_eq!(
        app.jobs().await,
        vec![refused(id, "U0CAROL", Refusal::SelfApproval)]
    );
    assert!(app.vote_rows(id).await.is_empty());
    // Someone else can; and the owner may still stop a call of their own agent.
    app.click(APPROVE_ACTION_ID, &id.to_string(), "U0BOB").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    let other = app.quorum_ticket(1, Some("U0CAROL")).await;
    app.click(DENY_ACTION_ID, &other.to_string(), "U0CAROL")
        .await;
    assert_eq!(app.ticket(other).await.status, TicketStatus::Denied);
}

#[tokio::test]
async fn a_click_only_approves_the_call_its_message_showed() {
    let app = spawn_app().await;
    let id = app.quorum_ticket(1, None).await;
    let shown = app.ticket(id).await.fingerprint.unwrap();
    // The fingerprint of another call (other arguments), as a message about it would carry.
    let other = airlock_shared::canonical::fingerprint(
        "payments.transfer",
        &serde_json::json!({"amount": 100000}),
        None,
    );
    let wrong = format!("{id}:{}", short_fingerprint(&other));
    app.click(APPROVE_ACTION_ID, &wrong, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(
        app.jobs().await,
        vec![refused(id, "U0ALICE", Refusal::WrongCall)]
    );
    let right = format!("{id}:{}", short_fingerprint(&shown));
    app.click(APPROVE_ACTION_ID, &right, "U0ALICE").await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
}

#[tokio::test]
async fn votes_racing_in_postgres_are_both_counted_and_decide_once() {
    // Beneath the batcher: two statements on two connections, released together, so that the
    // second waits on the row the first locked.
    let app = spawn_app().await;
    let pool = &app.db.pool;
    for _ in 0..50 {
        let id = app.quorum_ticket(2, None).await;
        let vote = |user: &'static str| async move {
            let clicker = ticket::Clicker {
                id: user,
                name: user,
                global_approvers: &[],
                membership_max_age: std::time::Duration::ZERO,
            };
            ticket::decide_as(
                pool,
                id,
                airlock_shared::Decision::Approve,
                clicker,
                None,
                None,
            )
            .await
            .unwrap()
        };
        let (a, b) = tokio::join!(vote("U0ALICE"), vote("U0BOB"));
        let statuses: Vec<TicketStatus> = [a, b]
            .into_iter()
            .map(|d| match d {
                ticket::Decided::Changed(t) => t.status,
                other => panic!("a vote was lost: {other:?}"),
            })
            .collect();
        let approvals = statuses
            .iter()
            .filter(|s| **s == TicketStatus::Approved)
            .count();
        assert_eq!(approvals, 1, "{id}: {statuses:?}");
        assert!(statuses.contains(&TicketStatus::Pending));
        assert_eq!(app.vote_rows(id).await.len(), 2);
    }
}
