//! The proxy is transparent: streamable HTTP in full, holds that real clients survive, and
//! discovery that survives upstream trouble.

use std::time::Duration;

use airlock_gateway::sse::Parser;
use airlock_shared::TicketStatus;
use airlock_test_support::upstream::{FakeUpstream, Mode};
use serde_json::{Value, json};

use super::helpers::*;

/// A gateway in front of an upstream in `mode`, under `policy`, with a short keepalive.
async fn gw(mode: Mode, policy: &str) -> TestApp {
    spawn_with(Opts {
        mode,
        policy: policy.to_owned(),
        keepalive_interval: SHORT_KEEPALIVE,
        ..Opts::default()
    })
    .await
}

const HIDING_POLICY: &str = r#"
version: 1
default: deny
hide_denied_tools: true
rules:
  - { name: reads are free, tools: ["list_*"], action: allow, read_only: true }
  - name: big refunds need a manager
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
    approvers: [U0123ABCD]
  - { name: small refunds, tools: ["create_refund"], action: allow }
  - { name: test tools, tools: ["slow", "ask_client", "flood", "die"], action: allow }
"#;

fn call(id: i64, tool: &str, args: Value, token: Option<&str>) -> Value {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(t) = token {
        params["_meta"] = json!({"progressToken": t});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

/// Sends a refund that the policy holds for approval, accepting JSON or SSE.
async fn held_refund(g: &TestApp, sid: &str, id: i64, token: Option<&str>) -> reqwest::Response {
    let body = call(id, "create_refund", json!({"amount": 500}), token);
    g.send(Some(sid), BOTH, body).await
}

#[tokio::test]
async fn a_held_call_gets_progress_keepalives_then_the_upstreams_own_sse_answer() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let resp = held_refund(&g, &sid, 7, Some("pt-1")).await;
    assert_eq!(resp.status(), 200);
    let mut r = Reader::new(resp);
    let mut last = 0.0;
    for _ in 0..3 {
        let m = r.next_json().await.unwrap();
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "pt-1");
        let p = m["params"]["progress"].as_f64().unwrap();
        assert!(p > last, "progress increases: {p} after {last}");
        last = p;
        assert_eq!(
            m["params"]["message"], "waiting for approval by U0123ABCD",
            "{m}"
        );
    }
    let ticket = g.approve_next(0).await;
    // After the decision, the upstream's own events follow in the same stream, ids kept.
    let mut upstream_events = Vec::new();
    while let Some(e) = r.next().await {
        let m = e.json().unwrap();
        if m["method"] == "notifications/progress" && m["params"]["message"].is_string() {
            continue; // a keepalive that raced the decision
        }
        upstream_events.push((e.id.clone(), m));
    }
    assert_eq!(upstream_events.len(), 2, "{upstream_events:?}");
    assert_eq!(upstream_events[0].0.as_deref(), Some("1"));
    assert_eq!(upstream_events[0].1["params"]["progress"], 1);
    assert_eq!(upstream_events[1].0.as_deref(), Some("2"));
    assert_eq!(upstream_events[1].1["id"], 7);
    assert!(upstream_events[1].1["result"]["content"].is_array());
    assert_eq!(g.upstream.calls().len(), 1);
    let t = ticket::get(&g.db.pool, ticket).await.unwrap().unwrap();
    assert_eq!(t.status, TicketStatus::Executed);
}

use airlock_shared::ticket;

