//! JSON-RPC batches with `tools/call`s (MCP 2025-03-26): every call meets policy on its own,
//! the rest of the batch goes upstream, and the answers come back matched by id.

use std::time::Duration;

use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::Decision;
use airlock_shared::{TicketId, TicketStatus};
use airlock_test_support::upstream::Mode;
use serde_json::{Value, json};

use super::helpers::*;

const JSON_ONLY: &str = "application/json";
const BATCHES: &str = "2025-03-26";

/// A gateway with a short keepalive (tests must not wait 15 s for a comment).
async fn gw(opts: Opts) -> TestApp {
    spawn_with(Opts {
        keepalive_interval: SHORT_KEEPALIVE,
        ..opts
    })
    .await
}

impl TestApp {
    /// A POST under the batch-capable protocol version.
    fn post_batch(
        &self,
        session: Option<&str>,
        accept: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        self.post_as(BATCHES, session, accept, body)
    }

    fn post_as(
        &self,
        version: &str,
        session: Option<&str>,
        accept: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        self.request(session, accept, body)
            .header("mcp-protocol-version", version)
    }

    async fn batch_session(&self) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": BATCHES, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let r = self.post_batch(None, BOTH, &init).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.bytes().await.unwrap();
        sid
    }

    /// Sends a batch and reads the JSON array it is answered with.
    async fn json_batch(&self, sid: &str, batch: &Value) -> Vec<Value> {
        let r = self
            .post_batch(Some(sid), JSON_ONLY, batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        match r.json::<Value>().await.unwrap() {
            Value::Array(a) => a,
            other => panic!("not an array: {other}"),
        }
    }

    /// Sends a batch that the client takes over SSE.
    async fn sse_batch(&self, sid: &str, batch: &Value) -> Reader {
        let r = self
            .post_batch(Some(sid), BOTH, batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        Reader::new(r)
    }

    /// The audit rows of a session once there are `n`, sorted by tool and outcome (calls of one
    /// batch finish in any order).
    async fn audit(&self, sid: &str, n: usize) -> Vec<(String, String, String, Option<TicketId>)> {
        let mut rows = eventually(Duration::from_secs(5), || async {
            let rows = airlock_shared::audit::for_session(&self.db.pool, sid)
                .await
                .unwrap();
            (rows.len() >= n).then_some(rows)
        })
        .await
        .unwrap_or_else(|| panic!("{n} audit rows"));
        assert_eq!(rows.len(), n, "{rows:?}");
        rows.sort_by(|a, b| (&a.0, &a.2).cmp(&(&b.0, &b.2)));
        rows.into_iter()
            .map(|(tool, decision, outcome, ticket)| {
                (tool, decision, outcome, ticket.map(TicketId))
            })
            .collect()
    }
}

fn call(id: impl Into<Value>, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": "tools/call", "params": {"name": tool, "arguments": args}})
}

fn ping(id: impl Into<Value>) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": "ping"})
}

fn note() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
}

fn pong(id: impl Into<Value>) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "result": {}})
}

/// The tool's echo inside a fake-upstream result.
fn echoed(answer: &Value) -> Value {
    let text = answer
        .pointer("/result/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("not a tool result: {answer}"));
    serde_json::from_str(text).unwrap()
}

fn error(answer: &Value) -> (i64, &str) {
    (
        answer
            .pointer("/error/code")
            .and_then(Value::as_i64)
            .unwrap_or_else(|| panic!("not an error: {answer}")),
        answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )
}

/// Sorts answers by id (as text), for batches answered in any order.
fn by_id(mut answers: Vec<Value>) -> Vec<Value> {
    answers.sort_by_key(|a| a["id"].to_string());
    answers
}

#[tokio::test]
async fn an_allowed_call_a_ping_and_a_notification_get_one_json_array_matched_by_id() {
    let g = gw(Opts::default()).await;
    for mode in [Mode::Json, Mode::Sse] {
        g.upstream.set_mode(mode);
        let sid = g.batch_session().await;
        let batch = json!([
            call(1, "list_charges", json!({"limit": 2})),
            ping("p"),
            note()
        ]);
        let answers = g.json_batch(&sid, &batch).await;
        assert_eq!(answers.len(), 2, "{mode:?}: {answers:?}");
        // In the batch's order.
        assert_eq!(answers[0]["id"], 1, "{mode:?}");
        assert_eq!(
            echoed(&answers[0]),
            json!({"tool": "list_charges", "arguments": {"limit": 2}})
        );
        assert_eq!(answers[1], pong("p"), "{mode:?}");
    }
    let calls = g.upstream.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.tool == "list_charges"));
    // The tools/call went alone; the ping and the notification went as one batch.
    let methods: Vec<String> = g.upstream.requests().into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "tools/call").count(),
        2,
        "{methods:?}"
    );
    assert_eq!(
        methods.iter().filter(|m| m.is_empty()).count(),
        2,
        "{methods:?}"
    );
}

