//! Races the issue names: a decision against the timeout, and decisions against each other.

use std::time::Duration;

use airlock_shared::TicketStatus;
use airlock_shared::ticket::{Decided, Decision};
use serde_json::json;

use super::helpers::*;

/// Whatever wins, the agent's answer, the ticket and the upstream agree.
async fn race_decision_against_timeout(decision: Decision, offset_ms: i64) {
    let app = spawn_with(Opts {
        approval_timeout: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let (url, s) = (app.url(), sid.clone());
    let call = spawn_call(
        url,
        s,
        1,
        "create_refund",
        json!({"amount": 500}),
        "application/json",
    );
    let id = app.wait_for_request().await;
    let t = app.ticket(id).await;
    // Aim the click at the ticket's own deadline, a little before or after.
    let target = t.expires_at + chrono::Duration::milliseconds(offset_ms);
    let wait = (target - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    let clicked = decide(&app.db, &app.redis, id, decision, true).await;
    let answer = call.await.unwrap();
    let ticket = app.ticket(id).await;
    let ran = app.upstream.calls().len();
    match (&clicked, ticket.status) {
        (Decided::Changed(_), TicketStatus::Executed) => {
            assert_eq!(decision, Decision::Approve);
            assert!(answer.code().is_none(), "approved wins: {:?}", answer.body);
            assert_eq!(ran, 1);
        }
        (Decided::Changed(_), TicketStatus::Denied) => {
            assert_eq!(answer.message(), "approval denied");
            assert_eq!(ran, 0);
        }
        (Decided::Unchanged(_), TicketStatus::Expired) => {
            assert_eq!(answer.message(), "approval timeout");
            assert_eq!(ran, 0);
        }
        other => panic!(
            "inconsistent outcome: click {:?}, ticket {:?}, answer {:?}",
            other.0, other.1, answer.body
        ),
    }
}

#[tokio::test]
async fn approve_racing_the_timeout_is_consistent() {
    for offset in [-40, -5, 0, 5, 40] {
        race_decision_against_timeout(Decision::Approve, offset).await;
    }
}

#[tokio::test]
async fn deny_racing_the_timeout_is_consistent() {
    for offset in [-40, -5, 0, 5, 40] {
        race_decision_against_timeout(Decision::Deny, offset).await;
    }
}

#[tokio::test]
async fn concurrent_clicks_record_exactly_one_outcome_which_the_gateway_acts_on() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let (url, s) = (app.url(), sid.clone());
    let call = spawn_call(
        url,
        s,
        1,
        "create_refund",
        json!({"amount": 500}),
        "application/json",
    );
    let id = app.wait_for_request().await;
    let mut clicks = Vec::new();
    for i in 0..20 {
        let (pool, d) = (
            app.db.pool.clone(),
            if i % 2 == 0 {
                Decision::Approve
            } else {
                Decision::Deny
            },
        );
        clicks.push(tokio::spawn(async move {
            airlock_shared::ticket::decide(&pool, id, d, &format!("U{i}"), "someone", None)
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for c in clicks {
        if let Decided::Changed(t) = c.await.unwrap() {
            winners.push(t.status);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one click changes the ticket");
    let mut conn = app.redis.conn().await;
    airlock_shared::signal::publish(
        &mut conn,
        &app.redis.keys,
        &airlock_shared::DecisionSignal {
            ticket_id: id,
            status: winners[0],
        },
    )
    .await
    .unwrap();
    let answer = call.await.unwrap();
    match winners[0] {
        TicketStatus::Approved => {
            assert!(answer.code().is_none());
            assert_eq!(app.ticket(id).await.status, TicketStatus::Executed);
            assert_eq!(app.upstream.calls().len(), 1);
        }
        TicketStatus::Denied => {
            assert_eq!(answer.message(), "approval denied");
            assert!(app.upstream.calls().is_empty());
        }
        other => panic!("unexpected winner {other:?}"),
    }
}

#[tokio::test]
async fn a_forged_signal_does_not_change_the_outcome() {
    let app = spawn_with(Opts {
        approval_timeout: Duration::from_secs(2),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let (url, s) = (app.url(), sid.clone());
    let call = spawn_call(
        url,
        s,
        1,
        "create_refund",
        json!({"amount": 500}),
        "application/json",
    );
    let id = app.wait_for_request().await;
    // "Approved!" says the signal; the row says pending. The row wins.
    let mut conn = app.redis.conn().await;
    airlock_shared::signal::publish(
        &mut conn,
        &app.redis.keys,
        &airlock_shared::DecisionSignal {
            ticket_id: id,
            status: TicketStatus::Approved,
        },
    )
    .await
    .unwrap();
    let answer = call.await.unwrap();
    assert_eq!(answer.message(), "approval timeout");
    assert!(app.upstream.calls().is_empty());
}