#[tokio::test]
async fn without_a_progress_token_the_hold_sends_comments_and_json_answers_become_events() {
    let g = gw(Mode::Json, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let resp = held_refund(&g, &sid, 8, None).await;
    let mut r = Reader::new(resp);
    tokio::time::sleep(SHORT_KEEPALIVE * 3).await;
    g.approve_next(0).await;
    let answer = r.next_json().await.unwrap();
    assert_eq!(answer["id"], 8);
    assert!(answer["result"].is_object(), "{answer}");
    assert!(r.next().await.is_none());
    let comments = r.raw.matches(": waiting for approval\n\n").count();
    assert!(comments >= 2, "keepalive comments: {}", r.raw);
    assert!(!r.raw.contains("notifications/progress"));
}

#[tokio::test]
async fn a_held_call_that_is_denied_or_cancelled_ends_its_stream_with_the_error() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let resp = held_refund(&g, &sid, 9, Some("c1")).await;
    let mut r = Reader::new(resp);
    let id = wait_for_request(&g.redis, 0).await;
    let cancel = g
        .send(
            Some(&sid),
            BOTH,
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9, "reason": "user gave up"}}),
        ).await;
    assert_eq!(cancel.status(), 202);
    let mut answer = r.next_json().await.unwrap();
    while answer.get("id").is_none() {
        answer = r.next_json().await.unwrap();
    }
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["error"]["code"], -32001);
    assert_eq!(answer["error"]["message"], "approval cancelled");
    let t = ticket::get(&g.db.pool, id).await.unwrap().unwrap();
    assert_eq!(t.status, TicketStatus::Cancelled);
    assert!(g.upstream.calls().is_empty());
}

#[tokio::test]
async fn json_only_clients_get_plain_json_even_when_the_upstream_streams() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let plain = g
        .send(
            Some(&sid),
            "application/json",
            call(1, "list_charges", json!({}), Some("p")),
        )
        .await;
    assert_eq!(plain.status(), 200);
    assert!(
        plain.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = plain.json().await.unwrap();
    assert_eq!(v["id"], 1);
    assert!(v["result"].is_object(), "{v}");
    // A held call too: no stream, just the answer once decided.
    let held = tokio::spawn(
        g.request(
            Some(&sid),
            "application/json",
            call(2, "create_refund", json!({"amount": 500}), Some("p")),
        )
        .send(),
    );
    g.approve_next(0).await;
    let resp = held.await.unwrap().unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], 2);
    assert!(v["result"]["content"].is_array(), "{v}");
}

#[tokio::test]
async fn server_to_client_requests_reach_the_client_and_its_responses_reach_the_upstream() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    for (n, method) in ["sampling/createMessage", "elicitation/create", "roots/list"]
        .into_iter()
        .enumerate()
    {
        let resp = g
            .send(
                Some(&sid),
                BOTH,
                call(n as i64, "ask_client", json!({"method": method}), None),
            )
            .await;
        let mut r = Reader::new(resp);
        let question = r.next_json().await.unwrap();
        assert_eq!(question["method"], method);
        let reply = json!({"jsonrpc": "2.0", "id": question["id"], "result": {"answer": n}});
        let posted = g.send(Some(&sid), BOTH, reply.clone()).await;
        assert_eq!(posted.status(), 202);
        let answer = r.next_json().await.unwrap();
        assert_eq!(answer["id"], n as i64);
        let text: Value =
            serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(text["client_said"], reply, "{method}");
    }
    assert!(g.upstream.stray_responses().is_empty());
}

#[tokio::test]
async fn the_get_stream_relays_server_messages_and_resumes_after_last_event_id() {
    let g = gw(Mode::Json, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let get = |last: Option<&str>| {
        let mut r = g
            .http
            .get(g.url())
            .bearer_auth(BILLING_TOKEN)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid);
        if let Some(l) = last {
            r = r.header("last-event-id", l);
        }
        r.send()
    };
    let mut r = Reader::new(get(None).await.unwrap());
    let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
    let updated = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "file:///a"}});
    g.upstream.push(changed.clone());
    g.upstream.push(updated.clone());
    let a = r.next().await.unwrap();
    let b = r.next().await.unwrap();
    assert_eq!((a.id.as_deref(), a.json()), (Some("1"), Some(changed)));
    assert_eq!((b.id.as_deref(), b.json()), (Some("2"), Some(updated)));
    drop(r);
    let ping = json!({"jsonrpc": "2.0", "id": "s1", "method": "ping"});
    g.upstream.push(ping.clone());
    let mut r = Reader::new(get(Some("2")).await.unwrap());
    let c = r.next().await.unwrap();
    assert_eq!((c.id.as_deref(), c.json()), (Some("3"), Some(ping)));
    let gets: Vec<_> = g
        .upstream
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "GET")
        .collect();
    assert_eq!(gets.len(), 2);
    assert_eq!(gets[1].1["last-event-id"], "2");
    // An idle stream gets keepalive comments so that proxies keep it open.
    tokio::time::sleep(SHORT_KEEPALIVE * 3).await;
    let chunk = r.resp.chunk().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b": keepalive\n\n");
}

