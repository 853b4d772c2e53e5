//! The link to the upstream: no allowed call fails on a connection the upstream already closed,
//! a request that never reached the upstream is sent again, one that did is not; and the
//! refusals of bad transport headers say what is wrong.

use std::time::{Duration, Instant};

use airlock_gateway::upstream::{Outgoing, Upstream};
use airlock_test_support::upstream::{FakeUpstream, Mode, Serving};
use axum::http::HeaderMap;
use serde_json::json;

use super::helpers::*;

/// The fake upstream closes keep-alive connections idle for this long.
const UPSTREAM_KEEPALIVE: Duration = Duration::from_secs(1);

async fn gateway(idle_timeout: Duration) -> TestApp {
    spawn_with(Opts {
        upstream_idle_timeout: idle_timeout,
        upstream_serving: Serving {
            close_idle_after: Some(UPSTREAM_KEEPALIVE),
            ..Serving::default()
        },
        ..Opts::default()
    })
    .await
}

/// `clients` sessions each make `calls` allowed calls with gaps of 0.9 s to 1.2 s; returns how
/// many failed, with the first failure for the message.
async fn sustained(app: &TestApp, clients: usize, calls: usize) -> (usize, Option<String>) {
    let mut runs = Vec::new();
    for c in 0..clients {
        let sid = app.initialize(BILLING_TOKEN).await;
        let url = app.url();
        runs.push(tokio::spawn(async move {
            let mut failed = Vec::new();
            for i in 0..calls {
                let gap = 900 + ((c * 37 + i * 101) % 300) as u64;
                tokio::time::sleep(Duration::from_millis(gap)).await;
                let id = (c * 1000 + i) as i64;
                let args = json!({"limit": i});
                let a = spawn_call(
                    url.clone(),
                    sid.clone(),
                    id,
                    "list_charges",
                    args,
                    "application/json",
                )
                .await
                .unwrap();
                if a.status != 200 || a.body.get("error").is_some() {
                    failed.push(format!("{} {}", a.status, a.text));
                }
            }
            failed
        }));
    }
    let mut failed = Vec::new();
    for r in runs {
        failed.extend(r.await.unwrap());
    }
    (failed.len(), failed.into_iter().next())
}

#[tokio::test]
async fn no_allowed_call_fails_when_idle_connections_retire_before_the_upstream_closes_them() {
    let app = gateway(Duration::from_millis(500)).await;
    let started = Instant::now();
    // 300 calls over about 21 s.
    let (failed, first) = sustained(&app, 15, 20).await;
    assert_eq!(failed, 0, "first failure: {first:?}");
    assert_eq!(app.upstream.call_count(), 300);
    assert_eq!(app.upstream.stale_closes(), 0);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn calls_fail_when_the_gateway_keeps_connections_longer_than_the_upstream() {
    // The control: the same kind of run with connections kept for a minute hits closed ones,
    // so the run above can fail.
    let app = gateway(Duration::from_secs(60)).await;
    let (failed, first) = sustained(&app, 1, 8).await;
    assert!(failed >= 2, "only {failed} of 8 failed");
    let first = first.unwrap();
    assert!(first.contains("upstream error"), "{first}");
    assert!(app.upstream.stale_closes() >= 2);
    // A call that lost its connection after the upstream read it is not sent again.
    assert_eq!(app.upstream.call_count(), 8 - failed);
}

#[tokio::test]
async fn a_connection_that_could_not_be_made_is_tried_once_more() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let upstream = Upstream::new(
        format!("http://{addr}/mcp"),
        Duration::from_secs(5),
        4,
        Duration::from_secs(4),
    )
    .unwrap();
    // Nothing listens yet: the first attempt is refused; the upstream comes up before the retry.
    let comes_up = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let serving = Serving {
            addr: Some(addr),
            ..Serving::default()
        };
        FakeUpstream::spawn_serving(Mode::Json, serving).await
    });
    let headers = HeaderMap::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = upstream
        .send(Outgoing {
            method: reqwest::Method::POST,
            body: Some(init.to_string().into()),
            headers: &headers,
            upstream_session: None,
        })
        .await
        .expect("the retry reaches the upstream");
    assert_eq!(resp.status(), 200);
    let fake = comes_up.await.unwrap();
    assert_eq!(fake.requests().len(), 1, "sent once, after the refusal");
}

