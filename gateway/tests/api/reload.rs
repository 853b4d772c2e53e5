//! Live reload of the policy and agent keys: held calls keep the verdict they were held by,
//! new calls follow the new file, an invalid file changes nothing, and every ticket and audit
//! row names the revision that decided it.

use std::time::Duration;

use airlock_gateway::policy::Policy;
use airlock_shared::NotifyJob;
use airlock_shared::ticket::Decision;
use serde_json::json;

use super::helpers::*;

const HOLD_REFUNDS: &str = r#"
version: 1
default: deny
rules:
  - { name: refunds, tools: ["create_refund"], action: approve, approvers: [U0123ABCD] }
"#;
const ALLOW_REFUNDS: &str = r#"
version: 1
default: deny
rules:
  - { name: refunds, tools: ["create_refund"], action: allow }
"#;
const HELD: usize = 20;

fn revision(text: &str) -> String {
    Policy::parse(text).unwrap().revision.to_string()
}

/// Waits until `/metrics` shows `needle`.
async fn until_metrics(app: &TestApp, needle: &str) {
    let seen = eventually(Duration::from_secs(10), || async {
        app.metrics().await.contains(needle).then_some(())
    })
    .await;
    assert!(seen.is_some(), "metrics never showed {needle}");
}

fn approval_requests(jobs: &[NotifyJob]) -> usize {
    jobs.iter()
        .filter(|j| matches!(j, NotifyJob::ApprovalRequest { .. }))
        .count()
}

#[tokio::test]
async fn held_calls_finish_under_the_old_policy_and_new_calls_follow_the_new_one() {
    let app = spawn_with(Opts {
        policy: HOLD_REFUNDS.to_owned(),
        ..Opts::default()
    })
    .await;
    let (old, new) = (revision(HOLD_REFUNDS), revision(ALLOW_REFUNDS));
    until_metrics(
        &app,
        &format!("airlock_policy_info{{revision=\"{old}\"}} 1"),
    )
    .await;
    // One session per held call: a session runs one mutating call at a time.
    let mut sessions = Vec::new();
    for _ in 0..HELD {
        sessions.push(app.initialize(BILLING_TOKEN).await);
    }
    let held: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, sid)| {
            let args = json!({"amount": 1000 + i});
            spawn_call(
                app.url(),
                sid.clone(),
                i as i64,
                "create_refund",
                args,
                BOTH,
            )
        })
        .collect();
    let mut tickets = Vec::new();
    for n in 0..HELD {
        tickets.push(wait_for_request(&app.redis, n).await);
    }

    std::fs::write(app.files_dir().join("policy.yaml"), ALLOW_REFUNDS).unwrap();
    until_metrics(
        &app,
        &format!("airlock_policy_info{{revision=\"{new}\"}} 1"),
    )
    .await;
    until_metrics(&app, "airlock_policy_reloads_total{outcome=\"applied\"} 1").await;
    // A new call follows the new policy: forwarded at once, nobody asked.
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            100,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert_eq!(a.tool_text()["tool"], "create_refund", "{:?}", a.body);
    assert_eq!(approval_requests(&app.jobs().await), HELD);
    // The held calls were held by the old policy: they still need their approval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held call was let through by the reload"
    );
    assert_eq!(app.upstream.call_count(), 1);
    for id in &tickets {
        decide(&app.db, &app.redis, *id, Decision::Approve, true).await;
    }
    for h in held {
        let a = h.await.unwrap();
        assert_eq!(a.tool_text()["tool"], "create_refund", "{:?}", a.body);
    }
    assert_eq!(app.upstream.call_count(), HELD + 1);
    for id in &tickets {
        assert_eq!(
            app.ticket(*id).await.policy_revision.as_deref(),
            Some(old.as_str())
        );
    }
    let rows = eventually(Duration::from_secs(5), || async {
        let mut rows = Vec::new();
        for s in sessions.iter().chain([&sid]) {
            rows.extend(
                airlock_shared::audit::revisions_for_session(&app.db.pool, s)
                    .await
                    .unwrap(),
            );
        }
        (rows.len() == HELD + 1).then_some(rows)
    })
    .await
    .expect("an audit row per call");
    let by_new = rows
        .iter()
        .filter(|(_, r)| r.as_deref() == Some(&*new))
        .count();
    let by_old = rows
        .iter()
        .filter(|(_, r)| r.as_deref() == Some(&*old))
        .count();
    assert_eq!((by_old, by_new), (HELD, 1), "{rows:?}");
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_policy_in_force_stays() {
    let app = spawn_with(Opts {
        policy: ALLOW_REFUNDS.to_owned(),
        billing_owner: Some("U0OWNER".into()),
        ..Opts::default()
    })
    .await;
    let rev = revision(ALLOW_REFUNDS);
    let sid = app.initialize(BILLING_TOKEN).await;
    let policy = app.files_dir().join("policy.yaml");
    // Each of these is refused whole: bad YAML, a bad value, a rule the keys file rules out
    // (the only approver is the agent's owner, so nobody could ever approve).
    for bad in [
        "version: 1\ndefault: deny\nrules: [".to_owned(),
        "version: 1\ndefault: perhaps\n".to_owned(),
        HOLD_REFUNDS.replace("U0123ABCD", "U0OWNER"),
    ] {
        let refused_before = refused(&app).await;
        std::fs::write(&policy, &bad).unwrap();
        let after = eventually(Duration::from_secs(10), || async {
            let n = refused(&app).await;
            (n > refused_before).then_some(n)
        })
        .await;
        assert!(after.is_some(), "not refused: {bad}");
        let a = app
            .call(
                BILLING_TOKEN,
                &sid,
                1,
                "create_refund",
                json!({"amount": 5}),
            )
            .await;
        assert_eq!(a.tool_text()["tool"], "create_refund", "{:?}", a.body);
        assert!(
            app.metrics()
                .await
                .contains(&format!("airlock_policy_info{{revision=\"{rev}\"}} 1"))
        );
    }
}