#[tokio::test]
async fn status_codes_follow_the_spec() {
    let g = gw(Mode::Json, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let s = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(s(g.send(Some(&sid), BOTH, note.clone()).await), 202);
    let response = json!({"jsonrpc": "2.0", "id": "x", "result": {}});
    assert_eq!(s(g.send(Some(&sid), BOTH, response).await), 202);
    assert_eq!(s(g.send(None, BOTH, note.clone()).await), 400);
    assert_eq!(s(g.send(Some("nope"), BOTH, note.clone()).await), 404);
    let put = g
        .http
        .put(g.url())
        .bearer_auth(BILLING_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 405);
    let get_no_session = g
        .http
        .get(g.url())
        .bearer_auth(BILLING_TOKEN)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get_no_session.status(), 400);
    let del = g
        .http
        .delete(g.url())
        .bearer_auth(BILLING_TOKEN)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(s(g.send(Some(&sid), BOTH, note).await), 404);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let sid = g.session("2025-06-18").await;
    let pong: Value = g.send(Some(&sid), BOTH, ping).await.json().await.unwrap();
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
}

#[tokio::test]
async fn every_protocol_version_passes_its_header_and_batches_only_where_allowed() {
    let g = gw(Mode::Json, HIDING_POLICY).await;
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = g.init(version).await;
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["result"]["protocolVersion"], version);
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]);
        let resp = g
            .request(Some(&sid), BOTH, batch)
            .header("mcp-protocol-version", version)
            .send()
            .await
            .unwrap();
        if version == "2025-03-26" {
            assert_eq!(resp.status(), 200, "{version}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v, json!([{"jsonrpc": "2.0", "id": 1, "result": {}}]));
        } else {
            assert_eq!(resp.status(), 400, "{version}");
        }
        let ping = g
            .request(
                Some(&sid),
                BOTH,
                json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}),
            )
            .header("mcp-protocol-version", version)
            .send()
            .await
            .unwrap();
        assert_eq!(ping.status(), 200);
        let (_, h) = g.upstream.requests().into_iter().last().unwrap();
        assert_eq!(h["mcp-protocol-version"], version);
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_releases_the_upstream_stream() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let mut resp = g
        .send(
            Some(&sid),
            BOTH,
            call(1, "flood", json!({"n": 1_000_000, "size": 1000}), None),
        )
        .await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    let dropped = eventually(Duration::from_secs(5), || async {
        (g.upstream.streams_dropped() >= 1).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the upstream stream was not released");
    assert!(g.upstream.flood_sent() < 1_000_000);
}

#[tokio::test]
async fn a_slow_reader_does_not_make_the_gateway_buffer() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let n = 20_000u64;
    let mut resp = g
        .send(
            Some(&sid),
            BOTH,
            call(1, "flood", json!({"n": n, "size": 10_000}), None),
        )
        .await;
    assert!(resp.chunk().await.unwrap().is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = g.upstream.flood_sent();
    // 200 MB would be produced without backpressure; socket buffers hold a few MB.
    assert!(
        sent * 10_000 < 32 << 20,
        "upstream ran ahead of a client that does not read: {sent} events"
    );
    // Nothing was lost: the rest arrives once the client reads.
    let mut parser = Parser::default();
    let mut events = 0u64;
    let mut last = Value::Null;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        for e in parser.feed(&chunk) {
            events += 1;
            last = e.json().unwrap();
        }
    }
    assert!(events >= n, "{events}");
    assert_eq!(last["id"], 1);
}

#[tokio::test]
async fn an_upstream_that_dies_mid_stream_gets_an_upstream_error_for_the_request() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let resp = g
        .send(Some(&sid), BOTH, call(5, "die", json!({}), None))
        .await;
    let mut r = Reader::new(resp);
    let first = r.next_json().await.unwrap();
    assert_eq!(first["method"], "notifications/message");
    let answer = r.next_json().await.unwrap();
    assert_eq!(answer["id"], 5);
    assert_eq!(answer["error"]["code"], -32603);
    assert_eq!(answer["error"]["message"], "upstream error");
}