#[tokio::test]
async fn a_denied_call_is_refused_with_its_rule_next_to_an_allowed_one() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([
        call("del", "delete_customer", json!({"id": "cus_1"})),
        call("list", "list_charges", json!({})),
    ]);
    let answers = g.json_batch(&sid, &batch).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["id"], "del");
    assert_eq!(error(&answers[0]), (-32001, "denied by policy"));
    assert_eq!(
        answers[0]["error"]["data"],
        json!({"rule": "never delete", "reason": "deleting is not allowed from agents"})
    );
    assert_eq!(answers[1]["id"], "list");
    assert_eq!(echoed(&answers[1])["tool"], "list_charges");
    let calls = g.upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "list_charges");
}

#[tokio::test]
async fn an_approved_call_is_answered_over_sse_after_keepalives_and_the_rest_does_not_wait() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([
        call(1, "create_refund", json!({"amount": 500})),
        call(2, "list_charges", json!({})),
        ping(3),
    ]);
    let mut r = g.sse_batch(&sid, &batch).await;
    // The parts that need nobody answer at once, while the refund waits for a person.
    let early = by_id(vec![
        r.next_message().await.unwrap(),
        r.next_message().await.unwrap(),
    ]);
    assert_eq!(early[0]["id"], 2);
    assert_eq!(echoed(&early[0])["tool"], "list_charges");
    assert_eq!(early[1], pong(3));
    r.until_comments(2).await;
    let ticket = g.wait_for_request().await;
    assert_eq!(g.ticket(ticket).await.status, TicketStatus::Pending);
    assert!(
        r.queue.is_empty(),
        "nothing else before the decision: {:?}",
        r.queue
    );
    decide(&g.db, &g.redis, ticket, Decision::Approve, true).await;
    let rest = r.rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["id"], 1);
    assert_eq!(
        echoed(&rest[0]),
        json!({"tool": "create_refund", "arguments": {"amount": 500}})
    );
    assert_eq!(g.ticket(ticket).await.status, TicketStatus::Executed);
    assert_eq!(g.upstream.calls().len(), 2);
    let rows = g.audit(&sid, 2).await;
    assert_eq!(
        rows,
        vec![
            (
                "create_refund".into(),
                "approve".into(),
                "approved".into(),
                Some(ticket)
            ),
            (
                "list_charges".into(),
                "allow".into(),
                "forwarded".into(),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn a_batched_call_a_person_denies_names_them_in_the_json_answer() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([
        call("a", "create_refund", json!({"amount": 500})),
        ping("b")
    ]);
    let req = g.post_batch(Some(&sid), JSON_ONLY, &batch);
    let pending =
        tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() });
    let ticket = g.wait_for_request().await;
    decide(&g.db, &g.redis, ticket, Decision::Deny, true).await;
    let answers = pending.await.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["id"], "a");
    assert_eq!(error(&answers[0]), (-32001, "approval denied"));
    assert_eq!(
        answers[0]["error"]["data"],
        json!({"rule": "big refunds need a manager", "ticket": ticket.to_string(), "decided_by": "Ana Approver"})
    );
    assert_eq!(answers[1], pong("b"));
    assert_eq!(g.ticket(ticket).await.status, TicketStatus::Denied);
    assert!(g.upstream.calls().is_empty());
    assert_eq!(
        g.audit(&sid, 1).await,
        vec![(
            "create_refund".into(),
            "approve".into(),
            "approval_denied".into(),
            Some(ticket)
        )]
    );
}

