//! The grant buttons: "Approve for" is an approval vote that, deciding, makes exactly one grant
//! in the decision's transaction; Revoke ends it; forged, unknown and stale clicks change nothing.

use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, GRANT_ACTION_ID, REVOKE_ACTION_ID};
use airlock_shared::canonical::short_fingerprint;
use airlock_shared::grant::{self, Grant, GrantOffer, GrantScope};
use airlock_shared::{NotifyJob, Refusal, TicketId, TicketStatus};

use crate::helpers::*;

const LONG: Duration = Duration::from_secs(600);

fn offer() -> GrantOffer {
    GrantOffer {
        lasts: Duration::from_secs(3600),
        scope: GrantScope::Tool,
        rule_hash: "ab".repeat(32),
    }
}

impl TestApp {
    async fn grant_ticket(&self, approvers: &[&str], approvals: u32) -> TicketId {
        self.open_with(approvers, LONG, |t| {
            t.approvals = approvals;
            t.grant = Some(offer());
        })
        .await
    }

    async fn press(&self, action: &str, id: TicketId, user: &str) -> u16 {
        let t = self.ticket(id).await;
        let value = format!(
            "{id}:{}",
            short_fingerprint(t.fingerprint.as_deref().unwrap())
        );
        let body = form(&click_payload(action, &value, user, &user.to_lowercase()));
        self.post_signed(body).await.status().as_u16()
    }

    async fn grant_of(&self, id: TicketId) -> Option<Grant> {
        grant::for_ticket(&self.db.pool, id).await.unwrap()
    }