#[tokio::test]
async fn a_call_that_reached_the_upstream_and_lost_its_connection_is_not_sent_again() {
    let app = spawn_with(Opts {
        policy: POLICY.replace(r#""explode"]"#, r#""explode", "hangup"]"#),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app.call(BILLING_TOKEN, &sid, 1, "hangup", json!({})).await;
    assert_eq!(a.code(), Some(-32603), "{}", a.text);
    // Give a wrong retry the time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = app
        .upstream
        .calls()
        .iter()
        .filter(|c| c.tool == "hangup")
        .count();
    assert_eq!(runs, 1);
}

fn call_body() -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "list_charges", "arguments": {}}}).to_string()
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_refused_with_the_supported_list() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let before = app.upstream.requests().len();
    for bad in ["2099-01-01", "banana", "2024-11-05"] {
        let resp = app
            .post(Some(BILLING_TOKEN), Some(&sid), call_body())
            .header("mcp-protocol-version", bad)
            .send()
            .await
            .unwrap();
        let a = read_answer(resp).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
        // MCP's UnsupportedProtocolVersion, whatever era the client thought it spoke.
        assert_eq!(a.code(), Some(-32022), "{}", a.text);
        assert!(a.message().contains(bad), "{}", a.text);
        assert_eq!(
            a.body.pointer("/error/data/supported"),
            Some(&json!([
                "2025-03-26",
                "2025-06-18",
                "2025-11-25",
                "2026-07-28"
            ])),
            "{}",
            a.text
        );
    }
    // `initialize` too.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = app
        .post(Some(BILLING_TOKEN), None, init.to_string())
        .header("mcp-protocol-version", "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(app.upstream.requests().len(), before, "forwarded upstream");
    // A supported one passes.
    let resp = app
        .post(Some(BILLING_TOKEN), Some(&sid), call_body())
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    let a = read_answer(resp).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.body.get("result").is_some(), "{}", a.text);
}

#[tokio::test]
async fn a_bad_session_id_is_refused_as_bad_not_as_missing() {
    let app = spawn_app().await;
    let too_long = "a".repeat(200);
    let a = read_answer(
        app.post(Some(BILLING_TOKEN), Some(&too_long), call_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.message().contains("too long"), "{}", a.text);

    for malformed in [&b"has space"[..], b"caf\xc3\xa9", b"tab\there"] {
        let value = reqwest::header::HeaderValue::from_bytes(malformed).unwrap();
        let a = read_answer(
            app.post(Some(BILLING_TOKEN), None, call_body())
                .header("mcp-session-id", value)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 400, "{malformed:?}: {}", a.text);
        assert!(a.message().contains("malformed"), "{}", a.text);
    }

    let a = read_answer(
        app.post(Some(BILLING_TOKEN), None, call_body())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.message().contains("required"), "{}", a.text);
    assert!(app.upstream.requests().is_empty());
}

#[tokio::test]
async fn an_initialize_in_a_batch_or_without_an_id_is_refused_for_what_it_is() {
    let app = spawn_app().await;
    let params = json!({"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}});
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}]);
    let notification = json!({"jsonrpc": "2.0", "method": "initialize", "params": params});
    for body in [batch, notification] {
        let a = read_answer(
            app.post(Some(BILLING_TOKEN), None, body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, 400, "{}", a.text);
        assert!(a.message().contains("initialize"), "{}", a.text);
    }
    assert!(app.upstream.requests().is_empty());
}