#[tokio::test]
async fn discovery_survives_an_upstream_outage_and_sessions_are_initialised_after_it() {
    let g = gw(Mode::Sse, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    let list = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"});
    let live = read_answer(g.send(Some(&sid), BOTH, list.clone()).await).await;
    assert!(live.body["result"]["tools"].is_array(), "{:?}", live.body);
    g.upstream.set_down(true);
    let cached = read_answer(g.send(Some(&sid), BOTH, list.clone()).await).await;
    assert_eq!(cached.body["result"], live.body["result"]);
    assert_eq!(cached.body["id"], 3);
    // A new session opens from the cached initialize.
    let r = g.init("2025-06-18").await;
    assert_eq!(r.status(), 200);
    let late = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let init = read_answer(r).await;
    assert_eq!(init.body["result"]["serverInfo"]["name"], "fake-upstream");
    let down = read_answer(
        g.send(Some(&late), BOTH, call(4, "list_charges", json!({}), None))
            .await,
    )
    .await;
    assert_eq!(
        (down.code(), down.message()),
        (Some(-32603), "upstream error")
    );
    g.upstream.set_down(false);
    let inits_before = count(&g.upstream, "initialize");
    let up = read_answer(
        g.send(Some(&late), BOTH, call(5, "list_charges", json!({}), None))
            .await,
    )
    .await;
    assert!(up.body["result"]["content"].is_array(), "{:?}", up.body);
    assert_eq!(count(&g.upstream, "initialize"), inits_before + 1);
    assert_eq!(count(&g.upstream, "notifications/initialized"), 1);
}

fn count(u: &FakeUpstream, method: &str) -> usize {
    u.requests().iter().filter(|(m, _)| m == method).count()
}

#[tokio::test]
async fn a_session_the_upstream_forgot_is_reinitialised_once_and_the_call_retried() {
    let g = gw(Mode::Json, HIDING_POLICY).await;
    let sid = g.session("2025-06-18").await;
    g.upstream.forget_sessions();
    let a = read_answer(
        g.send(
            Some(&sid),
            BOTH,
            call(1, "list_charges", json!({"limit": 1}), None),
        )
        .await,
    )
    .await;
    assert!(a.body["result"]["content"].is_array(), "{:?}", a.body);
    assert_eq!(count(&g.upstream, "initialize"), 2);
    assert_eq!(g.upstream.calls().len(), 1);
    // The new upstream session is kept: the next call needs no re-initialise.
    let b = read_answer(
        g.send(Some(&sid), BOTH, call(2, "list_charges", json!({}), None))
            .await,
    )
    .await;
    assert!(b.body["result"].is_object());
    assert_eq!(count(&g.upstream, "initialize"), 2);
    let calls = g.upstream.calls();
    assert_eq!(calls[0].session, calls[1].session);
}

#[tokio::test]
async fn tools_list_hides_denied_tools_and_notes_approvals_in_json_and_sse() {
    for mode in [Mode::Json, Mode::Sse] {
        let g = gw(mode, HIDING_POLICY).await;
        let sid = g.session("2025-06-18").await;
        let a = read_answer(
            g.send(
                Some(&sid),
                BOTH,
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            )
            .await,
        )
        .await;
        let tools = a.body["result"]["tools"].as_array().unwrap().clone();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert!(!names.contains(&"delete_customer"), "{mode:?} {names:?}");
        assert!(names.contains(&"list_charges") && names.contains(&"create_refund"));
        let refund = tools.iter().find(|t| t["name"] == "create_refund").unwrap();
        assert!(
            refund["description"]
                .as_str()
                .unwrap()
                .starts_with("Refund a charge\n\n[Airlock]"),
            "{refund}"
        );
        let list = tools.iter().find(|t| t["name"] == "list_charges").unwrap();
        assert_eq!(list["description"], "List charges");
    }
    // Without the flag, the upstream's list is untouched.
    let g = gw(Mode::Json, POLICY).await;
    let sid = g.session("2025-06-18").await;
    let a = read_answer(
        g.send(
            Some(&sid),
            BOTH,
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await,
    )
    .await;
    assert_eq!(a.body["result"]["tools"].as_array().unwrap().len(), 12);
}
