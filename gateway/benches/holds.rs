//! 10,000 concurrent approval holds in one gateway process: memory per hold, Redis connections,
//! and how fast every call resumes once the decisions are published.
//!
//! `HOLDS=n` sets the count; `OPEN_RATE=r` opens r calls per second (3,300). `H2_CONNS=k`
//! sends every request over k shared HTTP/2 (h2c) connections instead of one HTTP/1.1
//! connection per call: a hold then costs a stream, not a socket, which tells the
//! per-connection bytes from the per-call ones and lets one process hold more calls than its
//! file limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use airlock_shared::{DecisionSignal, TicketId, TicketStatus, signal};
use airlock_test_support::upstream::{FakeUpstream, Mode};
use common::*;
use serde_json::json;

const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: everything needs a person, tools: ["create_refund"], action: approve }
"#;

/// How the bench reaches the gateway.
#[derive(Clone)]
enum Agent {
    /// One pooled HTTP/1.1 connection per call in flight.
    H1(reqwest::Client),
    /// Calls spread round robin over these HTTP/2 connections (one per client).
    H2(Arc<Vec<H2Client>>),
}

type H2Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

impl Agent {
    fn from_env(n: usize) -> Self {
        let conns: usize = std::env::var("H2_CONNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if conns == 0 {
            return Self::H1(
                reqwest::Client::builder()
                    .pool_max_idle_per_host(n + 16)
                    .build()
                    .unwrap(),
            );
        }
        let exec = hyper_util::rt::TokioExecutor::new();
        let clients = (0..conns)
            .map(|_| {
                hyper_util::client::legacy::Client::builder(exec.clone())
                    .http2_only(true)
                    .build_http()
            })
            .collect();
        Self::H2(Arc::new(clients))
    }

    fn describe(&self) -> String {
        match self {
            Self::H1(_) => "HTTP/1.1, a connection per call".into(),
            Self::H2(c) => format!("HTTP/2 (h2c), {} connections", c.len()),
        }
    }

