//! Three gateway replicas behind a real load balancer (nginx, round robin, no stickiness): held
//! calls spread over all of them, decided in random order, one replica killed mid-way while its
//! calls are held, its clients retrying through the balancer.

use std::collections::HashMap;
use std::time::Duration;

use airlock_shared::ticket;
use serde_json::{Value, json};

use crate::stack::*;
use airlock_test_support::nginx::Nginx;

/// Every refund needs a person (tiny amounts, so the demo charge covers all of them).
const POLICY: &str = r#"
version: 1
default: deny
rules:
  - name: refunds need a person
    tools: ["create_refund"]
    action: approve
    approvers: [U0ALICE]
    timeout: 10m
"#;
const PROTOCOL: &str = "2025-06-18";

/// How many held calls (`E2E_REPLICA_CALLS` overrides, for a quick local run).
fn calls() -> usize {
    std::env::var("E2E_REPLICA_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

fn post(
    http: &reqwest::Client,
    url: &str,
    sid: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let mut r = http
        .post(url)
        .bearer_auth(AGENT_TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", PROTOCOL)
        .json(body);
    if let Some(s) = sid {
        r = r.header("mcp-session-id", s);
    }
    r
}

/// A new MCP session through the balancer (any replica answers).
async fn session(http: &reqwest::Client, url: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "replicas-e2e", "version": "1"}}});
    let r = post(http, url, None, &init).send().await.unwrap();
    assert!(r.status().is_success(), "initialize: {}", r.status());
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    r.bytes().await.unwrap();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(http, url, Some(&sid), &note).send().await.unwrap();
    assert!(r.status().is_success(), "initialized: {}", r.status());
    sid
}

/// The JSON-RPC answer with id 1 in an SSE or JSON body, if the body holds one.
fn answer(body: &str) -> Option<Value> {
    let parse = |s: &str| serde_json::from_str::<Value>(s.trim()).ok();
    let found = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(parse)
        .chain(parse(body))
        .find(|v| v["id"] == 1);
    found.filter(|v| v.get("result").is_some() || v.get("error").is_some())
}

