//! Crashes and lost signals while a call is held.

use std::collections::HashSet;
use std::time::Duration;

use airlock_shared::{TicketId, TicketStatus};
use airlock_test_support::restart::{RestartStack, a_retry_after_a_restart_reattaches};
use serde_json::json;

use crate::stack::*;

const WAIT: Duration = Duration::from_secs(20);

fn big_refund() -> rmcp::model::CallToolRequestParams {
    call(
        "create_refund",
        json!({"charge_id": "ch_1003", "amount": 500, "currency": "eur"}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_crash_loses_no_message_and_duplicates_none() {
    let mut s = Stack::start().await;
    s.notifier.kill().await;
    let client = s.client().await;
    let peer = client.peer().clone();
    let held = tokio::spawn(async move { peer.call_tool(big_refund()).await });
    // The job waits on the stream while no notifier runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(s.messages().await.is_empty(), "nobody could have posted");
    s.notifier.restart().await;
    let msgs = s.wait_messages(1, WAIT).await;
    let ts = msgs[0]["ts"].as_str().unwrap().to_owned();
    // Crash again right after posting, then come back: still exactly one message.
    s.notifier.kill().await;
    s.notifier.restart().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        s.messages().await.len(),
        1,
        "one message per ticket across crashes"
    );
    s.click(ALICE, &ts, APPROVE).await;
    let r = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    result_json(&r.expect("approved"));
    s.wait_message(&ts, WAIT, "updated", |m| m["updates"].as_u64() >= Some(1))
        .await;
    assert_eq!(s.messages().await.len(), 1);
}

/// Local ports of `pid`'s TCP connections to `remote_port` (from /proc, Linux only).
fn local_ports_to(pid: u32, remote_port: u16) -> Vec<u16> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let l = link.to_string_lossy();
            if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                inodes.insert(n.to_owned());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || !inodes.contains(cols[9]) {
                continue;
            }
            let port = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(cols[2]) == Some(remote_port)
                && let Some(p) = port(cols[1])
            {
                ports.push(p);
            }
        }
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_completes_when_pubsub_delivery_is_cut() {
    let s = Stack::start().await;
    let client = s.client().await;
    let Held { call: held, ts, .. } = s.hold(&client, big_refund(), WAIT).await;

    // `CLIENT KILL TYPE pubsub`, narrowed to the gateway's own connections so that other test
    // processes sharing this Redis keep theirs.
    let redis_port = url_port(&s.redis.url);
    let ports = local_ports_to(s.gateway.pid(), redis_port);
    assert!(!ports.is_empty(), "the gateway has no Redis connections?");
    let mut conn = s.redis.conn().await;
    let mut killed = 0i64;
    for p in ports {
        let n: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub", "ADDR", &format!("127.0.0.1:{p}")])
            .query_async(&mut conn)
            .await
            .unwrap();
        killed += n;
    }
    assert!(
        killed >= 1,
        "the gateway's pub/sub connection was not found"
    );

    let started = std::time::Instant::now();
    s.click(ALICE, &ts, APPROVE).await;
    let r = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the call completes within seconds without pub/sub")
        .unwrap();
    result_json(&r.expect("approved"));
    eprintln!(
        "resumed {:?} after the click with pub/sub cut",
        started.elapsed()
    );
    assert_eq!(s.executed().await.len(), 1);
}

fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(6379)
}

/// The real binaries behind the shared restart-and-retry scenario.
struct Binaries {
    s: Stack,
    client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    held: Option<CallHandle>,
    ts: String,
}

impl RestartStack for Binaries {
    async fn hold(&mut self) -> TicketId {
        let Held { call, message, ts } = self.s.hold(&self.client, big_refund(), WAIT).await;
        (self.held, self.ts) = (Some(call), ts);
        Stack::ticket_of(&message)
    }

    async fn stop_gateway(&mut self) -> String {
        // A rolling restart: SIGTERM, the grace period passes, held calls answer "interrupted".
        let status = self.s.gateway.terminate().await;
        assert!(status.success(), "gateway exit: {status}");
        let held = self.held.take().expect("a held call");
        match tokio::time::timeout(WAIT, held).await.unwrap().unwrap() {
            Err(rmcp::ServiceError::McpError(e)) => e.message.to_string(),
            other => format!("not a JSON-RPC error: {other:?}"),
        }
    }

    async fn start_gateway(&mut self) {
        self.s.gateway.restart().await;
    }

    fn retry(&mut self) -> tokio::task::JoinHandle<Result<(), String>> {
        let peer = self.client.peer().clone();
        tokio::spawn(async move {
            match peer.call_tool(big_refund()).await {
                Ok(r) if r.is_error != Some(true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
    }

    async fn approval_requests(&self) -> usize {
        self.s.messages().await.len()
    }

    async fn approve(&mut self, _id: TicketId) {
        self.s.click(ALICE, &self.ts, APPROVE).await;
    }

    async fn status(&self, id: TicketId) -> TicketStatus {
        self.s.ticket(id).await.status
    }

    async fn executions(&self) -> usize {
        self.s.executed().await.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gateway_restart_the_retry_reattaches_to_its_ticket() {
    let s = Stack::start().await;
    let client = s.client().await;
    let mut stack = Binaries {
        s,
        client,
        held: None,
        ts: String::new(),
    };
    a_retry_after_a_restart_reattaches(&mut stack, Duration::from_secs(2)).await;
}
