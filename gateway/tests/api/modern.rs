//! MCP 2026-07-28 beside the older revisions on the one endpoint: no session, no `initialize`;
//! headers checked against the body before anything is forwarded; calls scoped by principal.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_shared::ticket::Decision;
use serde_json::{Value, json};

use super::helpers::*;

const MODERN: &str = "2026-07-28";

const MODERN_POLICY: &str = r#"
version: 1
default: deny
hide_denied_tools: true
budget: { max_tool_calls: 3, per: 2s }
rules:
  - { name: reads, tools: ["list_*"], action: allow, read_only: true }
  - name: big refunds
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
    approvers: [U0123ABCD]
  - { name: small refunds, tools: ["create_refund"], action: allow }
  - { name: test tools, tools: ["slow", "routed"], action: allow }
  - { name: never delete, tools: ["delete_*"], action: deny }
"#;

async fn modern_app() -> TestApp {
    spawn_with(Opts {
        policy: MODERN_POLICY.to_owned(),
        ..Opts::default()
    })
    .await
}

/// A 2026-07-28 request body: `params` with the `_meta` envelope.
fn body(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call_body(id: i64, tool: &str, args: Value) -> Value {
    body(id, "tools/call", json!({"name": tool, "arguments": args}))
}

/// A POST to `url` with the headers a conforming client sends for `body`, then `extra`
/// (which replace them; an empty value removes one).
async fn send_to(url: &str, token: &str, body: &Value, extra: &[(&str, &str)]) -> Answer {
    let mut h = reqwest::header::HeaderMap::new();
    let put = |h: &mut reqwest::header::HeaderMap, k: &str, v: &str| {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        if v.is_empty() {
            h.remove(name);
        } else {
            h.insert(name, v.parse().unwrap());
        }
    };
    put(&mut h, "mcp-protocol-version", MODERN);
    if let Some(m) = body["method"].as_str() {
        put(&mut h, "mcp-method", m);
    }
    if let Some(n) = body.pointer("/params/name").and_then(Value::as_str) {
        put(&mut h, "mcp-name", n);
    }
    for (k, v) in extra {
        put(&mut h, k, v);
    }
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .headers(h)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    read_answer(resp).await
}

async fn send(app: &TestApp, body: &Value, extra: &[(&str, &str)]) -> Answer {
    send_to(&app.url(), BILLING_TOKEN, body, extra).await
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp")
}

#[tokio::test]
async fn a_call_needs_no_session_and_no_initialize() {
    let app = modern_app().await;
    let a = send(
        &app,
        &call_body(1, "list_charges", json!({"limit": 2})),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body.pointer("/result/resultType"),
        Some(&json!("complete")),
        "{}",
        a.text
    );
    assert_eq!(a.tool_text()["tool"], "list_charges");
    assert!(a.headers.get("mcp-session-id").is_none());
    let calls = app.upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].session, None, "sent in no upstream session");
    // The mirrored headers went upstream with the body they describe.
    let (_, h) = app
        .upstream
        .requests()
        .into_iter()
        .rfind(|(m, _)| m == "tools/call")
        .unwrap();
    assert_eq!(h["mcp-protocol-version"], MODERN);
    assert_eq!(h["mcp-method"], "tools/call");
    assert_eq!(h["mcp-name"], "list_charges");
    assert!(h.get("mcp-session-id").is_none());
    // The audit row names the principal and no session.
    let row: (String, Option<String>) = eventually(Duration::from_secs(5), || async {
        airlock_shared::testing::first_audit_row_for_tool(&app.db.pool, "list_charges")
            .await
            .unwrap()
    })
    .await
    .expect("audit row");
    assert_eq!(row, ("billing-bot".to_owned(), None));
    // A denied call is refused by the body's verdict, never forwarded.
    let d = send(
        &app,
        &call_body(2, "delete_customer", json!({"id": "c1"})),
        &[],
    )
    .await;
    assert_eq!(d.code(), Some(-32001), "{}", d.text);
    assert_eq!(app.upstream.call_count(), 1);
}