    async fn grant_count(&self) -> i64 {
        airlock_shared::testing::grant_count(&self.db.pool)
            .await
            .unwrap()
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
async fn approve_for_decides_and_makes_one_grant_even_when_clicked_twice() {
    let app = spawn_app().await;
    let id = app.grant_ticket(&[], 1).await;
    assert_eq!(app.press(GRANT_ACTION_ID, id, "U0ALICE").await, 200);
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    let g = app.grant_of(id).await.expect("a grant");
    assert_eq!(
        (g.principal.as_str(), g.tool.as_str(), g.rule.as_str()),
        ("agent-a", "payments.transfer", "payments")
    );
    assert_eq!(
        (g.scope, g.request_hash.as_deref()),
        (GrantScope::Tool, None)
    );
    assert_eq!(g.rule_hash, offer().rule_hash);
    assert_eq!(
        (g.created_by_id.as_str(), g.created_by_name.as_str()),
        ("U0ALICE", "u0alice")
    );
    assert_eq!(
        (g.expires_at - t.decided_at.unwrap()).num_milliseconds(),
        3_600_000
    );

    assert_eq!(app.press(GRANT_ACTION_ID, id, "U0ALICE").await, 200);
    assert_eq!(app.press(GRANT_ACTION_ID, id, "U0BOB").await, 200);
    assert_eq!(app.grant_count().await, 1);
    let jobs = app.jobs().await;
    assert_eq!(jobs[0], NotifyJob::TicketClosed { ticket_id: id });
    assert!(
        matches!(
            &jobs[1],
            NotifyJob::RefusedClick {
                refusal: Refusal::AlreadyClosed { .. },
                ..
            }
        ),
        "{jobs:?}"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("airlock_webhook_requests_total{outcome=\"decided\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn people_clicking_at_once_make_at_most_one_grant() {
    let app = spawn_app().await;
    for round in 0..15 {
        // Quorum of one: two approvers at the same instant.
        let id = app.grant_ticket(&[], 1).await;
        let (a, b) = tokio::join!(
            app.press(GRANT_ACTION_ID, id, "U0ALICE"),
            app.press(GRANT_ACTION_ID, id, "U0BOB")
        );
        assert_eq!((a, b), (200, 200));
        assert!(app.grant_of(id).await.is_some(), "round {round}");
        // Quorum of two: one vote in, then two people complete it at the same instant.
        let id = app.grant_ticket(&[], 2).await;
        assert_eq!(app.press(GRANT_ACTION_ID, id, "U0CAROL").await, 200);
        assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
        assert!(
            app.grant_of(id).await.is_none(),
            "one vote of two makes no grant"
        );
        let (a, b) = tokio::join!(
            app.press(GRANT_ACTION_ID, id, "U0ALICE"),
            app.press(GRANT_ACTION_ID, id, "U0BOB")
        );
        assert_eq!((a, b), (200, 200));
        let t = app.ticket(id).await;
        assert_eq!(
            (t.status, t.approved_by_ids.len()),
            (TicketStatus::Approved, 2)
        );
        let g = app
            .grant_of(id)
            .await
            .expect("the deciding vote made the grant");
        assert_eq!(Some(g.created_by_id), t.decided_by_id);
    }
    assert_eq!(app.grant_count().await, 30);
}

#[tokio::test]
async fn the_deciding_vote_decides_whether_there_is_a_grant() {
    let app = spawn_app().await;
    let id = app.grant_ticket(&[], 2).await;
    assert_eq!(app.press(GRANT_ACTION_ID, id, "U0ALICE").await, 200);
    assert_eq!(app.press(APPROVE_ACTION_ID, id, "U0BOB").await, 200);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    assert!(app.grant_of(id).await.is_none(), "a plain Approve decided");
}

#[tokio::test]
async fn a_revoke_by_an_approver_ends_the_grant_and_redraws_the_message() {
    let app = spawn_app().await;
    let id = app.grant_ticket(&["U0ALICE", "U0BOB"], 1).await;
    assert_eq!(app.press(GRANT_ACTION_ID, id, "U0ALICE").await, 200);

    assert_eq!(app.press(REVOKE_ACTION_ID, id, "U0MALLORY").await, 200);
    assert!(
        app.grant_of(id).await.unwrap().revoked_at.is_none(),
        "not an approver"
    );
    assert_eq!(app.press(REVOKE_ACTION_ID, id, "U0BOB").await, 200);
    let g = app.grant_of(id).await.unwrap();
    assert!(g.revoked_at.is_some());
    assert_eq!(
        (g.revoked_by_id.as_deref(), g.revoked_by_name.as_deref()),
        (Some("U0BOB"), Some("u0bob"))
    );
    assert_eq!(app.press(REVOKE_ACTION_ID, id, "U0ALICE").await, 200);
    assert_eq!(
        app.jobs().await,
        vec![
            NotifyJob::TicketClosed { ticket_id: id },
            refused(id, "U0MALLORY", Refusal::NotAnApprover),
            NotifyJob::TicketClosed { ticket_id: id },
            refused(id, "U0ALICE", Refusal::NoGrant),
        ]
    );
    assert!(
        app.metrics()
            .await
            .contains("airlock_webhook_requests_total{outcome=\"revoked\"} 1")
    );
}

#[tokio::test]
async fn forged_unknown_stale_and_unoffered_clicks_change_nothing() {
    let app = spawn_app().await;
    // No offer on the ticket: "Approve for" is refused and the ticket stays pending.
    let plain = app.open_ticket(&[], LONG).await;
    assert_eq!(app.press(GRANT_ACTION_ID, plain, "U0ALICE").await, 200);
    assert_eq!(app.ticket(plain).await.status, TicketStatus::Pending);
    assert!(app.ticket(plain).await.approved_by_ids.is_empty());

    let id = app.grant_ticket(&[], 1).await;
    // Stale: the button showed another call.
    let stale = form(&click_payload(
        GRANT_ACTION_ID,
        &format!("{id}:0000000000000000"),
        "U0ALICE",
        "alice",
    ));
    assert_eq!(app.post_signed(stale).await.status(), 200);
    // Unknown ticket.
    let ghost = TicketId::new();
    let unknown = form(&click_payload(
        GRANT_ACTION_ID,
        &ghost.to_string(),
        "U0ALICE",
        "alice",
    ));
    assert_eq!(app.post_signed(unknown).await.status(), 200);
    let unknown_revoke = form(&click_payload(
        REVOKE_ACTION_ID,
        &ghost.to_string(),
        "U0ALICE",
        "alice",
    ));
    assert_eq!(app.post_signed(unknown_revoke).await.status(), 200);
    // Forged: not signed with our secret.
    let body = form(&click_payload(
        GRANT_ACTION_ID,
        &id.to_string(),
        "U0ALICE",
        "alice",
    ));
    let ts = unix_now().to_string();
    let bad = airlock_webhook_sign("not-the-secret", &ts, &body);
    assert_eq!(
        app.post_raw(body, Some(&ts), Some(&bad)).await.status(),
        400
    );

    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert_eq!(app.grant_count().await, 0);
    assert_eq!(
        app.jobs().await,
        vec![
            refused(plain, "U0ALICE", Refusal::NoGrant),
            refused(id, "U0ALICE", Refusal::WrongCall),
            refused(ghost, "U0ALICE", Refusal::UnknownTicket),
            refused(ghost, "U0ALICE", Refusal::UnknownTicket),
        ]
    );
}

fn airlock_webhook_sign(secret: &str, ts: &str, body: &[u8]) -> String {
    webhook_fn::signature::sign(secret, ts, body)
}
