//! Allow path: latency at a fixed 1,000 req/s and closed-loop throughput, through the gateway
//! and against the same upstream called directly, in one run: calls in sessions (`initialize`
//! 2025-11-25, as the other benches) beside
//! 2026-07-28 (stateless: no session, the version and method in headers and `_meta`).
//! Beside them, a bare nginx reverse proxy over the same upstream: the mutating path (lock and
//! budget) on one connection, and the read-only path saturated by 8 connections.
//! `BENCH_SECS` shortens the measured runs (default 10 s open loop, 5 s closed loop) and
//! `BENCH_RATE` changes the open-loop rate (default 1,000 req/s), e.g. for a debug build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_test_support::nginx::Nginx;
use airlock_test_support::upstream::{FakeUpstream, Mode};
use common::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
version: 1
default: deny
budget:
  max_tool_calls_per_session: 1000000000
rules:
  - { name: reads, tools: ["list_*"], action: allow, read_only: true }
  - { name: refunds, tools: ["create_refund"], action: allow }
"#;

#[derive(Clone)]
struct Target {
    name: &'static str,
    url: String,
    token: Option<&'static str>,
    /// Empty for 2026-07-28: no sessions.
    sessions: Arc<Vec<String>>,
    tool: &'static str,
}

const MODERN: &str = "2026-07-28";

/// A 2026-07-28 `tools/call`: the version in `_meta` as well as in the header.
fn modern_body(id: u64, tool: &str, args: Value) -> String {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args, "_meta": meta}}).to_string()
}