#[tokio::test]
async fn a_client_that_drops_a_batch_mid_hold_cancels_the_ticket() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([call(1, "create_refund", json!({"amount": 500})), ping(2)]);
    let mut r = g.sse_batch(&sid, &batch).await;
    assert_eq!(r.next_message().await.unwrap(), pong(2));
    let ticket = g.wait_for_request().await;
    r.until_comments(1).await;
    drop(r);
    let status = eventually(Duration::from_secs(5), || async {
        let s = g.ticket(ticket).await.status;
        (s != TicketStatus::Pending).then_some(s)
    })
    .await;
    assert_eq!(status, Some(TicketStatus::Cancelled));
    let jobs = eventually(Duration::from_secs(2), || async {
        let j = g.jobs().await;
        (j.len() == 2).then_some(j)
    })
    .await;
    assert_eq!(
        jobs.unwrap(),
        vec![
            NotifyJob::ApprovalRequest { ticket_id: ticket },
            NotifyJob::TicketClosed { ticket_id: ticket }
        ]
    );
    assert!(g.upstream.calls().is_empty());
    assert_eq!(
        g.audit(&sid, 1).await,
        vec![(
            "create_refund".into(),
            "approve".into(),
            "client_gone".into(),
            Some(ticket)
        )]
    );
    // A client that waits for one JSON array goes away the same way.
    let sid = g.batch_session().await;
    let req = g.post_batch(Some(&sid), JSON_ONLY, &batch);
    let pending = tokio::spawn(async move { req.send().await.map(|r| r.status()) });
    let ticket = wait_for_request(&g.redis, 1).await;
    pending.abort();
    let status = eventually(Duration::from_secs(5), || async {
        let s = g.ticket(ticket).await.status;
        (s != TicketStatus::Pending).then_some(s)
    })
    .await;
    assert_eq!(status, Some(TicketStatus::Cancelled));
    assert!(g.upstream.calls().is_empty());
}

#[tokio::test]
async fn every_call_in_a_batch_leaves_its_own_audit_row() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([
        call(1, "list_charges", json!({})),
        call(2, "delete_customer", json!({"id": "cus_1"})),
        note(),
        call(3, "create_refund", json!({"amount": 50})),
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"arguments": {}}},
    ]);
    let answers = g.json_batch(&sid, &batch).await;
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert!(answers[0].get("result").is_some(), "{answers:?}");
    assert_eq!(error(&answers[1]).0, -32001);
    assert_eq!(echoed(&answers[2])["tool"], "create_refund");
    assert_eq!(error(&answers[3]), (-32602, "invalid params"));
    assert_eq!(
        g.audit(&sid, 4).await,
        vec![
            ("".into(), "none".into(), "invalid_params".into(), None),
            (
                "create_refund".into(),
                "allow".into(),
                "forwarded".into(),
                None
            ),
            (
                "delete_customer".into(),
                "deny".into(),
                "denied".into(),
                None
            ),
            (
                "list_charges".into(),
                "allow".into(),
                "forwarded".into(),
                None
            ),
        ]
    );
}

#[tokio::test]
async fn batches_with_tools_call_are_refused_where_the_protocol_has_no_batches() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([call(1, "list_charges", json!({})), ping(2)]);
    for version in ["2025-06-18", "2025-11-25"] {
        let r = g
            .post_as(version, Some(&sid), BOTH, &batch)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{version}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], -32600, "{version}: {v}");
    }
    assert!(g.upstream.calls().is_empty());
    // The same batch under 2025-03-26 is served.
    assert_eq!(g.json_batch(&sid, &batch).await.len(), 2);
}