    /// POSTs `body` as call number `i`; the session id the gateway answered with, and the body.
    /// Calls in a session take only JSON, so a held call is answered once, not as an SSE stream.
    async fn post(
        &self,
        i: usize,
        url: &str,
        sid: Option<&str>,
        body: String,
    ) -> (Option<String>, bytes::Bytes) {
        let accept = if sid.is_some() {
            "application/json"
        } else {
            "application/json, text/event-stream"
        };
        match self {
            Self::H1(c) => {
                let mut r = c
                    .post(url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .header("accept", accept)
                    .body(body);
                if let Some(s) = sid {
                    r = r.header("mcp-session-id", s);
                }
                let resp = r.send().await.unwrap();
                let got = resp
                    .headers()
                    .get("mcp-session-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                (got, resp.bytes().await.unwrap())
            }
            Self::H2(cs) => {
                let mut r = hyper::Request::post(url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .header("accept", accept);
                if let Some(s) = sid {
                    r = r.header("mcp-session-id", s);
                }
                let req = r
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                let resp = cs[i % cs.len()].request(req).await.unwrap();
                let got = resp
                    .headers()
                    .get("mcp-session-id")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (got, body)
            }
        }
    }
}

/// Calls opened per second (`OPEN_RATE`).
fn open_rate() -> f64 {
    std::env::var("OPEN_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r: &f64| *r > 0.0)
        .unwrap_or(3_300.0)
}

fn holds() -> usize {
    std::env::var("HOLDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

async fn redis_clients(redis: &airlock_test_support::TestRedis) -> i64 {
    let mut c = redis.conn().await;
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

fn main() {
    let (n, open_rate) = (holds(), open_rate());
    runtime().block_on(async {
        let db = airlock_test_support::fresh_db().await;
        let redis = airlock_test_support::fresh_redis().await;
        let upstream = FakeUpstream::spawn(Mode::Json).await;
        let before_gateway = redis_clients(&redis).await;
        let gw = start_gateway(&db, &redis, &upstream, POLICY, &[("APPROVAL_TIMEOUT", "10m")]).await;
        let agent = Agent::from_env(n);
        // One session per hold: the session lock allows one held mutating call per session.
        let mut sessions = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for i in 0..n {
            let (a, url) = (agent.clone(), gw.url());
            pending.push(tokio::spawn(async move { a.post(i, &url, None, init_body()).await.0.expect("a session id") }));
            if pending.len() == 200 {
                for h in pending.drain(..) {
                    sessions.push(h.await.unwrap());
                }
            }
        }
        for h in pending {
            sessions.push(h.await.unwrap());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_before = gw.rss_kib();
        let with_gateway = redis_clients(&redis).await;
        let opened = Instant::now();
        let answered = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::with_capacity(n);
        for (i, sid) in sessions.iter().enumerate() {
            // Paced opening: 10,000 simultaneous SYNs overflow the accept backlog, and calls
            // opened faster than Postgres inserts tickets queue for the pool until they fail.
            if i % 100 == 99 {
                tokio::time::sleep(Duration::from_secs_f64(100.0 / open_rate)).await;
            }
            let (a, url, sid) = (agent.clone(), gw.url(), sid.clone());
            let answered = answered.clone();
            calls.push(tokio::spawn(async move {
                let call = call_body(i as u64, "create_refund", json!({"amount": 500, "n": i}));
                let (_, body) = a.post(i, &url, Some(&sid), call).await;
                let good = body.windows(8).any(|w| w == b"\"result\"");
                answered.fetch_add(1, Ordering::Relaxed);
                (Instant::now(), good, if good { None } else { Some(body) })
            }));
        }
        // Every call is held once its ticket exists; one answered before any decision failed.
        loop {
            let held: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = 'pending'").fetch_one(&db.pool).await.unwrap();
            let failed = answered.load(Ordering::Relaxed);
            assert!(failed == 0, "{failed} calls failed before any decision (held: {held}); try a lower OPEN_RATE");
            if held as usize == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let all_held = opened.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_held = gw.rss_kib();
        let during = redis_clients(&redis).await;
        // Decide all, the webhook's way: rows first, then one signal per ticket.
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar("UPDATE tickets SET status = 'approved', decided_at = now(), decided_by_id = 'U1', decided_by_name = 'bench' WHERE status = 'pending' RETURNING id").fetch_all(&db.pool).await.unwrap();
        let published = Instant::now();
        let cpu_at_publish = (gw.cpu_secs(), cpu_secs("/proc/self/stat"));
        eprintln!("published {} decisions", ids.len());
        let mut conn = redis.conn().await;
        for chunk in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let sig = serde_json::to_string(&DecisionSignal { ticket_id: TicketId(*id), status: TicketStatus::Approved }).unwrap();
                pipe.publish(redis.keys.decisions_channel(), sig).ignore();
            }
            let _: () = pipe.query_async(&mut conn).await.unwrap();
        }
        let _ = signal::parse(b"{}");
        // Where the time goes: tickets claimed (Postgres), upstream calls made, answers read.
        let timeline = {
            let (pool, answered) = (db.pool.clone(), answered.clone());
            let upstream_calls = upstream.clone();
            tokio::spawn(async move {
                let mut seen = [None::<Duration>; 3];
                loop {
                    let claimed: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = 'executed'").fetch_one(&pool).await.unwrap();
                    let counts = [claimed as usize, upstream_calls.call_count(), answered.load(Ordering::Relaxed)];
                    for (slot, c) in seen.iter_mut().zip(counts) {
                        if slot.is_none() && c >= n {
                            *slot = Some(published.elapsed());
                        }
                    }
                    if seen.iter().all(Option::is_some) || published.elapsed() > Duration::from_secs(60) {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let mut last = published;
        let mut ok = 0;
        let mut bad = Vec::new();
        for c in calls {
            let (done, good, body) = c.await.unwrap();
            last = last.max(done);
            ok += usize::from(good);
            bad.extend(body);
        }
        let timeline = timeline.await.unwrap();
        let (gw_cpu, bench_cpu) = (gw.cpu_secs() - cpu_at_publish.0, cpu_secs("/proc/self/stat") - cpu_at_publish.1);
        let at = |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()));
        let executed: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status = 'executed'").fetch_one(&db.pool).await.unwrap();
        let per_hold = (rss_held.saturating_sub(rss_before)) as f64 / n as f64;
        println!("{n} concurrent holds in one gateway process ({})", agent.describe());
        println!("  all held after:              {:.2} s", all_held.as_secs_f64());
        println!("  gateway RSS before / held:   {} KiB / {} KiB", rss_before, rss_held);
        println!("  RSS growth per hold:         {per_hold:.1} KiB (target <= 16 KiB)");
        println!("  Redis clients: before gateway {before_gateway}, idle gateway {with_gateway}, during holds {during} (gateway's own: {})", with_gateway - before_gateway);
        println!("  resumed after publish:       {:.3} s for all {n} (target <= 5 s)", (last - published).as_secs_f64());
        println!("  all claimed / upstream-called / answered after: {} / {} / {}", at(timeline[0]), at(timeline[1]), at(timeline[2]));
        println!("  answers with a result:       {ok}/{n}; tickets executed: {executed}");
        // What bounds the time to answer: CPU spent resuming, against the cores there are.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        println!(
            "  CPU from publish to last answer: gateway {gw_cpu:.1} s ({:.0} us per call), bench client + fake upstream {bench_cpu:.1} s; {cores} cores",
            gw_cpu * 1e6 / n as f64
        );
        for b in bad.iter().take(3) {
            println!("  an answer without a result:  {}", String::from_utf8_lossy(&b[..b.len().min(300)]));
        }
        println!("  upstream calls:              {}", upstream.calls().len());
        drop(gw);
    });
}