async fn one(client: &reqwest::Client, t: &Target, i: u64) -> Duration {
    let started = Instant::now();
    let args = json!({"amount": 5});
    let r = client
        .post(&t.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    let mut r = match t.sessions.get(i as usize % t.sessions.len().max(1)) {
        Some(sid) => r
            .header("mcp-session-id", sid)
            .body(call_body(i, t.tool, args)),
        None => r
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", t.tool)
            .body(modern_body(i, t.tool, args)),
    };
    if let Some(tok) = t.token {
        r = r.bearer_auth(tok);
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success());
    let body = resp.bytes().await.unwrap();
    assert!(
        body.windows(8).any(|w| w == b"\"result\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    started.elapsed()
}

async fn open_loop(client: &reqwest::Client, t: &Target, rate: u64, secs: u64) -> (Summary, f64) {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut handles = Vec::new();
    for i in 0..rate * secs {
        tick.tick().await;
        let (c, t) = (client.clone(), t.clone());
        handles.push(tokio::spawn(async move { one(&c, &t, i).await }));
    }
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.push(h.await.unwrap());
    }
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    (summarize(lat), rate)
}

/// `workers` callers back to back for `secs`: requests/s, and each call's latency.
async fn closed_loop(
    client: &reqwest::Client,
    t: &Target,
    workers: usize,
    secs: u64,
) -> (f64, Summary) {
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..workers {
        let (c, t) = (client.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                lat.push(one(&c, &t, (w + lat.len() * workers) as u64).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let rps = all.len() as f64 / started.elapsed().as_secs_f64();
    (rps, summarize(all))
}

fn main() {
    runtime().block_on(async {
        let stack = Stack::start(Mode::Json, POLICY, &[]).await;
        let (upstream, gw) = (&stack.upstream, &stack.gw);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let mut direct_sessions = Vec::new();
        let mut gw_sessions = Vec::new();
        for _ in 0..64 {
            direct_sessions.push(initialize(&client, &upstream.url(), None).await);
            gw_sessions.push(initialize(&client, &gw.url(), Some(TOKEN)).await);
        }
        let direct = Target {
            name: "direct",
            url: upstream.url(),
            token: None,
            sessions: Arc::new(direct_sessions),
            tool: "list_charges",
        };
        let read_only = Target {
            name: "gateway, read-only rule",
            url: gw.url(),
            token: Some(TOKEN),
            sessions: Arc::new(gw_sessions.clone()),
            tool: "list_charges",
        };
        let one_session = Target {
            name: "gateway, session lock",
            url: gw.url(),
            token: Some(TOKEN),
            sessions: Arc::new(vec![gw_sessions[0].clone()]),
            tool: "create_refund",
        };
        let locked = Target {
            name: "gateway, session lock",
            url: gw.url(),
            token: Some(TOKEN),
            sessions: Arc::new(gw_sessions),
            tool: "create_refund",
        };
        // 2026-07-28 has no sessions; its mutating calls share the principal's one lock, so
        // only the read-only rule compares with the session runs.
        let modern_direct = Target {
            name: "direct",
            url: upstream.url(),
            token: None,
            sessions: Arc::new(Vec::new()),
            tool: "list_charges",
        };
        let modern_read_only = Target {
            name: "gateway, read-only rule",
            url: gw.url(),
            token: Some(TOKEN),
            sessions: Arc::new(Vec::new()),
            tool: "list_charges",
        };
        let principal_lock = Target {
            name: "gateway, principal lock",
            url: gw.url(),
            token: Some(TOKEN),
            sessions: Arc::new(Vec::new()),
            tool: "create_refund",
        };
        let secs: u64 = std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        for t in [
            &direct,
            &read_only,
            &locked,
            &modern_direct,
            &modern_read_only,
        ] {
            open_loop(&client, t, rate(), 1).await; // warm-up
        }
        let session = session_run(&client, [&direct, &read_only, &locked], secs).await;
        let modern = era_run(
            &client,
            "2026-07-28 (stateless)",
            &[&modern_direct, &modern_read_only],
            secs,
        )
        .await;
        println!("added by the gateway over direct, side by side:");
        println!(
            "{:<26} {:>22} {:>22}",
            "", "session (2025-11-25)", "2026-07-28 (stateless)"
        );
        let added = |r: &[Summary], i: usize| {
            format!(
                "{} / {}",
                ms(r[i].p50.saturating_sub(r[0].p50)),
                ms(r[i].p99.saturating_sub(r[0].p99))
            )
        };
        println!(
            "{:<26} {:>22} {:>22}",
            "read-only, p50 / p99",
            added(&session, 1),
            added(&modern, 1)
        );
        println!(
            "{:<26} {:>22} {:>22}",
            "session lock, p50 / p99",
            added(&session, 2),
            "-"
        );
        // One caller's mutating calls back to back: each takes and releases its lock (the
        // session's, or the principal's without a session), so the two eras compare directly.
        let n = secs * 200;
        println!("one caller's mutating calls, back to back, {n} calls each:");
        for (era, t) in [
            ("session   ", &one_session),
            ("2026-07-28", &principal_lock),
        ] {
            let s = sequential(&client, t, n).await;
            println!(
                "  {era} {:<26} p50 {} p99 {} max {}",
                t.name,
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
        }
        println!("closed-loop throughput, 32 workers, {} s:", secs.min(5));
        for (era, t) in [
            ("session   ", &direct),
            ("session   ", &read_only),
            ("session   ", &locked),
            ("2026-07-28", &modern_direct),
            ("2026-07-28", &modern_read_only),
        ] {
            let (rps, _) = closed_loop(&client, t, 32, secs.min(5)).await;
            println!("  {era} {:<26} {:>8.0} req/s", t.name, rps);
        }
        let hop = Nginx::start(
            &std::env::temp_dir().join(format!("airlock-bench-{}", std::process::id())),
            &[upstream_port(upstream)],
            64,
        )
        .await;
        beside_nginx(&client, &hop, &direct, &one_session, &read_only, secs).await;
        drop(stack);
    });
}

/// `n` calls one after another (distinct arguments, so none is another's retry).
async fn sequential(client: &reqwest::Client, t: &Target, n: u64) -> Summary {
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        lat.push(one(client, t, 1_000_000 + i).await);
    }
    summarize(lat)
}

/// The 2025-11-25 runs, with the targets of the gateway's own figures.
async fn session_run(client: &reqwest::Client, targets: [&Target; 3], secs: u64) -> Vec<Summary> {
    let results = era_run(client, "session (2025-11-25)", &targets, secs).await;
    for (i, name) in [(1, "read-only"), (2, "session lock")] {
        let added50 = results[i].p50.saturating_sub(results[0].p50);
        let added99 = results[i].p99.saturating_sub(results[0].p99);
        println!(
            "added by the gateway ({name}): p50 {} (target <= 0.5 ms), p99 {} (target <= 2 ms)",
            ms(added50),
            ms(added99)
        );
    }
    results
}

/// The open-loop rate: `BENCH_RATE`, else 1,000 req/s.
fn rate() -> u64 {
    std::env::var("BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(1000)
}

/// One era's open-loop runs, printed as a table; the first target is the direct one.
async fn era_run(
    client: &reqwest::Client,
    era: &str,
    targets: &[&Target],
    secs: u64,
) -> Vec<Summary> {
    let rate = rate();
    println!("{era}: allow path at {rate} req/s for {secs} s (open loop), one process, 2 cores");
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>10}",
        "target", "p50", "p99", "max", "rate"
    );
    let mut results = Vec::new();
    for t in targets {
        let (s, rate) = open_loop(client, t, rate, secs).await;
        println!(
            "{:<26} {:>10} {:>10} {:>10} {:>8.0}/s",
            t.name,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            rate
        );
        results.push(s);
    }
    results
}

fn upstream_port(u: &FakeUpstream) -> u16 {
    let url = reqwest::Url::parse(&u.url()).unwrap();
    url.port().unwrap()
}

/// The gateway beside a bare nginx hop over the same upstream, in one run: the mutating path
/// on one connection, and the read-only path saturated by 8 connections.
async fn beside_nginx(
    client: &reqwest::Client,
    hop: &Nginx,
    direct: &Target,
    one_session: &Target,
    read_only: &Target,
    secs: u64,
) {
    let secs = secs.min(5);
    let via = |t: &Target, tool: &'static str| Target {
        name: "nginx hop",
        url: hop.mcp_url(),
        tool,
        ..t.clone()
    };
    let (hop_write, hop_read) = (via(direct, "create_refund"), via(direct, "list_charges"));
    // One connection: a fresh client whose pool holds one.
    let single = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    closed_loop(&single, &hop_write, 1, 1).await; // warm-up
    println!("beside a bare nginx hop over the same upstream ({secs} s each, audit rows written):");
    let (n_rps, n) = closed_loop(&single, &hop_write, 1, secs).await;
    let (g_rps, g) = closed_loop(&single, one_session, 1, secs).await;
    println!(
        "  mutating, one connection:  nginx {n_rps:>7.0} req/s (p50 {} p99 {}), gateway lock+budget {g_rps:>7.0} req/s (p50 {} p99 {}): {:.0}% (target >= 70%)",
        ms(n.p50),
        ms(n.p99),
        ms(g.p50),
        ms(g.p99),
        100.0 * g_rps / n_rps
    );
    let (n_rps, n) = closed_loop(client, &hop_read, 8, secs).await;
    let (g_rps, g) = closed_loop(client, read_only, 8, secs).await;
    println!(
        "  read-only, 8 connections:  nginx {n_rps:>7.0} req/s (p50 {} p99 {}), gateway {g_rps:>7.0} req/s (p50 {} p99 {}): {:.0}% (target >= 70%), p99 added {} (target <= 2 ms)",
        ms(n.p50),
        ms(n.p99),
        ms(g.p50),
        ms(g.p99),
        100.0 * g_rps / n_rps,
        ms(g.p99.saturating_sub(n.p99))
    );
}
