//! Held calls and the people who decide them.

use std::time::Duration;

use airlock_shared::{TicketId, TicketStatus};
use rmcp::RoleClient;
use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use serde_json::{Value, json};

use crate::stack::*;

const WAIT: Duration = Duration::from_secs(20);

fn big_refund() -> rmcp::model::CallToolRequestParams {
    call(
        "create_refund",
        json!({"charge_id": "ch_1001", "amount": 250, "currency": "usd", "reason": "parcel lost"}),
    )
}

fn has_buttons(m: &Value) -> bool {
    m["blocks"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["type"] == "actions"))
}

fn rendered(m: &Value) -> &str {
    m["rendered"].as_str().unwrap_or_default()
}

/// A fresh stack with the big refund held for a person.
struct Waiting {
    s: Stack,
    /// Keeps the MCP session open.
    _client: RunningService<RoleClient, ()>,
    held: CallHandle,
    message: Value,
    ts: String,
    id: TicketId,
}

async fn waiting_refund() -> Waiting {
    let s = Stack::start().await;
    let client = s.client().await;
    let Held { call, message, ts } = s.hold(&client, big_refund(), WAIT).await;
    let id = Stack::ticket_of(&message);
    Waiting {
        s,
        _client: client,
        held: call,
        message,
        ts,
        id,
    }
}

/// Clicks as `user` and asserts that the webhook took the click.
async fn click_taken(s: &Stack, user: &str, ts: &str, action_id: &str) {
    let click = s.click(user, ts, action_id).await;
    assert_eq!(click["webhook_status"], 200, "{click}");
}

/// The held call's answer.
async fn answer(held: CallHandle) -> Result<CallToolResult, rmcp::ServiceError> {
    tokio::time::timeout(WAIT, held)
        .await
        .expect("call completes")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_runs_the_call_once_and_updates_the_message() {
    let Waiting {
        s,
        _client,
        held,
        message,
        ts,
        id,
    } = waiting_refund().await;
    let text = rendered(&message);
    for want in [
        "create_refund",
        "250",
        "demo-agent",
        "big refunds need a person",
    ] {
        assert!(text.contains(want), "{want:?} not in the message:\n{text}");
    }
    assert_eq!(s.ticket(id).await.status, TicketStatus::Pending);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the call must wait for a person");
    assert!(s.executed().await.is_empty());

    click_taken(&s, ALICE, &ts, APPROVE).await;

    let result = answer(held).await;
    let result = result.expect("approved call succeeds");
    let body = result_json(&result);
    assert_eq!(body["refund"]["amount"], 250.0);
    assert_eq!(body["refund"]["charge_id"], "ch_1001");

    let m = s
        .wait_message(&ts, WAIT, "approved without buttons", |m| {
            rendered(m).contains("Approved") && !has_buttons(m)
        })
        .await;
    assert!(
        rendered(&m).contains("@alice"),
        "decider missing: {}",
        rendered(&m)
    );
    assert_eq!(s.ticket(id).await.status, TicketStatus::Executed);
    let t = s.ticket(id).await;
    assert_eq!(t.decided_by_id.as_deref(), Some(ALICE));
    assert_eq!(t.message_ts.as_deref(), Some(ts.as_str()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.messages().await.len(),
        1,
        "exactly one message per ticket"
    );
    assert_eq!(
        s.executed().await.len(),
        1,
        "the upstream ran the call once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_refuses_the_call_and_says_who() {
    let Waiting {
        s,
        _client,
        held,
        ts,
        id,
        ..
    } = waiting_refund().await;

    click_taken(&s, ALICE, &ts, DENY).await;
    let result = answer(held).await;
    assert_refused(&result, "approval denied");
    s.wait_message(&ts, WAIT, "denied without buttons", |m| {
        rendered(m).contains("Denied") && rendered(m).contains("@alice") && !has_buttons(m)
    })
    .await;
    assert_eq!(s.ticket(id).await.status, TicketStatus::Denied);
    assert!(
        s.executed().await.is_empty(),
        "a denied call never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out_and_its_buttons_go() {
    let policy = demo_policy().replace("timeout: 10m", "timeout: 3s");
    assert!(policy.contains("timeout: 3s"), "demo policy changed shape");
    let s = Stack::start_with(Options {
        policy,
        ..Options::default()
    })
    .await;
    let client = s.client().await;
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(WAIT, client.peer().call_tool(big_refund()))
        .await
        .expect("the gateway answers at the deadline");
    assert_refused(&result, "approval timeout");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "answered before the deadline"
    );
    let msgs = s.wait_messages(1, WAIT).await;
    let ts = msgs[0]["ts"].as_str().unwrap().to_owned();
    let m = s
        .wait_message(&ts, WAIT, "expired without buttons", |m| {
            rendered(m).contains("Expired") && !has_buttons(m)
        })
        .await;
    assert_eq!(m["updates"], 1);
    // The button is gone, so a late click cannot even be sent.
    let late = s.click(ALICE, &ts, APPROVE).await;
    assert_eq!(late["ok"], false, "{late}");
    assert!(s.executed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_approver_gets_an_ephemeral_and_the_call_stays_held() {
    let Waiting {
        s,
        _client,
        held,
        ts,
        id,
        ..
    } = waiting_refund().await;

    // Mallory is in the workspace but not among the rule's approvers.
    click_taken(&s, MALLORY, &ts, APPROVE).await;
    let deadline = std::time::Instant::now() + WAIT;
    let eph = loop {
        let slack = s.slack().await;
        if let Some(e) = slack["ephemerals"]
            .as_array()
            .and_then(|e| e.first())
            .cloned()
        {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ephemeral for mallory\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(eph["user"], MALLORY);
    assert!(rendered(&eph).contains("not an approver"), "{eph:#}");
    assert_eq!(s.ticket(id).await.status, TicketStatus::Pending);
    assert!(
        !held.is_finished(),
        "a refused click must not release the call"
    );
    let m = s.messages().await;
    assert!(
        has_buttons(&m[0]),
        "the buttons stay for the real approvers"
    );

    s.click(ALICE, &ts, APPROVE).await;
    let result = answer(held).await;
    result_json(&result.expect("approved by alice"));
    assert_eq!(s.executed().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_click_runs_the_call_once() {
    let Waiting {
        s,
        _client,
        held,
        ts,
        id,
        ..
    } = waiting_refund().await;

    tokio::join!(
        click_taken(&s, ALICE, &ts, APPROVE),
        click_taken(&s, ALICE, &ts, APPROVE)
    );
    let result = answer(held).await;
    result_json(&result.expect("approved"));
    s.wait_message(&ts, WAIT, "approved", |m| !has_buttons(m))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.executed().await.len(), 1, "two clicks, one execution");
    assert_eq!(s.messages().await.len(), 1);
    assert_eq!(s.ticket(id).await.status, TicketStatus::Executed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_and_deny_at_once_exactly_one_wins() {
    let Waiting {
        s,
        _client,
        held,
        ts,
        id,
        ..
    } = waiting_refund().await;

    tokio::join!(
        click_taken(&s, ALICE, &ts, APPROVE),
        click_taken(&s, "U0BOB", &ts, DENY)
    );
    let result = answer(held).await;
    let status = s.ticket(id).await.status;
    match status {
        TicketStatus::Executed => {
            result_json(&result.expect("approval won"));
            assert_eq!(s.executed().await.len(), 1);
        }
        TicketStatus::Denied => {
            assert_refused(&result, "approval denied");
            assert!(s.executed().await.is_empty());
        }
        other => panic!("unexpected final status {other:?}"),
    }
}
