//! Webhook benchmarks: click latency under 200 concurrent clicks, binary size, start-to-ready.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379 \
//!  cargo bench -p webhook-fn --bench clicks`
//!
//! Figures printed:
//! - handler: 200 clicks on distinct tickets issued at once straight into the axum Router
//!   (signature check, parse, two Postgres queries, Redis publish + XADD), per-click latency.
//! - http: the same against the release binary over loopback HTTP (includes the client).
//! - the release binary's size, and spawn-to-first-200 on /healthz and /readyz (polled every
//!   millisecond with a fresh TCP connection), median and max of 20 starts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_shared::TicketId;
use airlock_shared::buttons::APPROVE_ACTION_ID;
use airlock_shared::config::Env;
use airlock_shared::ticket::{self, NewTicket};
use airlock_test_support::{fresh_db, fresh_redis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;
use tower::ServiceExt;
use webhook_fn::config::Config;
use webhook_fn::signature;

const BIN: &str = env!("CARGO_BIN_EXE_airlock-webhook");
const SECRET: &str = "bench-signing-secret";
const CONCURRENCY: usize = 200;
const ROUNDS: usize = 5;

fn now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

fn click_body(id: TicketId, user: &str) -> Vec<u8> {
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": user, "username": user, "team_id": "T1"},
        "api_app_id": "A1",
        "team": {"id": "T1", "domain": "acme"},
        "container": {"type": "message", "message_ts": "1764400000.000100", "channel_id": "C1"},
        "channel": {"id": "C1", "name": "approvals"},
        "message": {"ts": "1764400000.000100", "text": "Approval needed: transfer 100% + fees"},
        "actions": [{"action_id": APPROVE_ACTION_ID, "block_id": "b", "value": id.to_string(), "type": "button"}]
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes()
}

async fn open_tickets(pool: &airlock_shared::db::Db, n: usize) -> Vec<TicketId> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let new = NewTicket {
            id: TicketId::new(),
            principal: "agent".into(),
            principal_issuer: None,
            principal_claims: None,
            session_id: uuid::Uuid::new_v4().to_string(),
            tool: "t".into(),
            arguments: serde_json::json!({}),
            rule: "r".into(),
            reason: None,
            approvers: vec![],
            slack_channel: Some("C1".into()),
            request_hash: "h".into(),
            timeout: Duration::from_secs(600),
            approvals: 1,
            owner: None,
            policy_revision: None,
            approver_groups: Vec::new(),
            fingerprint: String::new(),
            grant: None,
            traceparent: None,
            tracestate: None,
        };
        ticket::open(pool, &new).await.unwrap();
        ids.push(new.id);
    }
    ids
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let pct = |p: f64| {
        v[((v.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(*v.last().unwrap())
    );
}

fn env_for(db_url: &str, redis_url: &str, prefix: &str, port: u16) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("SLACK_SIGNING_SECRET".to_owned(), SECRET.to_owned()),
        ("REDIS_KEY_PREFIX".to_owned(), prefix.to_owned()),
        ("LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
    ]);
    // The pool size is the knob that matters most for a burst; let a run try others.
    if let Ok(n) = std::env::var("DATABASE_MAX_CONNECTIONS") {
        env.insert("DATABASE_MAX_CONNECTIONS".to_owned(), n);
    }
    env
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// One GET with a fresh connection; true on a 200.
async fn probe(port: u16, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0_u8; 16];
    matches!(s.read(&mut buf).await, Ok(n) if n >= 12 && &buf[..12] == b"HTTP/1.1 200")
}

async fn handler_latency(
    db_url: &str,
    redis_url: &str,
    prefix: &str,
    pool: &airlock_shared::db::Db,
) {
    let env = env_for(db_url, redis_url, prefix, 0);
    let config = Config::from_env(Env::from_map(env)).unwrap();
    let state = webhook_fn::build(&config).await.unwrap();
    let router = webhook_fn::app(state);
    let mut all = Vec::new();
    for round in 0..=ROUNDS {
        let ids = open_tickets(pool, CONCURRENCY).await;
        let barrier = Arc::new(Barrier::new(CONCURRENCY));
        let mut tasks = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let router = router.clone();
            let barrier = barrier.clone();
            let body = click_body(id, &format!("U{i}"));
            let ts = now();
            let sig = signature::sign(SECRET, &ts, &body);
            tasks.push(tokio::spawn(async move {
                let req = axum::http::Request::post("/slack/actions")
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", sig)
                    .body(axum::body::Body::from(body))
                    .unwrap();
                barrier.wait().await;
                let started = Instant::now();
                let resp = router.oneshot(req).await.unwrap();
                let took = started.elapsed();
                assert_eq!(resp.status(), 200);
                took
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.push(t.await.unwrap());
        }
        // Round 0 warms the pools.
        if round > 0 {
            all.extend(lat);
        }
    }
    report(
        &format!(
            "handler latency, {CONCURRENCY} concurrent clicks x {ROUNDS} rounds (in-process Router)"
        ),
        all,
    );
}

async fn http_latency(db_url: &str, redis_url: &str, prefix: &str, pool: &airlock_shared::db::Db) {
    let port = free_port().await;
    let mut child = Command::new(BIN)
        .envs(env_for(db_url, redis_url, prefix, port))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !probe(port, "/readyz").await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/slack/actions");
    let mut all = Vec::new();
    for round in 0..=ROUNDS {
        let ids = open_tickets(pool, CONCURRENCY).await;
        let barrier = Arc::new(Barrier::new(CONCURRENCY));
        let mut tasks = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let http = http.clone();
            let url = url.clone();
            let barrier = barrier.clone();
            let body = click_body(id, &format!("U{i}"));
            let ts = now();
            let sig = signature::sign(SECRET, &ts, &body);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let resp = http
                    .post(&url)
                    .header("x-slack-request-timestamp", ts)
                    .header("x-slack-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let took = started.elapsed();
                assert_eq!(resp.status(), 200);
                took
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.push(t.await.unwrap());
        }
        if round > 0 {
            all.extend(lat);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    report(
        &format!(
            "http latency, {CONCURRENCY} concurrent clicks x {ROUNDS} rounds (release binary, loopback, client included)"
        ),
        all,
    );
}

async fn startup(db_url: &str, redis_url: &str, prefix: &str) {
    let size = std::fs::metadata(BIN).unwrap().len();
    println!(
        "release binary: {BIN}: {:.1} MiB ({size} bytes)",
        size as f64 / (1024.0 * 1024.0)
    );
    let mut healthy = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..20 {
        let port = free_port().await;
        let started = Instant::now();
        let mut child = Command::new(BIN)
            .envs(env_for(db_url, redis_url, prefix, port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while !probe(port, "/healthz").await {
            assert!(started.elapsed() < Duration::from_secs(10), "never healthy");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        healthy.push(started.elapsed());
        while !probe(port, "/readyz").await {
            assert!(started.elapsed() < Duration::from_secs(10), "never ready");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ready.push(started.elapsed());
        let _ = child.kill();
        let _ = child.wait();
    }
    report("start to /healthz 200 (listening), 20 starts", healthy);
    report(
        "start to /readyz 200 (first Postgres round trip), 20 starts",
        ready,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing special either way.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = fresh_db().await;
        let redis = fresh_redis().await;
        let prefix = redis.keys.prefix().to_owned();
        handler_latency(&db.url, &redis.url, &prefix, &db.pool).await;
        http_latency(&db.url, &redis.url, &prefix, &db.pool).await;
        startup(&db.url, &redis.url, &prefix).await;
    });
}
