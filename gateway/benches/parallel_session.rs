//! Parallel session: rounds of eight concurrent mutating calls in ONE session (they queue for
//! the session lock) against a fast upstream; per-call latency, calls/s and `session busy`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use airlock_test_support::upstream::Mode;
use common::*;
use serde_json::json;

const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: refunds, tools: ["create_refund"], action: allow }
"#;
const PARALLEL: u64 = 8;

/// One call; `Err` if the gateway answered `session busy`.
async fn one(client: &reqwest::Client, url: &str, sid: &str, n: u64) -> Result<Duration, ()> {
    let started = Instant::now();
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", sid)
        // Distinct arguments: the same call again would count as its retry.
        .body(call_body(n, "create_refund", json!({"amount": n})))
        .send()
        .await
        .unwrap();
    let body = resp.bytes().await.unwrap();
    if body.windows(12).any(|w| w == b"session busy") {
        return Err(());
    }
    assert!(
        body.windows(8).any(|w| w == b"\"result\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    Ok(started.elapsed())
}

fn main() {
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    runtime().block_on(async {
        let stack = Stack::start(Mode::Json, POLICY, &[]).await;
        let gw = &stack.gw;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let url = gw.url();
        let sid = initialize(&client, &url, Some(TOKEN)).await;
        // Service time: the same call alone, one after another.
        let mut alone = Vec::new();
        for n in 0..300 {
            alone.push(one(&client, &url, &sid, 1_000_000 + n).await.unwrap());
        }
        let service = summarize(alone).p50;
        let mut lat = Vec::new();
        let mut busy = 0u64;
        let started = Instant::now();
        for r in 0..rounds {
            let calls: Vec<_> = (0..PARALLEL)
                .map(|i| {
                    let (c, u, s) = (client.clone(), url.clone(), sid.clone());
                    tokio::spawn(async move { one(&c, &u, &s, r * PARALLEL + i).await })
                })
                .collect();
            for c in calls {
                match c.await.unwrap() {
                    Ok(d) => lat.push(d),
                    Err(()) => busy += 1,
                }
            }
        }
        let elapsed = started.elapsed();
        let done = lat.len();
        let s = summarize(lat);
        let target = service * PARALLEL as u32 + Duration::from_millis(2);
        println!("parallel session: {rounds} rounds of {PARALLEL} concurrent mutating calls in one session");
        println!("service time (one call alone, p50): {}", ms(service));
        println!(
            "per call: p50 {}, p99 {}, max {} (target p99 <= {})",
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            ms(target)
        );
        println!(
            "{:.0} calls/s, {done} answered, {busy} session busy (target 0)",
            done as f64 / elapsed.as_secs_f64()
        );
        drop(stack);
    });
}
