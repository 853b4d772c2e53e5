//! spawn_app-style helpers: a fresh database, key prefix and fake Slack per test, and workers
//! that each run on a runtime of their own so a test can kill one like a crashed pod.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use airlock_shared::config::Env;
use airlock_shared::keys::NOTIFIER_GROUP;
use airlock_shared::ticket::{self, NewTicket, Opened, Ticket};
use airlock_shared::{NotifyJob, TicketId};
use airlock_slack_fake::fake::{FakeSlack, FakeSlackConfig};
use airlock_test_support::{TestDb, TestRedis, fresh_db, fresh_redis};
use notifier_worker::metrics::Metrics;
use notifier_worker::{Config, Notifier};
use tokio_util::sync::CancellationToken;

/// The bot token every test workspace accepts; it must never show up in logs.
pub const TOKEN: &str = "xoxb-1111111111-2222222222-TOPSECRETTOKENVALUE";

/// Everything the tests of this binary logged (all levels down to debug).
pub fn logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of the process, at debug level, to the shared buffer.
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buf = log_buffer().clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || BufWriter(buf.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// One test's world.
pub struct TestApp {
    pub db: TestDb,
    pub redis: TestRedis,
    pub slack: FakeSlack,
}

/// A fresh world with the default fake workspace.
pub async fn setup() -> TestApp {
    setup_with(FakeSlackConfig::new(TOKEN).with_foreign_channel("C0FOREIGN", "foreign")).await
}

/// A fresh world with a given fake workspace.
pub async fn setup_with(slack: FakeSlackConfig) -> TestApp {
    capture_logs();
    TestApp {
        db: fresh_db().await,
        redis: fresh_redis().await,
        slack: FakeSlack::spawn(slack).await,
    }
}

impl TestApp {
    /// The base environment, with short timings, then `overrides`.
    pub fn env(&self, overrides: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = [
            ("REDIS_URL", self.redis.url.as_str()),
            ("DATABASE_URL", self.db.url.as_str()),
            ("SLACK_BOT_TOKEN", TOKEN),
            ("SLACK_CHANNEL", "C0APPROVALS"),
            ("REDIS_KEY_PREFIX", self.redis.keys.prefix()),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "pretty"),
            ("CONCURRENCY", "16"),
            ("NOTIFY_RETRY_BASE", "20ms"),
            ("NOTIFY_RETRY_MAX", "200ms"),
            ("SLACK_HTTP_TIMEOUT", "2s"),
            ("NOTIFY_CLAIM_IDLE", "5s"),
            ("NOTIFY_CLAIM_EVERY", "200ms"),
            ("NOTIFY_READ_BLOCK", "100ms"),
            ("SLACK_CHANNEL_PACE", "off"),
            ("SHUTDOWN_GRACE", "5s"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        vars.insert("SLACK_API_BASE_URL".into(), self.slack.base_url());
        for (k, v) in overrides {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }

    /// A typed config from [`TestApp::env`].
    pub fn config(&self, overrides: &[(&str, &str)]) -> Config {
        Config::from_env(Env::from_map(self.env(overrides))).unwrap()
    }

    /// Starts a worker replica.
    pub async fn worker(&self, overrides: &[(&str, &str)]) -> Running {
        Running::start(self.config(overrides)).await
    }

    /// Opens a pending ticket; `edit` may change the defaults.
    pub async fn ticket(&self, edit: impl FnOnce(&mut NewTicket)) -> Ticket {
        let mut new = NewTicket {
            id: TicketId::new(),
            principal: "agent-billing".into(),
            principal_issuer: None,
            principal_claims: None,
            session_id: uuid::Uuid::new_v4().simple().to_string(),
            tool: "payments.refund".into(),
            arguments: serde_json::json!({"invoice": "INV-42", "amount_cents": 129900}),
            rule: "refunds-need-approval".into(),
            reason: Some("Refunds over $500 need a human".into()),
            approvers: vec!["U0ANA".into()],
            slack_channel: None,
            request_hash: uuid::Uuid::new_v4().simple().to_string(),
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
        edit(&mut new);
        if new.fingerprint.is_empty() {
            new.fingerprint =
                airlock_shared::canonical::fingerprint(&new.tool, &new.arguments, None);
        }
        match ticket::open(&self.db.pool, &new).await.unwrap() {
            Opened::Created(t) => t,
            Opened::Reattached(t) => panic!("expected a new ticket, got {t:?}"),
        }
    }

    /// Appends a job to the notification stream.
    pub async fn enqueue(&self, job: &NotifyJob) -> String {
        let mut conn = self.redis.conn().await;
        airlock_shared::job::enqueue(&mut conn, &self.redis.keys, job)
            .await
            .unwrap()
    }

    /// The approval-request job for a ticket.
    pub async fn request(&self, t: &Ticket) -> String {
        self.enqueue(&NotifyJob::ApprovalRequest { ticket_id: t.id })
            .await
    }

    /// The ticket-closed job for a ticket.
    pub async fn closed(&self, t: &Ticket) -> String {
        self.enqueue(&NotifyJob::TicketClosed { ticket_id: t.id })
            .await
    }

    /// The ticket as stored.
    pub async fn get(&self, id: TicketId) -> Ticket {
        ticket::get(&self.db.pool, id).await.unwrap().unwrap()
    }

    /// Polls the ticket until `pred` holds; panics after `timeout`.
    pub async fn wait_ticket(
        &self,
        id: TicketId,
        timeout: Duration,
        pred: impl Fn(&Ticket) -> bool,
    ) -> Ticket {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let t = self.get(id).await;
            if pred(&t) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ticket never reached the expected state: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Entries of the dead-letter stream, as field maps.
    pub async fn dead_letters(&self) -> Vec<HashMap<String, String>> {
        airlock_test_support::streams::dead_letters(&self.redis).await
    }

    /// Waits until the dead-letter stream has `n` entries.
    pub async fn wait_dead_letters(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<HashMap<String, String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.dead_letters().await;
            if d.len() >= n || tokio::time::Instant::now() >= deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Entries still on the notification stream, and how many of them are pending.
    pub async fn stream_state(&self) -> (usize, usize) {
        let mut conn = self.redis.conn().await;
        let len: usize = redis::cmd("XLEN")
            .arg(self.redis.keys.notify_stream())
            .query_async(&mut conn)
            .await
            .unwrap();
        let pending: redis::Value = redis::cmd("XPENDING")
            .arg(self.redis.keys.notify_stream())
            .arg(NOTIFIER_GROUP)
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        let pending = match pending {
            redis::Value::Array(v) => v
                .into_iter()
                .next()
                .and_then(|c| redis::from_redis_value::<usize>(c).ok())
                .unwrap_or(0),
            _ => 0,
        };
        (len, pending)
    }

    /// Waits until the stream is empty with nothing pending (every job settled).
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.stream_state().await;
            if state == (0, 0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream not drained: (len, pending) = {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A worker replica on its own thread and runtime.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics: Metrics,
    shutdown: CancellationToken,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<Result<(), String>>>>,
}

impl Running {
    /// Builds and starts a worker; returns once it serves its probes.
    pub async fn start(config: Config) -> Running {
        let shutdown = CancellationToken::new();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            // Current-thread: once the kill lands nothing of this worker runs again, like a
            // process that died.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let out = rt.block_on(async move {
                let notifier = Notifier::build(&config).await.unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let _ = ready_tx.send((addr, notifier.metrics().clone()));
                tokio::select! {
                    r = notifier.run(listener, stop) => Some(r.map_err(|e| airlock_shared::telemetry::chain(&e))),
                    _ = killed => None,
                }
            });
            rt.shutdown_background();
            out
        });
        let (addr, metrics) = ready_rx.await.expect("worker failed to start");
        Running {
            addr,
            metrics,
            shutdown,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// SIGTERM: stop reading, drain, return.
    pub async fn stop(mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
            .expect("stopped, not killed")
    }

    /// Like SIGKILL: everything in flight is dropped on the spot, nothing is acknowledged.
    pub async fn kill(mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        let thread = self.thread.take().unwrap();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    /// Waits until [`Running::metric`] reaches `want` (metrics are counted just after a job is
    /// settled on the stream, so a drained stream can be a moment ahead of them).
    pub async fn wait_metric(&self, name: &str, labels: &str, want: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name, labels);
            if v >= want || tokio::time::Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A counter's value from `/metrics` text, summed over label sets that contain `labels`.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        self.metrics
            .render()
            .unwrap()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Validates blocks with the official `slack-sdk` models; panics with the SDK's complaint.
pub fn slack_sdk_validate(blocks: &serde_json::Value) {
    const SCRIPT: &str = r#"
import json, sys
from slack_sdk.models.blocks import Block
blocks = json.load(sys.stdin)
assert isinstance(blocks, list) and blocks, "no blocks"
for i, b in enumerate(blocks):
    parsed = Block.parse(b)
    if parsed is None:
        raise SystemExit(f"block {i}: slack_sdk does not know type {b.get('type')!r}")
    parsed.validate_json()
print("ok", len(blocks))
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for the slack-sdk check");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(blocks.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'slack_sdk'"),
        "the slack-sdk check needs `pip install slack-sdk`"
    );
    assert!(
        out.status.success(),
        "slack-sdk rejected the blocks: {stderr}\n{}",
        serde_json::to_string_pretty(blocks).unwrap()
    );
}
