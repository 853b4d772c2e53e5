//! Restart-proof tasks: the gateway binary that made two tasks is killed with SIGKILL, both
//! tickets are approved, and the other replica runs each call exactly once: the first because a
//! poll found it approved and unclaimed, the second through the sweeper, with nobody polling.

use std::time::Duration;

use airlock_shared::TicketStatus;
use airlock_shared::ticket::Decision;
use serde_json::json;

use super::helpers::*;
use super::tasks::Client;

/// The real binary on this test's database, Redis, upstream and files.
fn gateway_binary(app: &TestApp, port: u16) -> tokio::process::Child {
    let dir = app.files_dir();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock-gateway"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &app.redis.url)
        .env("REDIS_KEY_PREFIX", app.redis.keys.prefix())
        .env("UPSTREAM_MCP_URL", app.upstream.url())
        .env("POLICY_FILE", dir.join("policy.yaml"))
        .env("AGENT_KEYS_FILE", dir.join("agents.yaml"))
        .env("TASK_POLL_INTERVAL", "100ms")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn kill_9_the_creator_and_another_replica_runs_each_approved_task_once() {
    let app = spawn_app().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = gateway_binary(&app, port);
    let up = eventually(Duration::from_secs(20), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
        r.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    assert!(up.is_some(), "the gateway binary did not start");
    let on_a = Client::classic(format!("http://127.0.0.1:{port}/mcp"), BILLING_TOKEN).await;
    let first = on_a.create(500, "polled").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = on_a.create(501, "swept").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let t1 = wait_for_request(&app.redis, 0).await;
    let t2 = wait_for_request(&app.redis, 1).await;

    child.kill().await.unwrap(); // SIGKILL: no shutdown, no goodbye
    for t in [t1, t2] {
        decide(&app.db, &app.redis, t, Decision::Approve, true).await;
    }
    // The same session, through the surviving replica (the TestApp's own gateway).
    let on_b = Client {
        url: app.url(),
        session: on_a.session.clone(),
        token: BILLING_TOKEN,
        declares: false,
    };
    let done = on_b.until(&first, "completed").await;
    assert_eq!(done["status"], "completed");
    let r = on_b.rpc(3, "tasks/result", json!({"taskId": first})).await;
    assert_eq!(r.tool_text()["arguments"]["note"], "polled", "{:?}", r.body);

    // Nobody polls the second: the sweeper takes it over after a few seconds.
    let ran = eventually(Duration::from_secs(15), || async {
        (app.upstream.call_count() == 2).then_some(())
    })
    .await;
    assert!(ran.is_some(), "the sweeper never ran the approved task");
    let r = on_b.rpc(4, "tasks/result", json!({"taskId": second})).await;
    assert_eq!(r.tool_text()["arguments"]["note"], "swept", "{:?}", r.body);

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        app.upstream.call_count(),
        2,
        "each approved call ran exactly once"
    );
    for t in [t1, t2] {
        assert_eq!(app.ticket(t).await.status, TicketStatus::Executed);
    }
}
