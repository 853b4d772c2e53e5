//! The real binary: start-up failures, the secret from Secrets Manager (moto as a local AWS),
//! and the Lambda runtime loop against a local Runtime API (`lambda_runtime`).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_shared::TicketStatus;
use airlock_test_support::{fresh_db, fresh_redis};
use webhook_fn::signature;

use crate::helpers::*;
use crate::lambda_runtime::{lambda_env, start_runtime, url_event};

const BIN: &str = env!("CARGO_BIN_EXE_airlock-webhook");

/// Kills the child when the test ends, pass or fail.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn command(env: &HashMap<String, String>) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env)
        .stdin(Stdio::null());
    c
}

async fn free_port() -> u16 {
    closed_port().await
}

async fn wait_healthy(base: &str, child: &mut Child) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("airlock-webhook exited early: {status}");
        }
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "not healthy in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn start_up_lists_everything_missing_and_fails() {
    let out = command(&HashMap::from([(
        "DATABASE_TIMEOUT".to_owned(),
        "soon".to_owned(),
    )]))
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "DATABASE_URL",
        "REDIS_URL",
        "SLACK_SIGNING_SECRET",
        "DATABASE_TIMEOUT",
    ] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
}

/// A local AWS (moto) for Secrets Manager.
struct Moto {
    _child: Guard,
    endpoint: String,
}

async fn start_moto() -> Moto {
    let port = free_port().await;
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (pip install 'moto[server]')");
    let mut guard = Guard(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = guard.0.try_wait().unwrap() {
            panic!("moto exited: {status} (pip install 'moto[server]')");
        }
        assert!(Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        _child: guard,
        endpoint,
    }
}

fn aws_env(endpoint: &str) -> HashMap<String, String> {
    HashMap::from([
        ("AWS_ENDPOINT_URL".to_owned(), endpoint.to_owned()),
        ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing".to_owned()),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
    ])
}

/// Creates a secret in moto with boto3 (a separate client, so our reader is tested against a
/// secret it did not write) and returns its ARN.
fn create_secret(endpoint: &str, name: &str, value: &str) -> String {
    let script = r#"
import sys, boto3
c = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing")
print(c.create_secret(Name=sys.argv[2], SecretString=sys.argv[3])["ARN"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, endpoint, name, value])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_signing_secret_comes_from_secrets_manager() {
    let moto = start_moto().await;
    let real_secret = "from-secrets-manager-5f1e2d";
    let arn = create_secret(&moto.endpoint, "airlock/slack-signing", real_secret);
    assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");

    let db = fresh_db().await;
    let redis = fresh_redis().await;
    let port = free_port().await;
    let mut env = base_env(&db, &redis);
    env.remove("SLACK_SIGNING_SECRET");
    env.insert("SLACK_SIGNING_SECRET_ARN".into(), arn.clone());
    env.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{port}"));
    env.extend(aws_env(&moto.endpoint));
    let mut child = Guard(command(&env).spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base, &mut child.0).await;

    let app_like = reqwest::Client::new();
    let id = open_on(&db, &new_ticket(&[], Duration::from_secs(600))).await;
    let body = approve_body(id, "U1");
    let ts = unix_now().to_string();
    let post = |secret: &'static str| {
        let sig = signature::sign(secret, &ts, &body);
        app_like
            .post(format!("{base}/slack/actions"))
            .header("x-slack-request-timestamp", ts.clone())
            .header("x-slack-signature", sig)
            .body(body.clone())
            .send()
    };
    // The test helpers' secret is not the one in Secrets Manager.
    assert_eq!(post(SECRET).await.unwrap().status(), 400);
    assert_eq!(post(real_secret).await.unwrap().status(), 200);
    let row = airlock_shared::ticket::get(&db.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, TicketStatus::Approved);

    // An ARN that does not exist: start-up fails and says which secret.
    let mut env2 = env.clone();
    env2.insert(
        "SLACK_SIGNING_SECRET_ARN".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf".into(),
    );
    env2.insert(
        "LISTEN_ADDR".into(),
        format!("127.0.0.1:{}", free_port().await),
    );
    let out = command(&env2).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("missing-AbCdEf"), "{all}");
}

#[tokio::test]
async fn the_binary_serves_invocations_from_the_lambda_runtime_api() {
    let db = fresh_db().await;
    let redis = fresh_redis().await;
    let (api_addr, event_tx, mut result_rx) = start_runtime().await;
    let env = lambda_env(&db, &redis, api_addr);
    let _child = Guard(command(&env).stdout(Stdio::null()).spawn().unwrap());

    let mut signals = Signals::subscribe(&redis).await;
    let open = |approvers: &'static [&'static str]| {
        let new = new_ticket(approvers, Duration::from_secs(600));
        let db = &db;
        async move { open_on(db, &new).await }
    };
    let ts = unix_now().to_string();
    let mut expect = Vec::new();
    // Three invocations on one warm instance: a decision, a forgery, and a second decision
    // (which reuses the connections from the first).
    for (n, forged) in [(1, false), (2, true), (3, false)] {
        let id = open(&[]).await;
        let body = approve_body(id, "U0LAMBDA");
        let secret = if forged { "forged" } else { SECRET };
        let sig = signature::sign(secret, &ts, &body);
        event_tx
            .send((format!("req-{n}"), url_event(&body, &ts, &sig)))
            .unwrap();
        expect.push((n, id, forged));
    }
    for (n, id, forged) in expect {
        let (key, resp) = tokio::time::timeout(Duration::from_secs(20), result_rx.recv())
            .await
            .expect("the runtime answered")
            .unwrap();
        assert_eq!(key, format!("req-{n}/response"), "{resp}");
        let (status, _) = crate::lambda::decode_response(&resp);
        let row = airlock_shared::ticket::get(&db.pool, id)
            .await
            .unwrap()
            .unwrap();
        if forged {
            assert_eq!(status, 400);
            assert_eq!(row.status, TicketStatus::Pending);
        } else {
            assert_eq!(status, 200);
            assert_eq!(row.status, TicketStatus::Approved);
        }
    }
    assert_eq!(signals.drain(Duration::from_millis(200)).await.len(), 2);
}