#[tokio::test]
async fn two_mutating_calls_in_one_batch_contend_for_the_session_lock() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    // Each holds the lock for longer than LOCK_ACQUIRE_TIMEOUT (300 ms in tests). Different
    // calls: the same call twice would count as its own retry and take the lock over.
    let batch = json!([
        call(1, "slow", json!({"ms": 1500, "n": 1})),
        call(2, "slow", json!({"ms": 1500, "n": 2}))
    ]);
    let answers = g.json_batch(&sid, &batch).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        (&answers[0]["id"], &answers[1]["id"]),
        (&json!(1), &json!(2))
    );
    let busy: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(busy.len(), 1, "exactly one is refused: {answers:?}");
    assert_eq!(error(busy[0]), (-32002, "session busy"));
    let ran: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("result").is_some())
        .collect();
    assert_eq!(ran.len(), 1, "{answers:?}");
    assert_ne!(ran[0]["id"], busy[0]["id"]);
    assert_eq!(echoed(ran[0])["tool"], "slow");
    assert_eq!(g.upstream.calls().len(), 1);
    assert_eq!(
        g.audit(&sid, 2).await,
        vec![
            ("slow".into(), "allow".into(), "forwarded".into(), None),
            ("slow".into(), "allow".into(), "session_busy".into(), None),
        ]
    );
}

#[tokio::test]
async fn notifications_cancelled_reaches_a_call_held_in_a_batch() {
    let g = gw(Opts::default()).await;
    // Alone.
    let sid = g.batch_session().await;
    let mut r = g
        .sse_batch(
            &sid,
            &json!([call(9, "create_refund", json!({"amount": 500})), ping(10)]),
        )
        .await;
    assert_eq!(r.next_message().await.unwrap(), pong(10));
    let first = wait_for_request(&g.redis, 0).await;
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9, "reason": "user stopped"}});
    let c = g
        .post_batch(Some(&sid), BOTH, &cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 202);
    let rest = r.rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["id"], 9);
    assert_eq!(error(&rest[0]), (-32001, "approval cancelled"));
    assert_eq!(g.ticket(first).await.status, TicketStatus::Cancelled);
    // Inside a batch of notifications (another session: the first one's lock is being released).
    let sid = g.batch_session().await;
    let mut r = g
        .sse_batch(
            &sid,
            &json!([call("held", "create_refund", json!({"amount": 700}))]),
        )
        .await;
    let second = wait_for_request(&g.redis, 1).await;
    let cancel = json!([
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "held"}},
        note(),
    ]);
    let c = g
        .post_batch(Some(&sid), BOTH, &cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 202);
    let rest = r.rest().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["id"], "held");
    assert_eq!(error(&rest[0]), (-32001, "approval cancelled"));
    assert_eq!(g.ticket(second).await.status, TicketStatus::Cancelled);
    assert!(g.upstream.calls().is_empty());
}

const STREAMING_POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: reads are free, tools: ["list_*"], action: allow, read_only: true }
  - { name: test tools, tools: ["ask_client", "flood"], action: allow }
"#;

#[tokio::test]
async fn server_to_client_messages_of_a_batched_call_reach_an_sse_client() {
    let g = gw(Opts {
        policy: STREAMING_POLICY.to_owned(),
        mode: Mode::Sse,
        ..Opts::default()
    })
    .await;
    let sid = g.batch_session().await;
    // A request from the server must reach the client before the call can answer.
    let batch = json!([
        call(1, "ask_client", json!({"method": "roots/list"})),
        ping(2)
    ]);
    let mut r = g.sse_batch(&sid, &batch).await;
    let mut seen = Vec::new();
    let question = loop {
        let m = r.next_message().await.expect("the server's question");
        if m["method"] == "roots/list" {
            break m;
        }
        seen.push(m);
    };
    let reply = json!({"jsonrpc": "2.0", "id": question["id"], "result": {"roots": []}});
    let c = g.post_batch(Some(&sid), BOTH, &reply).send().await.unwrap();
    assert_eq!(c.status(), 202);
    seen.extend(r.rest().await);
    let seen = by_id(seen);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["id"], 1);
    assert_eq!(echoed(&seen[0])["client_said"], reply);
    assert_eq!(seen[1], pong(2));
    // Notifications too, each as its own event, before the answer.
    let mut r = g
        .sse_batch(
            &sid,
            &json!([call("f", "flood", json!({"n": 3, "size": 10}))]),
        )
        .await;
    let all = r.rest().await;
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all[..3]
            .iter()
            .all(|m| m["method"] == "notifications/message"),
        "{all:?}"
    );
    assert_eq!(all[3]["id"], "f");
    // A client that takes only JSON gets the answers alone.
    let answers = g
        .json_batch(
            &sid,
            &json!([call("f2", "flood", json!({"n": 3, "size": 10})), ping(3)]),
        )
        .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0]["id"], "f2");
    assert_eq!(answers[0]["result"]["content"][0]["text"], "3 events sent");
    assert_eq!(answers[1], pong(3));
}

