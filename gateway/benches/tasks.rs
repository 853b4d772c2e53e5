//! Held calls served as MCP tasks: TASKS pending tasks (default 10,000) made through one gateway
//! process (2026-07-28 with the tasks extension), the RSS growth per pending task, then
//! `tasks/get` polls at POLL_RATE per second (default 1,000) spread over two gateway instances
//! for BENCH_SECS (default 10): p50 / p99 of the poll latency. Figures are printed, not asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_test_support::upstream::{FakeUpstream, Mode};
use common::*;
use serde_json::{Value, json};

// `read_only` so that making thousands of tasks does not queue on the principal's lock.
const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: refunds need a person, tools: ["create_refund"], action: approve, read_only: true }
"#;
const MODERN: &str = "2026-07-28";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body(id: u64, method: &str, mut params: Value) -> String {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

async fn send(c: &reqwest::Client, url: &str, method: &str, name: &str, body: String) -> Value {
    let resp = c
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .header("mcp-name", name)
        .body(body)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap_or(Value::Null)
}

async fn create(c: &reqwest::Client, url: &str, i: u64) -> String {
    let params = json!({"name": "create_refund", "arguments": {"amount": 500, "n": i}});
    let v = send(
        c,
        url,
        "tools/call",
        "create_refund",
        body(i, "tools/call", params),
    )
    .await;
    v.pointer("/result/taskId")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no task: {v}"))
        .to_owned()
}

fn main() {
    let (n, rate, secs) = (
        env_or("TASKS", 10_000),
        env_or("POLL_RATE", 1_000),
        env_or("BENCH_SECS", 10),
    );
    runtime().block_on(async {
        let db = airlock_test_support::fresh_db().await;
        let redis = airlock_test_support::fresh_redis().await;
        let upstream = FakeUpstream::spawn(Mode::Json).await;
        let extra = [("APPROVAL_TIMEOUT", "30m")];
        let a = start_gateway(&db, &redis, &upstream, POLICY, &extra).await;
        let b = start_gateway(&db, &redis, &upstream, POLICY, &extra).await;
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_before = a.rss_kib();
        let made = Instant::now();
        let mut ids = Vec::with_capacity(n as usize);
        let mut batch = Vec::new();
        for i in 0..n {
            let (c, url) = (client.clone(), a.url());
            batch.push(tokio::spawn(async move { create(&c, &url, i).await }));
            if batch.len() == 64 {
                for h in batch.drain(..) {
                    ids.push(h.await.unwrap());
                }
            }
        }
        for h in batch {
            ids.push(h.await.unwrap());
        }
        let made = made.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_pending = a.rss_kib();
        let ids = Arc::new(ids);
        let urls = Arc::new([a.url(), b.url()]);
        let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
        let mut tick = tokio::time::interval(every);
        let end = Instant::now() + Duration::from_secs(secs);
        let mut polls = Vec::new();
        let mut k: u64 = 0;
        while Instant::now() < end {
            tick.tick().await;
            k += 1;
            let (c, ids, urls) = (client.clone(), ids.clone(), urls.clone());
            polls.push(tokio::spawn(async move {
                let id = &ids[(k.wrapping_mul(2_654_435_761) % ids.len() as u64) as usize];
                let url = &urls[(k % 2) as usize];
                let sent = Instant::now();
                let v = send(&c, url, "tasks/get", id, body(k, "tasks/get", json!({"taskId": id}))).await;
                (sent.elapsed(), v.pointer("/result/status") == Some(&json!("working")))
            }));
        }
        let mut lat = Vec::with_capacity(polls.len());
        let mut good = 0;
        for p in polls {
            let (d, ok) = p.await.unwrap();
            lat.push(d);
            good += usize::from(ok);
        }
        let s = summarize(lat);
        let per_task = rss_pending.saturating_sub(rss_before) as f64 / n as f64;
        println!("{n} pending tasks made through one gateway process in {:.2} s", made.as_secs_f64());
        println!("  gateway RSS before / pending: {rss_before} KiB / {rss_pending} KiB");
        println!("  RSS growth per pending task:  {per_task:.1} KiB");
        println!("  tasks/get over two instances at {rate}/s for {secs} s: {} polls, {good} answered working", s.count);
        println!("  p50 {} / p99 {} / max {}", ms(s.p50), ms(s.p99), ms(s.max));
        println!("  upstream calls (must be 0): {}", upstream.call_count());
        drop((a, b));
    });
}