#[tokio::test]
async fn older_revisions_keep_their_sessions_beside_it() {
    let app = modern_app().await;
    let sid = app.session("2025-11-25").await;
    let a = app
        .call(BILLING_TOKEN, &sid, 1, "list_charges", json!({}))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.body.pointer("/result/resultType").is_none(), "{}", a.text);
    let m = send(&app, &call_body(2, "list_charges", json!({})), &[]).await;
    assert_eq!(m.status, 200, "{}", m.text);
    let calls = app.upstream.calls();
    assert!(
        calls[0].session.is_some() && calls[1].session.is_none(),
        "{calls:?}"
    );
}

#[tokio::test]
async fn discover_is_relayed_and_served_from_the_last_good_answer() {
    let app = modern_app().await;
    let a = send(&app, &body(1, "server/discover", json!({})), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let versions = a.body.pointer("/result/supportedVersions").unwrap().clone();
    assert!(
        versions.as_array().unwrap().contains(&json!(MODERN)),
        "{versions}"
    );
    app.upstream.set_down(true);
    let c = send(&app, &body(2, "server/discover", json!({})), &[]).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["id"], 2);
    assert_eq!(c.body.pointer("/result/supportedVersions"), Some(&versions));
    assert_eq!(
        c.body.pointer("/result/resultType"),
        Some(&json!("complete"))
    );
    assert_eq!(c.body.pointer("/result/ttlMs"), Some(&json!(5000)));
    assert_eq!(c.body.pointer("/result/cacheScope"), Some(&json!("public")));
}

#[tokio::test]
async fn a_legacy_only_upstream_is_bridged_so_the_client_stays_on_2026() {
    let app = modern_app().await;
    app.upstream.set_legacy_only(true);
    let a = send(&app, &body(1, "server/discover", json!({})), &[]).await;
    assert_eq!(a.status, 200, "answered across the bridge: {}", a.text);
    assert_eq!(
        a.body.pointer("/result/supportedVersions"),
        Some(&json!(["2025-11-25", MODERN])),
        "{}",
        a.text
    );
    // The older revisions still open sessions of their own.
    let sid = app.session("2025-11-25").await;
    assert!(!sid.is_empty());
}

#[tokio::test]
async fn a_filtered_tool_list_is_private_and_a_cached_one_says_so() {
    let app = modern_app().await;
    let a = send(&app, &body(1, "tools/list", json!({})), &[]).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let names: Vec<&str> = a
        .body
        .pointer("/result/tools")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"delete_customer"), "{names:?}");
    assert_eq!(
        a.body.pointer("/result/cacheScope"),
        Some(&json!("private")),
        "{}",
        a.text
    );
    assert_eq!(
        a.body.pointer("/result/ttlMs"),
        Some(&json!(60_000)),
        "the upstream's hint"
    );
    assert_eq!(
        a.body.pointer("/result/resultType"),
        Some(&json!("complete"))
    );
    app.upstream.set_down(true);
    let c = send(&app, &body(2, "tools/list", json!({})), &[]).await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(
        c.body.pointer("/result/cacheScope"),
        Some(&json!("private"))
    );
    assert_eq!(c.body.pointer("/result/ttlMs"), Some(&json!(5000)));
    assert_eq!(
        c.body.pointer("/result/tools"),
        a.body.pointer("/result/tools")
    );
}

