//! Jobs per second through one worker to a fake Slack that answers at once, pacing off, and the
//! latency from stream entry to the Slack call (p50/p99) at a steady arrival rate.
//!
//! `DATABASE_URL=… REDIS_URL=… cargo bench -p notifier-worker --bench throughput`
//! (`BENCH_JOBS`, `BENCH_RATE` and `CONCURRENCY` change the sizes.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use airlock_shared::config::Env;
use airlock_shared::keys::JOB_FIELD;
use airlock_shared::ticket::{self, NewTicket, Opened};
use airlock_shared::{NotifyJob, TicketId};
use airlock_slack_fake::fake::{FakeSlack, FakeSlackConfig};
use airlock_test_support::{fresh_db, fresh_redis};
use notifier_worker::{Config, Notifier};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "xoxb-bench";
/// Jobs handled before timing starts, so that pool connections are not in the figure.
const WARM_UP: usize = 200;

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let jobs = var("BENCH_JOBS", 5000);
    let rate = var("BENCH_RATE", 200);
    let concurrency = var("CONCURRENCY", 64);
    let db = fresh_db().await;
    let redis = fresh_redis().await;
    let slack = FakeSlack::spawn(FakeSlackConfig::new(TOKEN)).await;

    let mut ids = Vec::with_capacity(WARM_UP + jobs + rate * 5);
    for _ in 0..WARM_UP + jobs + rate * 5 {
        let new = NewTicket {
            id: TicketId::new(),
            principal: "bench-agent".into(),
            principal_issuer: None,
            principal_claims: None,
            session_id: uuid::Uuid::new_v4().simple().to_string(),
            tool: "fs.write".into(),
            arguments: serde_json::json!({"path": "/tmp/x", "content": "hello ".repeat(20)}),
            rule: "writes".into(),
            reason: Some("bench".into()),
            approvers: vec![],
            slack_channel: None,
            request_hash: uuid::Uuid::new_v4().simple().to_string(),
            timeout: Duration::from_secs(3600),
            approvals: 1,
            owner: None,
            policy_revision: None,
            approver_groups: Vec::new(),
            fingerprint: String::new(),
            grant: None,
            traceparent: None,
            tracestate: None,
        };
        match ticket::open(&db.pool, &new).await.unwrap() {
            Opened::Created(t) => ids.push(t.id),
            Opened::Reattached(_) => unreachable!(),
        }
    }
    let (warm, rest) = ids.split_at(WARM_UP);
    let (backlog, steady) = rest.split_at(jobs);

    let mut conn = redis.conn().await;
    let enqueue_all = |batch: &[TicketId]| {
        let mut pipe = redis::pipe();
        for id in batch {
            let body =
                serde_json::to_string(&NotifyJob::ApprovalRequest { ticket_id: *id }).unwrap();
            pipe.cmd("XADD")
                .arg(redis.keys.notify_stream())
                .arg("*")
                .arg(JOB_FIELD)
                .arg(body)
                .ignore();
        }
        pipe
    };
    enqueue_all(warm)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    let vars: HashMap<String, String> = [
        ("REDIS_URL", redis.url.clone()),
        ("DATABASE_URL", db.url.clone()),
        ("SLACK_BOT_TOKEN", TOKEN.to_owned()),
        ("SLACK_CHANNEL", "C0APPROVALS".to_owned()),
        ("SLACK_API_BASE_URL", slack.base_url()),
        ("REDIS_KEY_PREFIX", redis.keys.prefix().to_owned()),
        ("CONCURRENCY", concurrency.to_string()),
        ("SLACK_CHANNEL_PACE", "off".to_owned()),
        ("NOTIFY_READ_BLOCK", "100ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = Config::from_env(Env::from_map(vars)).unwrap();
    let notifier = Notifier::build(&config).await.unwrap();
    let metrics = notifier.metrics().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = CancellationToken::new();

    // Warm-up: the worker connects its pools and joins the group on a first few jobs.
    let worker = tokio::spawn(notifier.run(listener, stop.clone()));
    slack
        .wait_for_calls("chat.postMessage", WARM_UP, Duration::from_secs(60))
        .await;

    // Phase 1: drain a backlog.
    let started = Instant::now();
    enqueue_all(backlog)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let calls = slack
        .wait_for_calls("chat.postMessage", WARM_UP + jobs, Duration::from_secs(600))
        .await;
    let to_last_call = started.elapsed();
    loop {
        let len: usize = redis::cmd("XLEN")
            .arg(redis.keys.notify_stream())
            .query_async(&mut conn)
            .await
            .unwrap();
        if len == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to_drained = started.elapsed();
    assert_eq!(calls.len(), WARM_UP + jobs, "every job posted once");

    // Phase 2: a steady arrival rate; latency from stream entry to the Slack call.
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(interval);
    let mut entered: HashMap<String, f64> = HashMap::new();
    for id in steady {
        tick.tick().await;
        let entry = airlock_shared::job::enqueue(
            &mut conn,
            &redis.keys,
            &NotifyJob::ApprovalRequest { ticket_id: *id },
        )
        .await
        .unwrap();
        // The entry id's millisecond part is when Redis took the job.
        let ms: f64 = entry.split('-').next().unwrap().parse().unwrap();
        entered.insert(id.to_string(), ms);
    }
    let all = slack
        .wait_for_calls(
            "chat.postMessage",
            WARM_UP + jobs + steady.len(),
            Duration::from_secs(120),
        )
        .await;
    let mut latencies = Vec::new();
    for c in &all[WARM_UP + jobs..] {
        let text = c.args["blocks"].to_string();
        let Some((_, entered_ms)) = entered.iter().find(|(id, _)| text.contains(id.as_str()))
        else {
            continue;
        };
        let at = c
            .received_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0;
        latencies.push(at - entered_ms);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    stop.cancel();
    worker.await.unwrap().unwrap();

    println!("notifier-worker benchmark (one worker, fake Slack answering at once, pacing off)");
    println!("  concurrency             {concurrency}");
    println!(
        "  backlog of {jobs} jobs (after {WARM_UP} warm-up jobs):   {:.0} jobs/s to the last Slack call ({:.2} s), {:.0} jobs/s until all acknowledged ({:.2} s)",
        jobs as f64 / to_last_call.as_secs_f64(),
        to_last_call.as_secs_f64(),
        jobs as f64 / to_drained.as_secs_f64(),
        to_drained.as_secs_f64(),
    );
    println!(
        "  steady {rate} jobs/s, {} jobs: stream entry -> Slack call p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "  worker's own histogram: {} samples, mean {:.2} ms",
        metrics.queue_latency.get_sample_count(),
        metrics.queue_latency.get_sample_sum() * 1000.0
            / metrics.queue_latency.get_sample_count().max(1) as f64
    );
}
