//! What a standing grant adds to the messages: the "Approve for …" button, then the grant's end
//! with a Revoke button, then who revoked it; checked with our fake's Slack rules and the
//! slack-sdk Block Kit models, and end to end through the worker.

use std::time::Duration;

use airlock_shared::buttons::{
    APPROVE_ACTION_ID, DENY_ACTION_ID, GRANT_ACTION_ID, REVOKE_ACTION_ID,
};
use airlock_shared::grant::{self, Grant, GrantOffer, GrantScope, GrantVote, Revoker};
use airlock_shared::ticket::{ClickDecision, Decision};
use airlock_shared::{Refusal, Ticket};
use airlock_slack_fake::fake::validate_blocks;
use notifier_worker::message;
use serde_json::Value;

use crate::support::{TestApp, setup, slack_sdk_validate};

const T: Duration = Duration::from_secs(10);

fn offer(secs: u64, scope: GrantScope) -> GrantOffer {
    GrantOffer {
        lasts: Duration::from_secs(secs),
        scope,
        rule_hash: "cd".repeat(32),
    }
}

fn buttons(blocks: &Value) -> Vec<Value> {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().unwrap().clone())
        .collect()
}

fn valid(blocks: &Value) {
    assert!(
        validate_blocks(blocks).is_empty(),
        "{:?}",
        validate_blocks(blocks)
    );
    slack_sdk_validate(blocks);
}

/// Approves the ticket with "Approve for" as U0ANA, returning the decided ticket and its grant.
async fn approve_for(app: &TestApp, t: &Ticket) -> (Ticket, Grant) {
    let click = ClickDecision {
        ticket: t.id,
        decision: Decision::Approve,
        user_id: "U0ANA".into(),
        user_name: "ana".into(),
        message: None,
        allowed_by_global: true,
        fingerprint: None,
        membership_max_age: std::time::Duration::ZERO,
    };
    match grant::vote_with_grant(&app.db.pool, &click, &[])
        .await
        .unwrap()
    {
        GrantVote::Voted(_, Some(g)) => (app.get(t.id).await, *g),
        other => panic!("no grant: {other:?}"),
    }
}

#[tokio::test]
async fn a_rule_with_a_grant_adds_a_third_button_named_for_its_duration() {
    let app = setup().await;
    for (secs, scope, label) in [
        (3600, GrantScope::Tool, "Approve for 1 h"),
        (5400, GrantScope::Arguments, "Approve for 1 h 30 min"),
        (600, GrantScope::Tool, "Approve for 10 min"),
    ] {
        let t = app.ticket(|n| n.grant = Some(offer(secs, scope))).await;
        let m = message::approval_request(&t);
        valid(&m.blocks);
        let b = buttons(&m.blocks);
        assert_eq!(b.len(), 3);
        assert_eq!(
            [&b[0]["action_id"], &b[1]["action_id"], &b[2]["action_id"]],
            [APPROVE_ACTION_ID, DENY_ACTION_ID, GRANT_ACTION_ID]
        );
        assert_eq!(b[2]["text"]["text"], label);
        // The same value as Approve: the ticket and the call's fingerprint.
        assert_eq!(b[2]["value"], b[0]["value"]);
        assert!(b[2]["value"].as_str().unwrap().contains(':'));
        assert!(
            b[2]["confirm"]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("agent-billing")
        );
    }
    let plain = app.ticket(|_| {}).await;
    assert_eq!(buttons(&message::approval_request(&plain).blocks).len(), 2);
}

#[tokio::test]
async fn the_decided_message_shows_the_grant_then_who_revoked_it() {
    let app = setup().await;
    let t = app
        .ticket(|n| n.grant = Some(offer(3600, GrantScope::Tool)))
        .await;
    let (t, g) = approve_for(&app, &t).await;
    let now = chrono::Utc::now();

    let m = message::closed_with_grant(&t, Some(&g), now);
    valid(&m.blocks);
    let text = m.blocks.to_string();
    let until = g.expires_at.format("%H:%M UTC").to_string();
    assert!(
        text.contains(&format!("Grant active until {until}")),
        "{text}"
    );
    let b = buttons(&m.blocks);
    assert_eq!(b.len(), 1, "only Revoke: {b:?}");
    assert_eq!(b[0]["action_id"], REVOKE_ACTION_ID);
    assert_eq!(b[0]["value"], message_value(&t));
    assert!(m.text.contains("grant active until"));

    // Ended by time: no button, the end shown.
    let later = message::closed_with_grant(&t, Some(&g), g.expires_at);
    valid(&later.blocks);
    assert!(buttons(&later.blocks).is_empty());
    assert!(
        later
            .blocks
            .to_string()
            .contains(&format!("Grant ended at {until}"))
    );

    // Someone outside the ticket's approvers cannot revoke; an approver can.
    let outsider = Revoker {
        id: "U0BOB",
        name: "bob",
        allowed_by_global: true,
        operator: false,
    };
    assert!(
        grant::revoke(&app.db.pool, t.id.0, outsider)
            .await
            .unwrap()
            .is_none()
    );
    let by = Revoker {
        id: "U0ANA",
        name: "ana",
        allowed_by_global: true,
        operator: false,
    };
    let g = grant::revoke(&app.db.pool, t.id.0, by)
        .await
        .unwrap()
        .unwrap();
    let m = message::closed_with_grant(&t, Some(&g), now);
    valid(&m.blocks);
    assert!(buttons(&m.blocks).is_empty());
    assert!(
        m.blocks
            .to_string()
            .contains("Grant revoked by <@U0ANA> (ana)"),
        "{}",
        m.blocks
    );

    let r = message::refusal(&Refusal::NoGrant, Some(&t));
    assert!(r.text.contains("no standing grant"), "{}", r.text);
}

fn message_value(t: &Ticket) -> String {
    format!(
        "{}:{}",
        t.id,
        airlock_shared::canonical::short_fingerprint(t.fingerprint.as_deref().unwrap())
    )
}

#[tokio::test]
async fn the_worker_draws_the_grant_and_redraws_it_after_a_revoke() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let t = app
        .ticket(|n| n.grant = Some(offer(3600, GrantScope::Tool)))
        .await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    let posted = app.slack.messages("C0APPROVALS");
    assert_eq!(buttons(&posted[0].blocks).len(), 3);

    approve_for(&app, &t).await;
    app.closed(&t).await;
    app.slack.wait_for_calls("chat.update", 1, T).await;
    let shown = app.slack.messages("C0APPROVALS")[0].blocks.clone();
    assert!(shown.to_string().contains("Grant active until"), "{shown}");
    assert_eq!(buttons(&shown)[0]["action_id"], REVOKE_ACTION_ID);

    let by = Revoker {
        id: "U0ANA",
        name: "ana",
        allowed_by_global: true,
        operator: false,
    };
    grant::revoke(&app.db.pool, t.id.0, by)
        .await
        .unwrap()
        .unwrap();
    app.closed(&t).await;
    app.slack.wait_for_calls("chat.update", 2, T).await;
    let shown = app.slack.messages("C0APPROVALS")[0].blocks.clone();
    assert!(
        shown
            .to_string()
            .contains("Grant revoked by <@U0ANA> (ana)"),
        "{shown}"
    );
    assert!(buttons(&shown).is_empty());
}
