//! SSE relay: events per second and the latency each event gains, through the gateway against
//! the same upstream called directly, in one run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use airlock_gateway::sse::Parser;
use airlock_test_support::upstream::Mode;
use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: flood, tools: ["flood"], action: allow, read_only: true }
"#;

struct Target {
    name: &'static str,
    url: String,
    token: Option<&'static str>,
    session: String,
}

async fn stream(client: &reqwest::Client, t: &Target, args: Value) -> reqwest::Response {
    let mut r = client
        .post(&t.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &t.session)
        .body(call_body(1, "flood", args));
    if let Some(tok) = t.token {
        r = r.bearer_auth(tok);
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success());
    resp
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Reads the whole stream; returns the events and, for stamped ones, their latencies.
async fn drain(mut resp: reqwest::Response) -> (u64, Vec<Duration>) {
    let mut p = Parser::default();
    let (mut n, mut lat) = (0, Vec::new());
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let at = now_ns();
        for e in p.feed(&chunk) {
            n += 1;
            if let Some(t) = e.json().and_then(|m| {
                m.pointer("/params/data/t")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<u128>().ok())
            }) {
                lat.push(Duration::from_nanos(at.saturating_sub(t) as u64));
            }
        }
    }
    (n, lat)
}

async fn throughput(client: &reqwest::Client, t: &Target, n: u64, size: u64) -> f64 {
    let started = Instant::now();
    let (got, _) = drain(stream(client, t, json!({"n": n, "size": size})).await).await;
    assert_eq!(got, n + 1);
    got as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let stack = Stack::start(Mode::Sse, POLICY, &[]).await;
    let (upstream, gw) = (&stack.upstream, &stack.gw);
    let client = reqwest::Client::new();
    let direct = Target {
        name: "direct",
        url: upstream.url(),
        token: None,
        session: initialize(&client, &upstream.url(), None).await,
    };
    let through = Target {
        name: "gateway",
        url: gw.url(),
        token: Some(TOKEN),
        session: initialize(&client, &gw.url(), Some(TOKEN)).await,
    };
    // Warm up both paths.
    for t in [&direct, &through] {
        throughput(&client, t, 2_000, 200).await;
    }

    println!("SSE relay throughput (events of ~300 bytes, best of 3 runs of 100,000 events)");
    let mut best = [0.0f64; 2];
    for _ in 0..3 {
        for (i, t) in [&direct, &through].into_iter().enumerate() {
            best[i] = best[i].max(throughput(&client, t, 100_000, 200).await);
        }
    }
    println!("  direct : {:>10.0} events/s", best[0]);
    println!(
        "  gateway: {:>10.0} events/s ({:.1}% of direct; target >= 80%)",
        best[1],
        best[1] / best[0] * 100.0
    );

    println!("SSE relay latency per event (3,000 events, one per ms, ~300 bytes)");
    let mut p99s = Vec::new();
    for t in [&direct, &through] {
        let (_, lat) =
            drain(stream(&client, t, json!({"n": 3_000, "size": 200, "every_ms": 1})).await).await;
        let s = summarize(lat);
        println!(
            "  {:<7}: p50 {}  p99 {}  max {}  (n={})",
            t.name,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            s.count
        );
        p99s.push(s.p99);
    }
    let added = p99s[1].saturating_sub(p99s[0]);
    println!(
        "  added by the gateway at p99: {} (target <= 0.5 ms)",
        ms(added)
    );
}
