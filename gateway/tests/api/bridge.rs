//! The bridges: a 2026-07-28 client in front of an upstream of the older revisions only, and
//! an older client in front of a 2026-07-28-only upstream (both fakes in `single_era`).

use std::time::Duration;

use airlock_gateway::config::UpstreamEra;
use airlock_shared::ticket::Decision;
use airlock_test_support::single_era::{Era, SingleEra};
use airlock_test_support::upstream::{FakeUpstream, Mode};
use airlock_test_support::{TestDb, TestRedis, fresh_db, fresh_redis};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::helpers::*;

const MODERN: &str = "2026-07-28";

const BRIDGE_POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: reads, tools: ["list_*"], action: allow, read_only: true }
  - name: big refunds
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
    approvers: [U0123ABCD]
  - { name: small refunds, tools: ["create_refund"], action: allow }
  - { name: test tools, tools: ["routed", "wizard"], action: allow }
  - { name: never delete, tools: ["delete_*"], action: deny }
"#;

/// A gateway in front of a single-era fake.
struct Bridged {
    url: String,
    cfg: airlock_gateway::config::Config,
    db: TestDb,
    redis: TestRedis,
    up: SingleEra,
    shutdown: CancellationToken,
}

impl Drop for Bridged {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn bridged(era: Era, setting: UpstreamEra) -> Bridged {
    bridged_with(era, setting, BRIDGE_POLICY).await
}

async fn bridged_with(era: Era, setting: UpstreamEra, policy: &str) -> Bridged {
    let db = fresh_db().await;
    let redis = fresh_redis().await;
    let up = SingleEra::spawn(era).await;
    let opts = Opts {
        policy: policy.to_owned(),
        upstream_era: setting,
        ..Opts::default()
    };
    // config_for wants a fake to point at; the single-era one replaces it.
    let unused = FakeUpstream::spawn(Mode::Json).await;
    let (_dir, policy, keys) = write_files(&opts);
    let mut cfg = config_for(&db, &redis, &unused, &opts, policy, keys);
    cfg.upstream_mcp_url = up.url();
    let (addr, shutdown, _server) = start_gateway(&cfg).await;
    Bridged {
        url: format!("http://{addr}/mcp"),
        cfg,
        db,
        redis,
        up,
        shutdown,
    }
}

/// A 2026-07-28 request body.
fn modern_body(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call_body(id: i64, tool: &str, args: Value) -> Value {
    modern_body(id, "tools/call", json!({"name": tool, "arguments": args}))
}

/// A 2026-07-28 POST with the headers a conforming client sends.
fn modern_request(url: &str, token: &str, body: &Value) -> reqwest::RequestBuilder {
    let mut r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-protocol-version", MODERN)
        .body(body.to_string());
    if let Some(m) = body["method"].as_str() {
        r = r.header("mcp-method", m);
    }
    if let Some(n) = body.pointer("/params/name").and_then(Value::as_str) {
        r = r.header("mcp-name", n);
    }
    r
}

async fn modern(url: &str, token: &str, body: &Value) -> Answer {
    read_answer(modern_request(url, token, body).send().await.unwrap()).await
}

/// An older client's POST in `session`.
fn legacy_request(
    url: &str,
    token: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    r
}

async fn legacy(url: &str, session: &str, body: &Value) -> Answer {
    read_answer(
        legacy_request(url, BILLING_TOKEN, Some(session), body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn legacy_call(id: i64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

/// Approves the first approval request once it is enqueued; returns what its ticket is
/// scoped by (session id, or `principal:<name>`).
async fn approve_first(b: &Bridged) -> String {
    let id = wait_for_request(&b.redis, 0).await;
    decide(&b.db, &b.redis, id, Decision::Approve, true).await;
    let t = airlock_shared::ticket::get(&b.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    t.session_id
}

// ---- a 2026-07-28 client in front of an upstream of the older revisions ----

#[tokio::test]
async fn a_2026_client_gets_2026_in_front_of_an_older_upstream() {
    let b = bridged(Era::Legacy, UpstreamEra::Auto).await;
    let d = modern(
        &b.url,
        BILLING_TOKEN,
        &modern_body(1, "server/discover", json!({})),
    )
    .await;
    assert_eq!(d.status, 200, "{}", d.text);
    let r = &d.body["result"];
    assert_eq!(
        r["supportedVersions"],
        json!(["2025-11-25", MODERN]),
        "{}",
        d.text
    );
    assert_eq!(r["resultType"], "complete");
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "legacy-upstream"
    );
    assert_eq!(r["capabilities"]["tools"], json!({"listChanged": true}));
    assert!(
        r["capabilities"]["resources"].get("subscribe").is_none(),
        "{}",
        d.text
    );
    assert_eq!(r["instructions"], "An older server.");

    let l = modern(
        &b.url,
        BILLING_TOKEN,
        &modern_body(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(l.body["result"]["resultType"], "complete", "{}", l.text);
    assert_eq!(l.body["result"]["ttlMs"], 0);
    assert_eq!(l.body["result"]["cacheScope"], "public");
    assert!(!l.body["result"]["tools"].as_array().unwrap().is_empty());

    let c = modern(
        &b.url,
        BILLING_TOKEN,
        &call_body(3, "list_charges", json!({"limit": 2})),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["result"]["resultType"], "complete", "{}", c.text);
    assert_eq!(c.tool_text()["tool"], "list_charges");
    // No log message (the request asked for none), no event ids (no resumption in 2026-07-28).
    assert!(!c.text.contains("notifications/message"), "{}", c.text);
    assert!(!c.text.lines().any(|l| l.starts_with("id:")), "{}", c.text);

    // The upstream saw a request in its session, of its revision, without the envelope.
    let (_, h, sent) =
        b.up.requests()
            .into_iter()
            .rfind(|(m, _, _)| m == "tools/call")
            .unwrap();
    assert_eq!(h["mcp-protocol-version"], "2025-11-25");
    assert!(h.get("mcp-session-id").is_some());
    assert!(sent.pointer("/params/_meta").is_none(), "{sent}");

    // A denied call goes nowhere.
    let denied = modern(
        &b.url,
        BILLING_TOKEN,
        &call_body(4, "delete_customer", json!({"id": "c1"})),
    )
    .await;
    assert_eq!(denied.code(), Some(-32001), "{}", denied.text);
    assert_eq!(b.up.calls().len(), 1);

    // One upstream session for the principal, reused by every request; another principal's own.
    let again = modern(
        &b.url,
        BILLING_TOKEN,
        &call_body(5, "list_charges", json!({})),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(b.up.initializes(), 1);
    let other = modern(
        &b.url,
        OTHER_TOKEN,
        &call_body(6, "list_charges", json!({})),
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.text);
    assert_eq!(b.up.initializes(), 2);
    let calls = b.up.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[0].0, calls[1].0,
        "billing-bot's calls share its session"
    );
    assert_ne!(calls[0].0, calls[2].0, "other-bot has its own");
}

#[tokio::test]
async fn a_held_2026_call_to_an_older_upstream_runs_once_approved() {
    let b = bridged(Era::Legacy, UpstreamEra::Auto).await;
    let url = b.url.clone();
    let call = tokio::spawn(async move {
        modern(
            &url,
            BILLING_TOKEN,
            &call_body(1, "create_refund", json!({"amount": 500})),
        )
        .await
    });
    let scope = approve_first(&b).await;
    assert_eq!(
        scope, "principal:billing-bot",
        "keyed by principal, as any 2026-07-28 call"
    );
    let a = call.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["result"]["resultType"], "complete", "{}", a.text);
    assert_eq!(a.tool_text()["arguments"]["amount"], 500);
    let runs: Vec<_> =
        b.up.calls()
            .into_iter()
            .filter(|(_, t, _)| t == "create_refund")
            .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[tokio::test]
async fn a_forgotten_upstream_session_is_opened_again() {
    let b = bridged(Era::Legacy, UpstreamEra::Auto).await;
    let first = modern(
        &b.url,
        BILLING_TOKEN,
        &call_body(1, "list_charges", json!({})),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    b.up.forget_sessions();
    let second = modern(
        &b.url,
        BILLING_TOKEN,
        &call_body(2, "list_charges", json!({})),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.tool_text()["tool"], "list_charges");
    assert_eq!(b.up.initializes(), 2);
    let calls = b.up.calls();
    assert_eq!(
        calls.len(),
        2,
        "sent once more only after the 404: {calls:?}"
    );
    assert_ne!(calls[0].0, calls[1].0);
}

#[tokio::test]
async fn listen_is_served_from_the_older_upstreams_get_stream() {
    let b = bridged(Era::Legacy, UpstreamEra::Auto).await;
    let body = modern_body(
        9,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]}}),
    );
    let resp = modern_request(&b.url, BILLING_TOKEN, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = Reader::new(resp);
    let ack = r.next_json().await.expect("acknowledged");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    assert_eq!(b.up.open_streams(), 1);
    // Not asked for: dropped. Asked for: relayed at once, tagged.
    b.up.push(json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///a"}}));
    b.up.push(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}));
    let n = tokio::time::timeout(Duration::from_secs(5), r.next_json())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n["method"], "notifications/tools/list_changed", "{n}");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    assert!(!r.raw.lines().any(|l| l.starts_with("id:")), "{}", r.raw);
    // The stream had a session of its own, ended when the client went away.
    drop(r);
    let ended = eventually(Duration::from_secs(5), || async {
        (b.up.deletes() == 1).then_some(())
    })
    .await;
    assert!(
        ended.is_some(),
        "the stream's upstream session was not ended"
    );
    assert_eq!(b.up.open_streams(), 0);
}

#[tokio::test]
async fn with_upstream_era_both_nothing_is_bridged() {
    let b = bridged(Era::Legacy, UpstreamEra::Both).await;
    let d = modern(
        &b.url,
        BILLING_TOKEN,
        &modern_body(1, "server/discover", json!({})),
    )
    .await;
    assert_eq!(d.status, 400, "relayed as the upstream gave it: {}", d.text);
    assert_eq!(b.up.initializes(), 0);
}

#[tokio::test]
async fn a_filtered_list_across_the_bridge_is_private_and_a_fixed_era_is_not_probed() {
    let policy = BRIDGE_POLICY.replace(
        "default: deny\n",
        "default: deny\nhide_denied_tools: true\n",
    );
    let b = bridged_with(Era::Legacy, UpstreamEra::Legacy, &policy).await;
    let l = modern(
        &b.url,
        BILLING_TOKEN,
        &modern_body(1, "tools/list", json!({})),
    )
    .await;
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.body["result"]["cacheScope"], "private", "{}", l.text);
    assert_eq!(l.body["result"]["resultType"], "complete");
    let names: Vec<&str> = l.body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(!names.contains(&"delete_customer"), "{names:?}");
    assert!(names.contains(&"list_charges"), "{names:?}");
    // UPSTREAM_ERA=legacy: no probe went upstream.
    let methods: Vec<String> = b.up.requests().into_iter().map(|(m, _, _)| m).collect();
    assert!(
        !methods.iter().any(|m| m == "server/discover"),
        "{methods:?}"
    );
}

// ---- an older client in front of a 2026-07-28-only upstream ----

#[tokio::test]
async fn a_bridged_session_works_on_another_instance_that_never_saw_its_initialize() {
    let b = bridged(Era::Modern, UpstreamEra::Auto).await;
    let sid = open_session(&b, json!({"experimental": {"y": {}}})).await;
    let (addr, other, _server) = start_gateway(&b.cfg).await;
    let url = format!("http://{addr}/mcp");
    let c = legacy(&url, &sid, &legacy_call(1, "list_charges", json!({}))).await;
    other.cancel();
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.tool_text()["tool"], "list_charges", "{}", c.text);
    // It asked the upstream whether it takes sessions (its own initialize, refused), and sent
    // the call with the client's capabilities from the session's row.
    let methods: Vec<String> = b.up.requests().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "initialize").count(),
        2,
        "{methods:?}"
    );
    let (_, _, sent) =
        b.up.requests()
            .into_iter()
            .rfind(|(m, _, _)| m == "tools/call")
            .unwrap();
    assert_eq!(
        sent["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
        json!({"experimental": {"y": {}}})
    );
}

#[tokio::test]
async fn with_upstream_era_modern_initialize_never_goes_upstream() {
    let b = bridged(Era::Modern, UpstreamEra::Modern).await;
    let sid = open_session(&b, json!({})).await;
    let c = legacy(&b.url, &sid, &legacy_call(1, "list_charges", json!({}))).await;
    assert_eq!(c.tool_text()["tool"], "list_charges", "{}", c.text);
    let methods: Vec<String> = b.up.requests().into_iter().map(|(m, _, _)| m).collect();
    // The tools are listed once, for their x-mcp-header annotations.
    assert_eq!(
        methods,
        ["server/discover", "tools/list", "tools/call"],
        "no initialize, no probe"
    );
}

async fn open_session(b: &Bridged, caps: Value) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": caps, "clientInfo": {"name": "old-client", "version": "1"}}});
    let resp = legacy_request(&b.url, BILLING_TOKEN, None, &init)
        .send()
        .await
        .unwrap();
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let a = read_answer(resp).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["result"]["protocolVersion"], "2025-06-18",
        "{}",
        a.text
    );
    assert_eq!(a.body["result"]["serverInfo"]["name"], "modern-upstream");
    assert_eq!(a.body["result"]["instructions"], "A 2026-07-28 server.");
    assert!(a.body["result"].get("resultType").is_none(), "{}", a.text);
    assert!(
        a.body["result"]["capabilities"].get("logging").is_none(),
        "{}",
        a.text
    );
    sid.expect("a session id")
}

