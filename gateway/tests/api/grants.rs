//! Standing grants through the gateway: after an "Approve for" decision, calls in scope pass
//! without a ticket (each audited with the grant's ticket) until the grant expires, is revoked,
//! or its rule changes; calls out of scope are held as before.

use std::time::Duration;

use airlock_shared::grant::{self, Grant, GrantVote, Revoker};
use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::{ClickDecision, Decided, Decision};
use airlock_shared::{DecisionSignal, TicketId, TicketStatus, audit, signal};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::helpers::*;

const GRANTS: &str = r#"
version: 1
default: deny
validate_arguments: false
rules:
  - name: refunds
    tools: ["create_refund"]
    action: approve
    approvers: [U0123ABCD]
    grant: { for: 1h, scope: tool }
  - name: exact charges
    tools: ["create_charge"]
    action: approve
    approvers: [U0123ABCD]
    grant: { for: 1h, scope: arguments }
  - name: payouts
    tools: ["create_payout"]
    action: approve
    approvers: [U0123ABCD]
    grant: { for: 1h, scope: tool }
"#;

async fn grants_app() -> TestApp {
    spawn_with(Opts {
        policy: GRANTS.to_owned(),
        ..Opts::default()
    })
    .await
}

/// An "Approve for" click as the webhook records it, then the signal.
async fn approve_for(app: &TestApp, id: TicketId) -> Grant {
    let click = ClickDecision {
        ticket: id,
        decision: Decision::Approve,
        user_id: APPROVER.into(),
        user_name: "ana".into(),
        message: None,
        allowed_by_global: true,
        fingerprint: None,
        membership_max_age: std::time::Duration::ZERO,
    };
    let voted = grant::vote_with_grant(&app.db.pool, &click, &[])
        .await
        .unwrap();
    let GrantVote::Voted(Decided::Changed(t), Some(g)) = voted else {
        panic!("the click made no grant: {voted:?}")
    };
    assert_eq!(t.status, TicketStatus::Approved);
    let mut conn = app.redis.conn().await;
    let s = DecisionSignal {
        ticket_id: id,
        status: t.status,
    };
    signal::publish(&mut conn, &app.redis.keys, &s)
        .await
        .unwrap();
    *g
}

/// A call in the background as the agent with `token`, against the gateway at `url`.
fn spawn_as(
    url: String,
    token: &'static str,
    sid: String,
    tool: &str,
    args: Value,
) -> JoinHandle<Answer> {
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("mcp-session-id", sid)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        read_answer(resp).await
    })
}

fn requests(jobs: &[NotifyJob]) -> usize {
    jobs.iter()
        .filter(|j| matches!(j, NotifyJob::ApprovalRequest { .. }))
        .count()
}

/// Asserts that the call is held: approval request number `nth` appears; then the caller
/// gives up (its ticket is cancelled).
async fn assert_held(app: &TestApp, call: JoinHandle<Answer>, nth: usize) {
    let id = wait_for_request(&app.redis, nth).await;
    assert!(
        !call.is_finished(),
        "ticket {id} opened yet the call answered"
    );
    call.abort();
}

/// The audit rows of a session as (tool, outcome, ticket, grant ticket), once `n` are written.
async fn audit_rows(
    app: &TestApp,
    sid: &str,
    n: usize,
) -> Vec<(String, String, Option<uuid::Uuid>, Option<uuid::Uuid>)> {
    eventually(Duration::from_secs(5), || async {
        let rows = audit::grants_for_session(&app.db.pool, sid).await.unwrap();
        (rows.len() >= n).then_some(rows)
    })
    .await
    .expect("audit rows written")
}

#[tokio::test]
async fn a_tool_grant_lets_later_calls_pass_until_it_expires() {
    let app = grants_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_refund",
        json!({"amount": 1}),
        BOTH,
    );
    let id = app.wait_for_request().await;
    assert_eq!(app.ticket(id).await.grant_scope.as_deref(), Some("tool"));
    let g = approve_for(&app, id).await;
    assert_eq!(
        first.await.unwrap().tool_text()["arguments"],
        json!({"amount": 1})
    );
    assert!(g.expires_at > chrono::Utc::now() + chrono::Duration::minutes(59));

    // In scope: other arguments of the same tool, same principal. No ticket, no message.
    for (n, amount) in [2, 3].into_iter().enumerate() {
        let a = app
            .call(
                BILLING_TOKEN,
                &sid,
                10 + n as i64,
                "create_refund",
                json!({"amount": amount}),
            )
            .await;
        assert_eq!(
            a.tool_text()["arguments"],
            json!({"amount": amount}),
            "{a:?}"
        );
    }
    assert_eq!(requests(&app.jobs().await), 1);
    assert_eq!(app.upstream.calls().len(), 3);
    let rows = audit_rows(&app, &sid, 3).await;
    assert_eq!(
        rows[0],
        ("create_refund".into(), "approved".into(), Some(id.0), None)
    );
    for r in &rows[1..] {
        assert_eq!(
            r,
            &("create_refund".into(), "granted".into(), None, Some(id.0))
        );
    }

    // Out of scope: another tool (whose rule also offers grants), another principal.
    let other_tool = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid.clone(),
        "create_payout",
        json!({}),
    );
    assert_held(&app, other_tool, 1).await;
    let other_sid = app.initialize(OTHER_TOKEN).await;
    let other_agent = spawn_as(
        app.url(),
        OTHER_TOKEN,
        other_sid,
        "create_refund",
        json!({"amount": 2}),
    );
    assert_held(&app, other_agent, 2).await;

    // Expired: held again.
    assert!(
        grant::set_expiry(&app.db.pool, g.id, chrono::Utc::now())
            .await
            .unwrap()
    );
    let late = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid.clone(),
        "create_refund",
        json!({"amount": 4}),
    );
    assert_held(&app, late, 3).await;
}