#[tokio::test]
async fn an_upstream_that_fails_the_rest_of_a_batch_answers_each_request_with_an_error() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    g.upstream.set_down(true);
    let batch = json!([call(1, "delete_customer", json!({})), ping(2), ping(3)]);
    let answers = g.json_batch(&sid, &batch).await;
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(error(&answers[0]).0, -32001);
    for a in &answers[1..] {
        assert_eq!(error(a), (-32603, "upstream error"));
    }
}

#[tokio::test]
async fn a_batch_with_a_request_id_twice_is_refused() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let batch = json!([call(1, "list_charges", json!({})), ping(1)]);
    let r = g.post_batch(Some(&sid), BOTH, &batch).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(g.upstream.calls().is_empty());
}

#[tokio::test]
async fn each_call_in_a_batch_counts_against_the_budget() {
    let g = gw(Opts {
        policy: POLICY.replace(
            "max_tool_calls_per_session: 50",
            "max_tool_calls_per_session: 2",
        ),
        ..Opts::default()
    })
    .await;
    let sid = g.batch_session().await;
    let batch = json!([
        call(1, "list_charges", json!({})),
        call(2, "list_charges", json!({})),
        call(3, "list_charges", json!({})),
        ping(4),
    ]);
    let answers = g.json_batch(&sid, &batch).await;
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    let over: Vec<&Value> = answers[..3]
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert_eq!(over.len(), 1, "{answers:?}");
    assert_eq!(error(over[0]), (-32001, "tool-call budget exceeded"));
    assert_eq!(over[0]["error"]["data"], json!({"limit": 2}));
    assert_eq!(answers[3], pong(4));
    assert_eq!(g.upstream.calls().len(), 2);
    let outcomes: Vec<String> = g.audit(&sid, 3).await.into_iter().map(|r| r.2).collect();
    assert_eq!(outcomes, ["budget_exceeded", "forwarded", "forwarded"]);
}

#[tokio::test]
async fn a_held_call_with_a_progress_token_gets_progress_while_the_batch_waits() {
    let g = gw(Opts::default()).await;
    let sid = g.batch_session().await;
    let mut held = call(1, "create_refund", json!({"amount": 500}));
    held["params"]["_meta"] = json!({"progressToken": "tok-1"});
    let batch = json!([held, call(2, "list_charges", json!({}))]);
    let mut r = g.sse_batch(&sid, &batch).await;
    assert_eq!(r.next_message().await.unwrap()["id"], 2);
    // Two keepalive ticks while the refund waits: each is a progress notification for its token.
    let mut progress = Vec::new();
    while progress.len() < 2 {
        let m = r.next_message().await.expect("progress before the end");
        assert_eq!(m["method"], "notifications/progress", "{m}");
        progress.push(m);
    }
    assert_eq!(progress[0]["params"]["progressToken"], "tok-1");
    assert_eq!(progress[0]["params"]["progress"], 1);
    assert_eq!(progress[1]["params"]["progress"], 2);
    assert_eq!(
        progress[0]["params"]["message"],
        "waiting for approval by U0123ABCD"
    );
    let ticket = g.wait_for_request().await;
    decide(&g.db, &g.redis, ticket, Decision::Approve, true).await;
    let rest = r.rest().await;
    let answer = rest
        .iter()
        .find(|m| m.get("id").is_some())
        .expect("the answer");
    assert_eq!(answer["id"], 1);
    assert_eq!(echoed(answer)["tool"], "create_refund");
}
