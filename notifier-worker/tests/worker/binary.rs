//! The `airlock-notifier` binary: config errors, the token from Secrets Manager (moto), SIGTERM.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{TOKEN, setup};

const BIN: &str = env!("CARGO_BIN_EXE_airlock-notifier");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn bad_config_fails_fast_with_every_problem() {
    let out = Command::new(BIN)
        .env_clear()
        .env("CONCURRENCY", "none")
        .env("SLACK_BOT_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for n in ["REDIS_URL", "DATABASE_URL", "SLACK_CHANNEL", "CONCURRENCY"] {
        assert!(err.contains(n), "{n} missing: {err}");
    }
    assert!(!err.contains(TOKEN));
}

/// A moto server on a free port, stopped on drop.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Moto {
    let port = free_port();
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
        .expect("python3 with `pip install 'moto[server]'` is needed for the Secrets Manager test");
    let url = format!("http://127.0.0.1:{port}");
    let mut moto = Moto { child, url };
    for _ in 0..100 {
        if reqwest::get(format!("{}/moto-api/", moto.url))
            .await
            .is_ok()
        {
            return moto;
        }
        if let Ok(Some(status)) = moto.child.try_wait() {
            panic!("moto exited ({status}); install it with `pip install 'moto[server]'`");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto did not start on {}", moto.url);
}

fn aws_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

#[tokio::test]
async fn the_binary_reads_its_token_from_secrets_manager_posts_and_stops_on_sigterm() {
    let app = setup().await;
    let moto = moto().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let created = sm
        .create_secret()
        .name("airlock/slack")
        .secret_string(serde_json::json!({"SLACK_BOT_TOKEN": TOKEN}).to_string())
        .send()
        .await
        .unwrap();
    let arn = created.arn().unwrap().to_owned();

    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for (k, v) in app.env(&[]) {
        if k != "SLACK_BOT_TOKEN" {
            cmd.env(k, v);
        }
    }
    aws_env(&mut cmd, &moto.url);
    cmd.env("SLACK_BOT_TOKEN_ARN", &arn)
        .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let pid = child.id();

    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    let posted = if ready {
        app.wait_ticket(t.id, Duration::from_secs(10), |t| t.message_ts.is_some())
            .await
            .message_ts
            .is_some()
    } else {
        false
    };

    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ready, "never ready: {log}");
    assert!(posted, "nothing posted: {log}");
    let call = &app.slack.calls_to("chat.postMessage")[0];
    assert_eq!(
        call.token.as_deref(),
        Some(TOKEN),
        "the token came from Secrets Manager"
    );
    assert_eq!(out.status.code(), Some(0), "clean exit on SIGTERM: {log}");
    assert!(log.contains("shutdown requested"));
    assert!(!log.contains(TOKEN), "the token was logged");
    assert!(!log.contains("TOKENVALUE"), "part of the token was logged");
}

#[tokio::test]
async fn an_unreadable_secret_stops_the_binary_with_an_error() {
    let app = setup().await;
    let moto = moto().await;
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for (k, v) in app.env(&[]) {
        if k != "SLACK_BOT_TOKEN" {
            cmd.env(k, v);
        }
    }
    aws_env(&mut cmd, &moto.url);
    cmd.env(
        "SLACK_BOT_TOKEN_ARN",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:missing-AbCdEf",
    )
    .env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
    .env("LOG_FORMAT", "json");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("Secrets Manager"), "{log}");
}