#[tokio::test]
async fn an_arguments_grant_covers_only_the_same_call_and_a_revoke_ends_it() {
    let app = grants_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let args = json!({"customer": "c1", "amount": 5});
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_charge",
        args.clone(),
        BOTH,
    );
    let id = app.wait_for_request().await;
    let g = approve_for(&app, id).await;
    assert!(g.request_hash.is_some());
    first.await.unwrap();

    // The same arguments, keys in another order: the same canonical request.
    let same = app
        .call(
            BILLING_TOKEN,
            &sid,
            2,
            "create_charge",
            json!({"amount": 5, "customer": "c1"}),
        )
        .await;
    assert_eq!(same.tool_text()["arguments"], args);
    assert_eq!(requests(&app.jobs().await), 1);

    let other = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid.clone(),
        "create_charge",
        json!({"customer": "c1", "amount": 6}),
    );
    assert_held(&app, other, 1).await;

    let by = Revoker {
        id: APPROVER,
        name: "ana",
        allowed_by_global: false,
        operator: false,
    };
    let revoked = grant::revoke(&app.db.pool, id.0, by)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_by_id.as_deref(), Some(APPROVER));
    let again = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid.clone(),
        "create_charge",
        args.clone(),
    );
    assert_held(&app, again, 2).await;
}

#[tokio::test]
async fn a_grant_survives_a_restart_but_not_a_change_to_its_rule() {
    let app = grants_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_refund",
        json!({"amount": 1}),
        BOTH,
    );
    let id = app.wait_for_request().await;
    approve_for(&app, id).await;
    first.await.unwrap();

    // The same file on a second gateway (a restart): the grant holds.
    let (same, _stop_same, _s) = start_gateway(&app.second_config()).await;
    let sid2 = session_at(&app, same).await;
    let passed = spawn_as(
        format!("http://{same}/mcp"),
        BILLING_TOKEN,
        sid2,
        "create_refund",
        json!({"amount": 2}),
    );
    let a = passed.await.unwrap();
    assert_eq!(a.tool_text()["arguments"], json!({"amount": 2}), "{a:?}");
    assert_eq!(requests(&app.jobs().await), 1);

    // The rule edited (a longer grant): its hash differs, the old grant no longer counts.
    let edited = std::env::temp_dir().join(format!(
        "airlock-grant-{}.yaml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &edited,
        GRANTS.replacen("for: 1h, scope: tool }", "for: 2h, scope: tool }", 1),
    )
    .unwrap();
    let mut config = app.second_config();
    config.policy_file = edited.display().to_string();
    let (changed, _stop_changed, _c) = start_gateway(&config).await;
    let sid3 = session_at(&app, changed).await;
    let held = spawn_as(
        format!("http://{changed}/mcp"),
        BILLING_TOKEN,
        sid3,
        "create_refund",
        json!({"amount": 3}),
    );
    assert_held(&app, held, 1).await;
    let _ = std::fs::remove_file(edited);
}

/// Opens a session as the billing agent on the gateway at `addr`.
async fn session_at(app: &TestApp, addr: std::net::SocketAddr) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = app
        .http
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(BILLING_TOKEN)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let _ = r.bytes().await;
    sid
}

#[tokio::test]
async fn a_plain_approve_makes_no_grant() {
    let app = grants_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_refund",
        json!({"amount": 1}),
        BOTH,
    );
    let id = app.approve_next(0).await;
    first.await.unwrap();
    assert_eq!(grant::for_ticket(&app.db.pool, id).await.unwrap(), None);
    let next = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid,
        "create_refund",
        json!({"amount": 2}),
    );
    assert_held(&app, next, 1).await;
}

#[tokio::test]
async fn the_grants_command_lists_and_revokes() {
    let app = grants_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_refund",
        json!({"amount": 1}),
        BOTH,
    );
    let id = app.wait_for_request().await;
    let g = approve_for(&app, id).await;
    first.await.unwrap();

    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_airlock-gateway"))
            .args(args)
            .env("DATABASE_URL", &app.db.url)
            .env("REDIS_URL", &app.redis.url)
            .env("REDIS_KEY_PREFIX", app.redis.keys.prefix())
            .output()
            .unwrap()
    };
    let list = run(&["grants", "list"]);
    assert!(list.status.success(), "{list:?}");
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(out.starts_with("GRANT"), "{out}");
    assert!(
        out.contains(&g.id.to_string())
            && out.contains("create_refund")
            && out.contains("billing-bot"),
        "{out}"
    );

    let revoke = run(&["grants", "revoke", &id.to_string()]);
    assert!(revoke.status.success(), "{revoke:?}");
    assert!(
        grant::for_ticket(&app.db.pool, id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        app.jobs()
            .await
            .contains(&NotifyJob::TicketClosed { ticket_id: id })
    );
    let again = run(&["grants", "revoke", &g.id.to_string()]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert_eq!(run(&["grants", "revoke", "nope"]).status.code(), Some(2));
    assert_eq!(run(&["grants"]).status.code(), Some(2));
    let empty = run(&["grants", "list"]);
    assert!(!String::from_utf8_lossy(&empty.stdout).contains(&g.id.to_string()));

    let next = spawn_as(
        app.url(),
        BILLING_TOKEN,
        sid,
        "create_refund",
        json!({"amount": 2}),
    );
    assert_held(&app, next, 1).await;
}