/// What is wrong, the body, the headers that replace a conforming client's, the code expected.
type Case = (&'static str, Value, Vec<(&'static str, &'static str)>, i64);

#[tokio::test]
async fn headers_that_disagree_with_the_body_are_refused_before_the_upstream() {
    let app = modern_app().await;
    let before = app.upstream.requests().len();
    let call = call_body(1, "list_charges", json!({}));
    let mut no_meta = call.clone();
    no_meta["params"].as_object_mut().unwrap().remove("_meta");
    let cases: Vec<Case> = vec![
        (
            "Mcp-Method differs",
            call.clone(),
            vec![("mcp-method", "tools/list")],
            -32020,
        ),
        (
            "Mcp-Method missing",
            call.clone(),
            vec![("mcp-method", "")],
            -32020,
        ),
        (
            "Mcp-Name differs",
            call.clone(),
            vec![("mcp-name", "delete_customer")],
            -32020,
        ),
        (
            "Mcp-Name missing",
            call.clone(),
            vec![("mcp-name", "")],
            -32020,
        ),
        (
            "Mcp-Name bad base64",
            call.clone(),
            vec![("mcp-name", "=?base64?***?=")],
            -32020,
        ),
        (
            "version header older than _meta",
            call.clone(),
            vec![("mcp-protocol-version", "2025-11-25")],
            -32020,
        ),
        (
            "version header missing",
            call.clone(),
            vec![("mcp-protocol-version", "")],
            -32020,
        ),
        ("_meta version missing", no_meta, vec![], -32020),
        (
            "unknown version",
            call.clone(),
            vec![("mcp-protocol-version", "2099-01-01")],
            -32022,
        ),
        (
            "malformed version",
            call.clone(),
            vec![("mcp-protocol-version", "banana")],
            -32022,
        ),
    ];
    for (what, b, extra, code) in cases {
        let a = send(&app, &b, &extra).await;
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert_eq!(a.code(), Some(code), "{what}: {}", a.text);
        if code == -32022 {
            assert_eq!(
                a.body.pointer("/error/data/supported"),
                Some(&json!(["2025-03-26", "2025-06-18", "2025-11-25", MODERN])),
                "{what}"
            );
        }
    }
    assert_eq!(
        app.upstream.requests().len(),
        before,
        "forwarded: {:?}",
        app.upstream.requests()
    );
    // Base64-encoded names are decoded before the comparison.
    let ok = send(&app, &call, &[("mcp-name", "=?base64?bGlzdF9jaGFyZ2Vz?=")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

#[tokio::test]
async fn param_headers_must_mirror_their_arguments() {
    let app = modern_app().await;
    let routed = call_body(1, "routed", json!({"region": "us-west1", "n": 1}));
    for (what, extra) in [
        ("missing", vec![]),
        ("different", vec![("mcp-param-region", "eu-west1")]),
        ("bad base64", vec![("mcp-param-region", "=?base64?%%?=")]),
    ] {
        let a = send(&app, &routed, &extra).await;
        assert_eq!(a.status, 400, "{what}: {}", a.text);
        assert_eq!(a.code(), Some(-32020), "{what}: {}", a.text);
    }
    let stray = call_body(2, "routed", json!({"n": 1}));
    let a = send(&app, &stray, &[("mcp-param-region", "us-west1")]).await;
    assert_eq!(
        a.code(),
        Some(-32020),
        "a header for an absent argument: {}",
        a.text
    );
    assert_eq!(app.upstream.call_count(), 0, "nothing ran upstream");
    // Right, in plain text or base64, and the header goes upstream with it.
    let ok = send(&app, &routed, &[("Mcp-Param-Region", "us-west1")]).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let b64 = send(
        &app,
        &routed,
        &[("mcp-param-region", "=?base64?dXMtd2VzdDE=?=")],
    )
    .await;
    assert_eq!(b64.status, 200, "{}", b64.text);
    assert_eq!(app.upstream.call_count(), 2);
    let (_, h) = app
        .upstream
        .requests()
        .into_iter()
        .rfind(|(m, _)| m == "tools/call")
        .unwrap();
    assert_eq!(h["mcp-param-region"], "=?base64?dXMtd2VzdDE=?=");
}

#[tokio::test]
async fn no_get_stream_no_delete_and_no_batches_in_2026() {
    let app = modern_app().await;
    for m in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let r = reqwest::Client::new()
            .request(m.clone(), app.url())
            .bearer_auth(BILLING_TOKEN)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{m}");
    }
    let batch = json!([call_body(1, "list_charges", json!({}))]);
    let a = send(&app, &batch, &[("mcp-method", "tools/call")]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(app.upstream.call_count(), 0);
}

#[tokio::test]
async fn the_lock_is_the_principals_across_instances() {
    let app = modern_app().await;
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    let first = app.url();
    let holder = tokio::spawn(async move {
        send_to(
            &first,
            BILLING_TOKEN,
            &call_body(1, "slow", json!({"ms": 1500})),
            &[],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = send_to(
        &url(addr),
        BILLING_TOKEN,
        &call_body(2, "slow", json!({"ms": 1})),
        &[],
    )
    .await;
    assert_eq!(
        busy.code(),
        Some(-32002),
        "same principal, other instance: {}",
        busy.text
    );
    let other = send_to(
        &url(addr),
        OTHER_TOKEN,
        &call_body(3, "slow", json!({"ms": 1})),
        &[],
    )
    .await;
    assert_eq!(
        other.status, 200,
        "another principal is not held up: {}",
        other.text
    );
    assert!(other.code().is_none(), "{}", other.text);
    // A session of the same principal has a lock of its own.
    let sid = app.session("2025-11-25").await;
    let in_session = app
        .call(BILLING_TOKEN, &sid, 4, "slow", json!({"ms": 1}))
        .await;
    assert!(in_session.code().is_none(), "{}", in_session.text);
    assert!(holder.await.unwrap().code().is_none());
    shutdown.cancel();
}

#[tokio::test]
async fn the_principals_budget_is_windowed_and_shared_by_instances() {
    let app = modern_app().await;
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    let urls = [app.url(), url(addr)];
    // Start just after a window opens, so that four calls fit in one window.
    let now = chrono::Utc::now().timestamp_millis() % 2000;
    tokio::time::sleep(Duration::from_millis((2050 - now) as u64)).await;
    for i in 0..3 {
        let a = send_to(
            &urls[i % 2],
            BILLING_TOKEN,
            &call_body(i as i64, "list_charges", json!({"n": i})),
            &[],
        )
        .await;
        assert!(a.code().is_none(), "call {i}: {}", a.text);
    }
    let over = send_to(
        &urls[1],
        BILLING_TOKEN,
        &call_body(9, "list_charges", json!({})),
        &[],
    )
    .await;
    assert_eq!(over.code(), Some(-32001), "{}", over.text);
    assert!(over.message().contains("budget"), "{}", over.text);
    // Another principal has a budget of its own; a session has none here.
    let other = send_to(
        &urls[0],
        OTHER_TOKEN,
        &call_body(10, "list_charges", json!({})),
        &[],
    )
    .await;
    assert!(other.code().is_none(), "{}", other.text);
    let sid = app.session("2025-11-25").await;
    let s = app
        .call(BILLING_TOKEN, &sid, 11, "list_charges", json!({}))
        .await;
    assert!(s.code().is_none(), "{}", s.text);
    // The next window starts afresh.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let again = send_to(
        &urls[0],
        BILLING_TOKEN,
        &call_body(12, "list_charges", json!({})),
        &[],
    )
    .await;
    assert!(again.code().is_none(), "new window: {}", again.text);
    shutdown.cancel();
}

#[tokio::test]
async fn a_held_call_streams_progress_and_its_reissue_reattaches_by_principal() {
    let app = modern_app().await;
    let refund = json!({"amount": 500, "currency": "usd"});
    let mut held = call_body(1, "create_refund", refund.clone());
    held["params"]["_meta"]["progressToken"] = json!("p1");
    let first = app.url();
    let h1 = held.clone();
    let waiting = tokio::spawn(async move { send_to(&first, BILLING_TOKEN, &h1, &[]).await });
    let ticket = app.wait_for_request().await;
    assert!(
        app.ticket(ticket)
            .await
            .session_id
            .starts_with("principal:")
    );
    // The same call re-issued with a new id (as after a broken stream) joins the same ticket.
    let mut again = call_body(2, "create_refund", refund);
    again["params"]["_meta"]["progressToken"] = json!("p2");
    let u = app.url();
    let reissued = tokio::spawn(async move { send_to(&u, BILLING_TOKEN, &again, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    decide(&app.db, &app.redis, ticket, Decision::Approve, true).await;
    let (a, b) = (waiting.await.unwrap(), reissued.await.unwrap());
    let answered: Vec<&Answer> = [&a, &b]
        .into_iter()
        .filter(|x| x.code().is_none())
        .collect();
    assert!(!answered.is_empty(), "{} / {}", a.text, b.text);
    assert!(
        a.text.contains("notifications/progress")
            || a.text.contains(": keepalive")
            || a.text.contains("data:"),
        "{}",
        a.text
    );
    assert_eq!(app.upstream.call_count(), 1, "ran once");
    let requests = app
        .jobs()
        .await
        .into_iter()
        .filter(|j| matches!(j, airlock_shared::job::NotifyJob::ApprovalRequest { .. }))
        .count();
    assert_eq!(requests, 1, "one Slack message");
}

#[tokio::test]
async fn a_reissue_after_the_stream_broke_reattaches_and_runs_once() {
    let app = modern_app().await;
    let refund = json!({"amount": 300, "currency": "usd"});
    let mut held = call_body(1, "create_refund", refund.clone());
    held["params"]["_meta"]["progressToken"] = json!("p1");
    let first = app.url();
    let cut = tokio::spawn(async move { send_to(&first, BILLING_TOKEN, &held, &[]).await });
    let ticket = app.wait_for_request().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cut.abort(); // the client's stream breaks
    let _ = cut.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.ticket(ticket).await.status,
        airlock_shared::TicketStatus::Pending,
        "a broken stream leaves the ticket for a re-issue"
    );
    let u = app.url();
    let reissue = call_body(7, "create_refund", refund);
    let again = tokio::spawn(async move { send_to(&u, BILLING_TOKEN, &reissue, &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    decide(&app.db, &app.redis, ticket, Decision::Approve, true).await;
    let a = again.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["id"], 7, "answered under the new id: {}", a.text);
    assert!(a.code().is_none(), "{}", a.text);
    assert_eq!(app.upstream.call_count(), 1, "ran once");
    assert_eq!(
        app.ticket(ticket).await.status,
        airlock_shared::TicketStatus::Executed
    );
    let requests = app
        .jobs()
        .await
        .into_iter()
        .filter(|j| matches!(j, airlock_shared::job::NotifyJob::ApprovalRequest { .. }))
        .count();
    assert_eq!(requests, 1, "one Slack message");
}

#[tokio::test]
async fn a_reissue_on_another_instance_keeps_the_ticket_past_the_first_ones_grace() {
    let app = modern_app().await;
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    let refund = json!({"amount": 310, "currency": "usd"});
    let held = call_body(1, "create_refund", refund.clone());
    let first = app.url();
    let cut = tokio::spawn(async move { send_to(&first, BILLING_TOKEN, &held, &[]).await });
    let ticket = app.wait_for_request().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cut.abort(); // the stream to the first instance breaks
    let _ = cut.await;
    // The client re-issues through the balancer, which sends it to the other instance.
    let reissue = call_body(8, "create_refund", refund);
    let again =
        tokio::spawn(async move { send_to(&url(addr), BILLING_TOKEN, &reissue, &[]).await });
    // Past the first instance's grace: it must not cancel a ticket someone waits on elsewhere.
    tokio::time::sleep(airlock_gateway::approval::hold::REISSUE_GRACE + Duration::from_secs(2))
        .await;
    assert_eq!(
        app.ticket(ticket).await.status,
        airlock_shared::TicketStatus::Pending,
        "the re-issue on the other instance still waits"
    );
    decide(&app.db, &app.redis, ticket, Decision::Approve, true).await;
    let a = again.await.unwrap();
    assert_eq!(a.body["id"], 8, "answered under the new id: {}", a.text);
    assert!(a.code().is_none(), "{}", a.text);
    assert_eq!(app.upstream.call_count(), 1, "ran once");
    shutdown.cancel();
}

#[tokio::test]
async fn a_broken_stream_nobody_reissues_is_cancelled_after_the_grace() {
    let app = modern_app().await;
    let held = call_body(
        1,
        "create_refund",
        json!({"amount": 320, "currency": "usd"}),
    );
    let first = app.url();
    let cut = tokio::spawn(async move { send_to(&first, BILLING_TOKEN, &held, &[]).await });
    let ticket = app.wait_for_request().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cut.abort();
    let _ = cut.await;
    let cancelled = eventually(
        airlock_gateway::approval::hold::REISSUE_GRACE + Duration::from_secs(5),
        || async {
            (app.ticket(ticket).await.status == airlock_shared::TicketStatus::Cancelled)
                .then_some(())
        },
    )
    .await;
    assert!(cancelled.is_some(), "an abandoned ticket is cancelled");
    assert_eq!(app.upstream.call_count(), 0);
}
