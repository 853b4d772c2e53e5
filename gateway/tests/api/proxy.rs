//! Authentication, sessions, the plain proxy, and every refusal in the outcome table.

use std::time::Duration;

use airlock_test_support::upstream::Mode;
use serde_json::json;

use super::helpers::*;

#[tokio::test]
async fn requests_without_a_valid_token_get_401_before_any_work() {
    let app = spawn_app().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string();
    for token in [None, Some("wrong"), Some("")] {
        let r = app.post(token, None, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 401, "token {token:?}");
        assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
    }
    // A body that would be a parse error still gets 401 first.
    let r = app.post(Some("wrong"), None, "{nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        app.upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    // The upstream's own session id never reaches the client.
    let upstream_sid = app.upstream.requests()[0]
        .1
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        upstream_sid.is_none(),
        "initialize carries no session upstream"
    );
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mine = read_answer(
        app.post(Some(BILLING_TOKEN), Some(&sid), list.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(mine.status, 200);
    assert_eq!(
        mine.body.pointer("/result/tools/0/name"),
        Some(&json!("list_charges"))
    );
    // Another principal using the same session id: 404, as if unknown.
    let theirs = app
        .post(Some(OTHER_TOKEN), Some(&sid), list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    let unknown = app
        .post(Some(BILLING_TOKEN), Some("no-such-session"), list.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let missing = app
        .post(Some(BILLING_TOKEN), None, list)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    // The upstream saw the tools/list with its own session id, not ours.
    let (_, h) = app
        .upstream
        .requests()
        .into_iter()
        .find(|(m, _)| m == "tools/list")
        .unwrap();
    let forwarded = h.get("mcp-session-id").unwrap().to_str().unwrap();
    assert_ne!(forwarded, sid);
}

#[tokio::test]
async fn allowed_calls_return_the_upstreams_own_answer_json_and_sse() {
    for mode in [Mode::Json, Mode::Sse] {
        let app = spawn_with(Opts {
            mode,
            ..Opts::default()
        })
        .await;
        let sid = app.initialize(BILLING_TOKEN).await;
        let a = app
            .call(BILLING_TOKEN, &sid, 7, "list_charges", json!({"limit": 3}))
            .await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body["id"], json!(7));
        assert_eq!(
            a.tool_text(),
            json!({"tool": "list_charges", "arguments": {"limit": 3}})
        );
        let ct = a.headers.get("content-type").unwrap().to_str().unwrap();
        match mode {
            Mode::Json => assert!(ct.starts_with("application/json"), "{ct}"),
            Mode::Sse => {
                assert!(ct.starts_with("text/event-stream"), "{ct}");
                assert!(a.text.contains("id: 1"), "event ids are kept: {}", a.text);
            }
        }
        assert_eq!(app.upstream.calls().len(), 1);
        // Small refunds are allowed and not read-only: they take and release the lock.
        let a = app
            .call(
                BILLING_TOKEN,
                &sid,
                8,
                "create_refund",
                json!({"amount": 5}),
            )
            .await;
        assert_eq!(
            a.tool_text()["tool"],
            json!("create_refund"),
            "{mode:?}: {:?}",
            a.body
        );
    }
}

#[tokio::test]
async fn sse_answers_stream_without_buffering() {
    let app = spawn_with(Opts {
        mode: Mode::Sse,
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 1500}, "_meta": {"progressToken": "p1"}}});
    let started = std::time::Instant::now();
    let mut resp = app
        .post(Some(BILLING_TOKEN), Some(&sid), body.to_string())
        .send()
        .await
        .unwrap();
    // The progress event arrives long before the final answer.
    let first = resp.chunk().await.unwrap().unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.contains("notifications/progress"), "{first}");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "first event took {:?}",
        started.elapsed()
    );
    let mut rest = String::new();
    while let Some(c) = resp.chunk().await.unwrap() {
        rest.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(rest.contains("\"result\""), "{rest}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn policy_denials_carry_the_rule_and_reason() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            1,
            "delete_customer",
            json!({"id": "c1"}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.code(), Some(-32001));
    assert_eq!(a.message(), "denied by policy");
    assert_eq!(
        a.body.pointer("/error/data/rule"),
        Some(&json!("never delete"))
    );
    assert_eq!(
        a.body.pointer("/error/data/reason"),
        Some(&json!("deleting is not allowed from agents"))
    );
    // The default (deny) has no rule of its own.
    let a = app
        .call(BILLING_TOKEN, &sid, 2, "launch_rockets", json!({}))
        .await;
    assert_eq!(
        (a.code(), a.body.pointer("/error/data/rule")),
        (Some(-32001), Some(&json!("default")))
    );
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn the_budget_is_per_session_and_checked_before_the_rules() {
    let policy = POLICY.replace(
        "max_tool_calls_per_session: 50",
        "max_tool_calls_per_session: 3",
    );
    let app = spawn_with(Opts {
        policy,
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    for i in 0..3 {
        let a = app
            .call(BILLING_TOKEN, &sid, i, "list_charges", json!({}))
            .await;
        assert!(a.code().is_none(), "call {i}: {:?}", a.body);
    }
    // Even a call that policy would deny reports the budget first.
    let a = app
        .call(BILLING_TOKEN, &sid, 9, "delete_customer", json!({}))
        .await;
    assert_eq!(
        (a.code(), a.message()),
        (Some(-32001), "tool-call budget exceeded")
    );
    let a = app
        .call(BILLING_TOKEN, &sid, 10, "list_charges", json!({}))
        .await;
    assert_eq!(a.message(), "tool-call budget exceeded");
    // A mutating call over budget is refused in the same round trip, before it takes the lock.
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            11,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert_eq!(a.message(), "tool-call budget exceeded");
    let mut conn = app.redis.conn().await;
    let lock_exists: bool = redis::cmd("EXISTS")
        .arg(
            app.redis
                .keys
                .session_lock(&airlock_shared::SessionId(sid.clone())),
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!lock_exists);
    // Another session has its own budget.
    let other = app.initialize(BILLING_TOKEN).await;
    assert!(
        app.call(BILLING_TOKEN, &other, 1, "list_charges", json!({}))
            .await
            .code()
            .is_none()
    );
    assert_eq!(app.upstream.calls().len(), 4);
}

#[tokio::test]
async fn requests_beyond_upstream_concurrency_queue_instead_of_piling_onto_the_upstream() {
    let app = spawn_with(Opts {
        upstream_concurrency: 2,
        ..Opts::default()
    })
    .await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(app.initialize(BILLING_TOKEN).await);
    }
    let started = std::time::Instant::now();
    let calls: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, sid)| {
            spawn_call(
                app.url(),
                sid.clone(),
                i as i64,
                "stall",
                json!({"ms": 200}),
                "application/json",
            )
        })
        .collect();
    for c in calls {
        let a = c.await.unwrap();
        assert!(a.code().is_none(), "{:?}", a.body);
    }
    // Six calls of 200 ms, two at a time: three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.upstream.max_posts_in_flight(), 2);
    assert_eq!(app.upstream.calls().len(), 6);
}

#[tokio::test]
async fn upstream_trouble_is_a_json_rpc_upstream_error() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app.call(BILLING_TOKEN, &sid, 1, "explode", json!({})).await;
    assert_eq!(
        (a.status, a.code(), a.message()),
        (200, Some(-32603), "upstream error")
    );
    app.upstream.set_down(true);
    let a = app
        .call(BILLING_TOKEN, &sid, 2, "list_charges", json!({}))
        .await;
    assert_eq!((a.code(), a.message()), (Some(-32603), "upstream error"));
    assert_eq!(a.body["id"], json!(2));
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_upstream_error() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    // Point a second gateway at a port nobody listens on, sharing the session table.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = app.second_config();
    cfg.upstream_mcp_url = format!("http://{dead}/mcp");
    let (addr, shutdown, _h) = start_gateway(&cfg).await;
    let body = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "list_charges", "arguments": {}}});
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/mcp"))
        .bearer_auth(BILLING_TOKEN)
        .header("content-type", "application/json")
        .header("mcp-session-id", &sid)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let a = read_answer(r).await;
    assert_eq!(
        (a.code(), a.message(), a.body["id"].clone()),
        (Some(-32603), "upstream error", json!(5))
    );
    shutdown.cancel();
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let parse = read_answer(
        app.post(Some(BILLING_TOKEN), Some(&sid), "{\"jsonrpc\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((parse.status, parse.code()), (400, Some(-32700)));
    let invalid = read_answer(
        app.post(
            Some(BILLING_TOKEN),
            Some(&sid),
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((invalid.status, invalid.code()), (400, Some(-32600)));
    let too_big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"list_charges","arguments":{{"pad":"{}"}}}}}}"#,
        "x".repeat(70 * 1024)
    );
    let r = app
        .post(Some(BILLING_TOKEN), Some(&sid), too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = app
        .http
        .post(app.url())
        .bearer_auth(BILLING_TOKEN)
        .header("mcp-session-id", &sid)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let bad_params = app.call(BILLING_TOKEN, &sid, 3, "", json!({})).await;
    assert_eq!(bad_params.code(), Some(-32602));
    // Batches ended with 2025-06-18 (earlier versions get policy per call: see batch.rs).
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_charges"}}]).to_string();
    let r = app
        .post(Some(BILLING_TOKEN), Some(&sid), batch)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A tools/call without an id is refused, not passed on unchecked.
    let no_id =
        json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "list_charges"}})
            .to_string();
    let r = app
        .post(Some(BILLING_TOKEN), Some(&sid), no_id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
    // Nothing of the above reached the upstream as a tool call.
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn notifications_get_202_and_delete_ends_the_session() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let r = app
        .post(
            Some(BILLING_TOKEN),
            Some(&sid),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = app
        .http
        .delete(app.url())
        .bearer_auth(BILLING_TOKEN)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .post(
            Some(BILLING_TOKEN),
            Some(&sid),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn health_readiness_metrics_and_audit() {
    let app = spawn_app().await;
    let h = app
        .http
        .get(format!("http://{}/healthz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r = app
        .http
        .get(format!("http://{}/readyz", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sid = app.initialize(BILLING_TOKEN).await;
    app.call(BILLING_TOKEN, &sid, 1, "list_charges", json!({}))
        .await;
    app.call(BILLING_TOKEN, &sid, 2, "delete_customer", json!({}))
        .await;
    let rows = eventually(Duration::from_secs(5), || async {
        let rows = airlock_shared::audit::for_session(&app.db.pool, &sid)
            .await
            .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await
    .expect("two audit rows");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str(), rows[0].2.as_str()),
        ("list_charges", "allow", "forwarded")
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1.as_str(), rows[1].2.as_str()),
        ("delete_customer", "deny", "denied")
    );
    let principals = airlock_shared::audit::principals_for_session(&app.db.pool, &sid)
        .await
        .unwrap();
    assert_eq!(principals, ["billing-bot", "billing-bot"]);
    let m = app
        .http
        .get(format!("http://{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("airlock_tool_calls_total{outcome=\"forwarded\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("airlock_tool_calls_total{outcome=\"denied\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn invalid_policy_files_stop_the_start() {
    let app = spawn_app().await;
    let dir =
        std::env::temp_dir().join(format!("airlock-gw-bad-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        "version: 1\ndefault: deny\nrules:\n  - name: x\n    tools: [\"[\"]\n    action: allow\n",
    )
    .unwrap();
    std::fs::write(dir.join("k.yaml"), "agents: []\n").unwrap();
    let mut cfg = config_for(
        &app.db,
        &app.redis,
        &app.upstream,
        &app.opts,
        dir.join("p.yaml").display().to_string(),
        dir.join("k.yaml").display().to_string(),
    );
    let err = airlock_gateway::build(&cfg)
        .await
        .err()
        .expect("bad policy refused");
    let text = err.to_string();
    assert!(
        text.contains("bad glob") && text.contains("line 5"),
        "{text}"
    );
    cfg.policy_file = dir.join("missing.yaml").display().to_string();
    let err = airlock_gateway::build(&cfg)
        .await
        .err()
        .expect("missing policy refused");
    assert!(err.to_string().contains("missing.yaml"));
}