async fn refused(app: &TestApp) -> u64 {
    let m = app.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix("airlock_policy_reloads_total{outcome=\"refused\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_seen() {
    let app = spawn_with(Opts {
        policy: HOLD_REFUNDS.to_owned(),
        ..Opts::default()
    })
    .await;
    // Kubernetes mounts `policy.yaml -> ..data/policy.yaml`, `..data -> ..<timestamp>` and
    // updates by pointing a new `..data` at a new directory, in one rename.
    let dir = app.files_dir();
    let (v1, v2) = (dir.join("..v1"), dir.join("..v2"));
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v1.join("policy.yaml"), HOLD_REFUNDS).unwrap();
    std::fs::write(v2.join("policy.yaml"), ALLOW_REFUNDS).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::remove_file(&policy).unwrap();
    std::os::unix::fs::symlink("..data/policy.yaml", &policy).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !app.metrics().await.contains("outcome=\"applied\""),
        "same content, no reload"
    );

    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let new = revision(ALLOW_REFUNDS);
    until_metrics(
        &app,
        &format!("airlock_policy_info{{revision=\"{new}\"}} 1"),
    )
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            1,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert_eq!(a.tool_text()["tool"], "create_refund", "{:?}", a.body);
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let app = spawn_with(Opts {
        policy: HOLD_REFUNDS.to_owned(),
        ..Opts::default()
    })
    .await;
    // The real binary in its own process (a signal to this one would reach every test's
    // gateway), on the same files, polling too rarely to matter: only SIGHUP reloads it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = app.files_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_airlock-gateway"))
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("DATABASE_URL", &app.db.url)
        .env("REDIS_URL", &app.redis.url)
        .env("REDIS_KEY_PREFIX", app.redis.keys.prefix())
        .env("UPSTREAM_MCP_URL", app.upstream.url())
        .env("POLICY_FILE", dir.join("policy.yaml"))
        .env("AGENT_KEYS_FILE", dir.join("agents.yaml"))
        .env("POLICY_RELOAD_INTERVAL", "1h")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = || async move {
        match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let old = format!(
        "airlock_policy_info{{revision=\"{}\"}} 1",
        revision(HOLD_REFUNDS)
    );
    let up = eventually(Duration::from_secs(20), || async {
        metrics().await.contains(&old).then_some(())
    })
    .await;
    assert!(up.is_some(), "the gateway binary did not start");
    std::fs::write(dir.join("policy.yaml"), ALLOW_REFUNDS).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = format!(
        "airlock_policy_info{{revision=\"{}\"}} 1",
        revision(ALLOW_REFUNDS)
    );
    assert!(!metrics().await.contains(&new), "reloaded without a SIGHUP");
    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let seen = eventually(Duration::from_secs(5), || async {
        metrics().await.contains(&new).then_some(())
    })
    .await;
    assert!(seen.is_some(), "SIGHUP did not reload");
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the gateway"
    );
    child.kill().await.unwrap();
}