/// One agent: the call, retried with the identical request while its connection breaks.
/// Returns the answer and how many attempts it took.
async fn agent(http: reqwest::Client, url: String, sid: String, i: usize) -> (Value, u32) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "create_refund",
        "arguments": {"charge_id": "ch_1001", "amount": 0.01, "currency": "usd",
                      "reason": format!("call-{i}")}}});
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 20, "call {i}: no answer after 20 attempts");
        let sent = post(&http, &url, Some(&sid), &body).send().await;
        let text = match sent {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // An internal error (a Redis or Postgres timeout on an overloaded replica) is worth a
        // retry too, as a client would: the retry reattaches, so the call still runs once.
        if let Some(a) = answer(&text).filter(|a| a["error"]["code"] != -32603) {
            return (a, attempts);
        }
        // The replica holding the call went away: retry the same call through the balancer.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_a_balancer_end_every_call_once_when_one_dies() {
    let n = calls();
    let mut s = Stack::start_with(Options {
        policy: POLICY.into(),
        approval_timeout: "600s",
        notifier_env: vec![("SLACK_CHANNEL_PACE", "off".into())],
        // A thousand calls load all of the machine: other tests' crashes would land elsewhere.
        alone: true,
        ..Options::default()
    })
    .await;
    let mut replicas = vec![
        s.gateway.replica("gateway-2", free_port()),
        s.gateway.replica("gateway-3", free_port()),
    ];
    for r in &mut replicas {
        r.start();
    }
    for r in &mut replicas {
        r.wait_healthy().await;
    }
    let ports = [s.gateway.port, replicas[0].port, replicas[1].port];
    let lb = Nginx::start(s.dir(), &ports, 0).await;
    let url = lb.mcp_url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2 * n)
        .build()
        .unwrap();

    // Sessions and calls, all through the balancer.
    let mut sids = Vec::new();
    while sids.len() < n {
        let batch: Vec<_> = (0..32.min(n - sids.len()))
            .map(|_| {
                let (http, url) = (http.clone(), url.clone());
                tokio::spawn(async move { session(&http, &url).await })
            })
            .collect();
        for b in batch {
            sids.push(b.await.unwrap());
        }
    }
    // Agents arrive at 50/s, not in one burst: three debug-build gateways on two cores
    // (beside Postgres, Redis, nginx and the rest) run out of database connections otherwise.
    let mut handles = HashMap::new();
    for (i, sid) in sids.iter().enumerate() {
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let h = tokio::spawn(agent(http.clone(), url.clone(), sid.clone(), i));
        handles.insert(i, h);
    }
    let msgs = s.wait_messages(n, Duration::from_secs(240)).await;
    assert_eq!(msgs.len(), n, "one approval message per held call");

    // Which call each message is for, in a random order (sorted by fresh random ids).
    let mut order = Vec::new();
    for m in &msgs {
        let id = Stack::ticket_of(m);
        let t = ticket::get(&s.db.pool, id)
            .await
            .unwrap()
            .expect("ticket row");
        let reason = t.arguments["reason"].as_str().unwrap().to_owned();
        let i: usize = reason.trim_start_matches("call-").parse().unwrap();
        order.push((
            uuid::Uuid::new_v4(),
            i,
            m["ts"].as_str().unwrap().to_owned(),
        ));
    }
    order.sort();
    let held_by_killed = requested_on(&replicas[0]);
    assert!(
        held_by_killed > 0,
        "the balancer sent replica 2 no held call"
    );
    // Before the kill some are denied; after it all are approved. (A denial decided while its
    // caller reconnects is not carried over to the retry, which would ask again: a known gap,
    // see README "Replicas".)
    fn deny_first(i: usize) -> bool {
        i.is_multiple_of(4)
    }
    let denied: std::collections::HashSet<usize> = order[..n / 3]
        .iter()
        .map(|(_, i, _)| *i)
        .filter(|i| deny_first(*i))
        .collect();

    // A third decided and answered; then replica 2 dies with its calls held; then the rest.
    // (A call whose answer dies with its replica after it ran is another matter: its retry
    // would be a new call. Killing between answers keeps this test about held calls.)
    let third = n / 3;
    let mut answers = HashMap::new();
    let mut retried = 0;
    click_all(&s, &order[..third], |i| !deny_first(i)).await;
    for (_, i, _) in &order[..third] {
        let (a, attempts) = answered(&s, handles.remove(i).unwrap(), *i).await;
        retried += usize::from(attempts > 1);
        answers.insert(*i, a);
    }
    replicas[0].kill().await;
    click_all(&s, &order[third..], |_| true).await;
    for (i, h) in handles {
        let (a, attempts) = answered(&s, h, i).await;
        retried += usize::from(attempts > 1);
        answers.insert(i, a);
    }
    let reattached = reattached_on(&s.gateway) + reattached_on(&replicas[1]);
    assert!(
        retried > 0 && reattached > 0,
        "no call was cut by the killed replica (it held {held_by_killed}; {retried} retried, \
         {reattached} reattached)\n{}",
        lb.error_log()
    );

    // Every call ended once, with its decision's outcome; approved ones ran exactly once.
    let mut ran: HashMap<usize, usize> = HashMap::new();
    for c in s.executed().await {
        let reason = c["arguments"]["reason"].as_str().unwrap_or_default();
        if let Some(i) = reason.strip_prefix("call-").and_then(|r| r.parse().ok()) {
            *ran.entry(i).or_default() += 1;
        }
    }
    for i in 0..n {
        let a = &answers[&i];
        if !denied.contains(&i) {
            assert!(a.get("result").is_some(), "call {i} approved: {a}");
            assert_eq!(ran.get(&i), Some(&1), "approved call {i} runs exactly once");
        } else {
            let msg = a["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.contains("denied"), "call {i} denied: {a}");
            assert_eq!(ran.get(&i), None, "denied call {i} never runs");
        }
    }
    // One Slack message per ticket, even for the calls that moved replicas.
    let after = s.messages().await;
    assert_eq!(after.len(), n, "retries posted no second message");
    let ts = |m: &Value| m["ts"].as_str().unwrap_or_default().to_owned();
    let before: std::collections::HashSet<_> = msgs.iter().map(ts).collect();
    let now: std::collections::HashSet<_> = after.iter().map(ts).collect();
    assert_eq!(before, now, "the same messages, one per ticket");
    let count = |st| ticket::count_with_status(&s.db.pool, st);
    let (executed, refused) = (
        count(airlock_shared::TicketStatus::Executed).await.unwrap(),
        count(airlock_shared::TicketStatus::Denied).await.unwrap(),
    );
    assert_eq!(
        (executed as usize, refused as usize),
        (n - denied.len(), denied.len()),
        "one ticket per call: executed, denied"
    );
    assert_eq!(
        count(airlock_shared::TicketStatus::Pending).await.unwrap(),
        0
    );
    eprintln!(
        "{n} held calls over 3 replicas; replica 2 opened {held_by_killed} of them; \
         {retried} calls retried through the balancer, {reattached} reattached on the others"
    );
    drop(lb);
    s.gateway.kill().await;
    replicas[1].kill().await;
}

/// The agent's answer, within two minutes.
async fn answered(s: &Stack, h: tokio::task::JoinHandle<(Value, u32)>, i: usize) -> (Value, u32) {
    tokio::time::timeout(Duration::from_secs(120), h)
        .await
        .unwrap_or_else(|_| panic!("call {i} unanswered\n{}", s.logs()))
        .unwrap()
}

/// Decides `order`'s tickets as alice through the emulator, 16 clicks at a time.
async fn click_all(s: &Stack, order: &[(uuid::Uuid, usize, String)], approve: fn(usize) -> bool) {
    let click = format!("{}/_emulator/click", s.emulator_url());
    for chunk in order.chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for (_, i, ts) in chunk {
            let action = if approve(*i) { APPROVE } else { DENY };
            let req = s.http.post(&click).json(
                &json!({"user_id": ALICE, "channel": CHANNEL, "ts": ts, "action_id": action}),
            );
            set.spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                assert!(status.is_success(), "click: {status} {body}");
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
}

/// How many approval requests a gateway replica made (its log says so once per ticket).
fn requested_on(p: &Proc) -> usize {
    p.log_text().matches("approval requested").count()
}

/// How many retries reattached to their tickets on a replica.
fn reattached_on(p: &Proc) -> usize {
    p.log_text()
        .matches("retry reattached to its ticket")
        .count()
}