#[tokio::test]
async fn an_older_client_keeps_its_session_in_front_of_a_2026_upstream() {
    let b = bridged(Era::Modern, UpstreamEra::Auto).await;
    let sid = open_session(&b, json!({"elicitation": {}, "experimental": {"x": {}}})).await;
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let n = legacy_request(&b.url, BILLING_TOKEN, Some(&sid), &initialized)
        .send()
        .await
        .unwrap();
    assert_eq!(n.status(), 202);

    let l = legacy(
        &b.url,
        &sid,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(l.status, 200, "{}", l.text);
    let result = &l.body["result"];
    assert!(
        result["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "{}",
        l.text
    );
    for k in ["resultType", "ttlMs", "cacheScope"] {
        assert!(result.get(k).is_none(), "{k}: {}", l.text);
    }

    let c = legacy(
        &b.url,
        &sid,
        &legacy_call(2, "routed", json!({"region": "eu-west1"})),
    )
    .await;
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.tool_text()["arguments"]["region"], "eu-west1");
    assert!(c.body["result"].get("resultType").is_none(), "{}", c.text);
    let (_, h, sent) =
        b.up.requests()
            .into_iter()
            .rfind(|(m, _, _)| m == "tools/call")
            .unwrap();
    assert_eq!(h["mcp-protocol-version"], MODERN);
    assert_eq!(h["mcp-method"], "tools/call");
    assert_eq!(h["mcp-name"], "routed");
    assert_eq!(h["mcp-param-region"], "eu-west1");
    assert!(h.get("mcp-session-id").is_none());
    let meta = &sent["params"]["_meta"];
    assert_eq!(meta["io.modelcontextprotocol/protocolVersion"], MODERN);
    assert_eq!(
        meta["io.modelcontextprotocol/clientCapabilities"],
        json!({"experimental": {"x": {}}})
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"]["name"],
        "old-client"
    );

    // The same session, call after call; a denied call goes nowhere.
    let again = legacy(&b.url, &sid, &legacy_call(3, "list_charges", json!({}))).await;
    assert_eq!(again.tool_text()["tool"], "list_charges", "{}", again.text);
    let denied = legacy(
        &b.url,
        &sid,
        &legacy_call(4, "delete_customer", json!({"id": "c"})),
    )
    .await;
    assert_eq!(denied.code(), Some(-32001), "{}", denied.text);
    assert_eq!(b.up.calls().len(), 2);
    // ping is answered here; an InputRequiredResult cannot cross, and says so.
    let ping = legacy(
        &b.url,
        &sid,
        &json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
    )
    .await;
    assert_eq!(ping.body["result"], json!({}), "{}", ping.text);
    let asks = legacy(&b.url, &sid, &legacy_call(6, "wizard", json!({}))).await;
    assert_eq!(asks.code(), Some(-32603), "{}", asks.text);
    assert!(
        asks.body["error"]["data"]["inputRequests"]["confirm"].is_object(),
        "{}",
        asks.text
    );
    // Only the first initialize went upstream (refused: that is how the bridge learnt the
    // upstream's era); ping and the notification stayed here.
    let methods: Vec<String> = b.up.requests().into_iter().map(|(m, _, _)| m).collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "initialize").count(),
        1,
        "{methods:?}"
    );
    assert!(
        !methods
            .iter()
            .any(|m| m == "ping" || m == "notifications/initialized"),
        "{methods:?}"
    );

    // The session is the principal's, and ends here.
    let stolen = read_answer(
        legacy_request(
            &b.url,
            OTHER_TOKEN,
            Some(&sid),
            &legacy_call(7, "list_charges", json!({})),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(stolen.status, 404, "{}", stolen.text);
    let del = reqwest::Client::new()
        .delete(&b.url)
        .bearer_auth(BILLING_TOKEN)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert!(!b.up.requests().iter().any(|(m, _, _)| m == "DELETE"));
    let gone = legacy(&b.url, &sid, &legacy_call(8, "list_charges", json!({}))).await;
    assert_eq!(gone.status, 404, "{}", gone.text);
}

#[tokio::test]
async fn a_held_call_of_an_older_client_to_a_2026_upstream_runs_once_approved() {
    let b = bridged(Era::Modern, UpstreamEra::Auto).await;
    let sid = open_session(&b, json!({})).await;
    let (url, s) = (b.url.clone(), sid.clone());
    let call = tokio::spawn(async move {
        legacy(
            &url,
            &s,
            &legacy_call(1, "create_refund", json!({"amount": 500})),
        )
        .await
    });
    let scope = approve_first(&b).await;
    assert_eq!(scope, sid, "keyed by the client's session");
    let a = call.await.unwrap();
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.tool_text()["arguments"]["amount"], 500, "{}", a.text);
    let runs: Vec<_> =
        b.up.calls()
            .into_iter()
            .filter(|(_, t, _)| t == "create_refund")
            .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // The session still works after the hold.
    let next = legacy(&b.url, &sid, &legacy_call(2, "list_charges", json!({}))).await;
    assert_eq!(next.tool_text()["tool"], "list_charges", "{}", next.text);
}

#[tokio::test]
async fn an_older_clients_get_stream_is_served_from_listen() {
    let b = bridged(Era::Modern, UpstreamEra::Auto).await;
    let sid = open_session(&b, json!({})).await;
    let resp = reqwest::Client::new()
        .get(&b.url)
        .bearer_auth(BILLING_TOKEN)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = Reader::new(resp);
    let listening = eventually(Duration::from_secs(5), || async {
        b.up.requests()
            .into_iter()
            .find(|(m, _, _)| m == "subscriptions/listen")
    })
    .await
    .expect("a listen upstream");
    assert_eq!(listening.1["mcp-method"], "subscriptions/listen");
    assert_eq!(
        listening.2["params"]["notifications"]["toolsListChanged"],
        true
    );
    // Give the upstream's acknowledgement time to pass (it is not relayed).
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.up.push(
        json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {}}),
    );
    let n = tokio::time::timeout(Duration::from_secs(5), r.next_json())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n["method"], "notifications/tools/list_changed", "{n}");
    assert!(
        n.pointer("/params/_meta/io.modelcontextprotocol~1subscriptionId")
            .is_none(),
        "{n}"
    );
}
