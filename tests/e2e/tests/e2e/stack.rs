//! The whole system as processes: start, wait for health, kill, restart, read logs.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use airlock_shared::{Ticket, TicketId, ticket};
use airlock_test_support::{TestDb, TestRedis, fresh_db, fresh_redis};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The demo agent's token (its hash is in infra/demo/agent-keys.yaml).
pub const AGENT_TOKEN: &str = "demo-agent-token-not-a-secret";
pub const BOT_TOKEN: &str = "xoxb-e2e-token";
pub const SIGNING_SECRET: &str = "e2e-signing-secret";
pub const CHANNEL: &str = "C0APPROVALS";
pub const ALICE: &str = "U0ALICE";
pub const MALLORY: &str = "U0MALLORY";
pub const APPROVE: &str = "airlock_approve";
pub const DENY: &str = "airlock_deny";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The demo policy shipped in infra/demo.
pub fn demo_policy() -> String {
    std::fs::read_to_string(repo_root().join("infra/demo/policy.yaml")).unwrap()
}

/// Paths of every binary.
pub struct Bins {
    pub gateway: PathBuf,
    pub webhook: PathBuf,
    pub notifier: PathBuf,
    pub emulator: PathBuf,
    pub upstream: PathBuf,
}

static BINS: OnceLock<Bins> = OnceLock::new();

/// Builds the other packages' binaries into this test's target dir (once per test process).
pub fn bins() -> &'static Bins {
    BINS.get_or_init(|| {
        let upstream = PathBuf::from(env!("CARGO_BIN_EXE_airlock-demo-upstream"));
        let dir = upstream.parent().unwrap().to_path_buf();
        let target_root = dir.parent().unwrap().to_path_buf();
        if std::env::var_os("AIRLOCK_E2E_NO_BUILD").is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let profile = dir.file_name().unwrap().to_string_lossy().to_string();
            let mut cmd = std::process::Command::new(cargo);
            cmd.current_dir(repo_root())
                .env("CARGO_TARGET_DIR", &target_root)
                .args([
                    "build",
                    "--bins",
                    "-p",
                    "airlock-gateway",
                    "-p",
                    "webhook-fn",
                    "-p",
                    "notifier-worker",
                    "-p",
                    "airlock-slack-fake",
                ]);
            if profile == "release" {
                cmd.arg("--release");
            }
            let out = cmd.output().expect("run cargo build");
            assert!(
                out.status.success(),
                "building the gateway, webhook, notifier and Slack emulator binaries failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bins = Bins {
            gateway: dir.join("airlock-gateway"),
            webhook: dir.join("airlock-webhook"),
            notifier: dir.join("airlock-notifier"),
            emulator: dir.join("airlock-slack-emulator"),
            upstream,
        };
        for b in [&bins.gateway, &bins.webhook, &bins.notifier, &bins.emulator] {
            assert!(b.exists(), "{} is missing", b.display());
        }
        bins
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One service process; restartable with the same environment.
pub struct Proc {
    pub name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    pub port: u16,
    health: &'static str,
}

impl Proc {
    fn spawn_child(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LOG_FORMAT", "pretty")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.name)),
        );
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).unwrap()
    }

    /// Waits until the health endpoint answers 200, or panics with the log.
    pub async fn wait_healthy(&mut self) {
        let url = format!("http://127.0.0.1:{}{}", self.port, self.health);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited ({status}) before it was healthy:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy at {url} within 30s:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: a crash.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM, then wait for the process to exit by itself.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        let pid = c.id().unwrap().to_string();
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        tokio::time::timeout(Duration::from_secs(30), c.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within 30s of SIGTERM", self.name))
            .unwrap()
    }

    /// Starts the process again with the same environment and waits for health.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop {} first", self.name);
        self.spawn_child();
        self.wait_healthy().await;
    }

    /// Another instance of this service: the same binary and environment, listening on `port`,
    /// logging to its own file. Not started.
    pub fn replica(&self, name: &'static str, port: u16) -> Proc {
        let listen = format!("127.0.0.1:{port}");
        let env = self
            .env
            .iter()
            .map(|(k, v)| match k.as_str() {
                "LISTEN_ADDR" => (k.clone(), listen.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        Proc {
            name,
            bin: self.bin.clone(),
            args: self.args.clone(),
            env,
            log: self.log.with_file_name(format!("{name}.log")),
            child: None,
            port,
            health: self.health,
        }
    }

    /// Starts the process (not yet healthy).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} runs already", self.name);
        self.spawn_child();
    }

    /// Everything the process logged (all runs).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// What a test changes about the stack.
pub struct Options {
    pub policy: String,
    pub approval_timeout: &'static str,
    pub approver_user_ids: Option<&'static str>,
    pub start_notifier: bool,
    /// Run with no other e2e stack at the same time (a load test).
    pub alone: bool,
    /// Extra environment for the notifier.
    pub notifier_env: Vec<(&'static str, String)>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the gateway, the webhook and the notifier.
    pub otel_endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: demo_policy(),
            approval_timeout: "60s",
            approver_user_ids: None,
            start_notifier: true,
            alone: false,
            notifier_env: Vec::new(),
            otel_endpoint: None,
        }
    }
}

/// The running system.
pub struct Stack {
    pub db: TestDb,
    pub redis: TestRedis,
    pub gateway: Proc,
    pub webhook: Proc,
    pub notifier: Proc,
    pub emulator: Proc,
    pub upstream: Proc,
    dir: PathBuf,
    pub http: reqwest::Client,
    /// Last, so it is let go after every process is gone.
    _machine: MachineShare,
}

/// The machine, shared by the e2e stacks of this test process; a load test takes it alone, so
/// that its load does not stretch the timing other tests' crashes are placed in.
fn machine() -> &'static tokio::sync::RwLock<()> {
    static MACHINE: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    MACHINE.get_or_init(|| tokio::sync::RwLock::new(()))
}

/// A stack's share of the machine.
enum MachineShare {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

impl Stack {
    /// Starts everything with the demo configuration.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// Starts everything; waits until each service is healthy.
    pub async fn start_with(opts: Options) -> Self {
        let machine = if opts.alone {
            MachineShare::Alone(machine().write().await)
        } else {
            MachineShare::Shared(machine().read().await)
        };
        let bins = bins();
        let db = fresh_db().await;
        let redis = fresh_redis().await;
        let prefix = redis.keys.prefix().to_owned();
        let dir =
            std::env::temp_dir().join(format!("airlock-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.yaml");
        std::fs::write(&policy, &opts.policy).unwrap();
        let keys = repo_root().join("infra/demo/agent-keys.yaml");
        let (gw, wh, nt, emu, up) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let backing = |extra: &[(&str, String)]| -> Vec<(String, String)> {
            let mut v = vec![
                ("DATABASE_URL".to_owned(), db.url.clone()),
                ("REDIS_URL".to_owned(), redis.url.clone()),
                ("REDIS_KEY_PREFIX".to_owned(), prefix.clone()),
            ];
            v.extend(extra.iter().map(|(k, x)| ((*k).to_owned(), x.clone())));
            if let Some(endpoint) = &opts.otel_endpoint {
                v.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
                // Spans leave within 100 ms of ending, not the default 5 s.
                v.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
            }
            v
        };
        let proc = |name: &'static str,
                    bin: &Path,
                    port: u16,
                    health: &'static str,
                    env: Vec<(String, String)>| Proc {
            name,
            bin: bin.to_path_buf(),
            args: vec![],
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            port,
            health,
        };
        let mut upstream = proc(
            "demo-upstream",
            &bins.upstream,
            up,
            "/healthz",
            vec![
                ("LISTEN_ADDR".into(), format!("127.0.0.1:{up}")),
                ("ALLOWED_HOSTS".into(), "127.0.0.1,localhost".into()),
            ],
        );
        let mut emulator = proc(
            "slack-emulator",
            &bins.emulator,
            emu,
            "/healthz",
            vec![
                ("LISTEN_ADDR".into(), format!("127.0.0.1:{emu}")),
                ("SLACK_BOT_TOKEN".into(), BOT_TOKEN.into()),
                ("SLACK_SIGNING_SECRET".into(), SIGNING_SECRET.into()),
                (
                    "WEBHOOK_URL".into(),
                    format!("http://127.0.0.1:{wh}/slack/actions"),
                ),
                ("PUBLIC_URL".into(), format!("http://127.0.0.1:{emu}")),
            ],
        );
        let mut webhook_env = backing(&[
            ("LISTEN_ADDR", format!("127.0.0.1:{wh}")),
            ("SLACK_SIGNING_SECRET", SIGNING_SECRET.into()),
        ]);
        if let Some(a) = opts.approver_user_ids {
            webhook_env.push(("APPROVER_USER_IDS".into(), a.into()));
        }
        let mut webhook = proc("webhook", &bins.webhook, wh, "/healthz", webhook_env);
        let mut notifier_env = backing(&[
            ("LISTEN_ADDR", format!("127.0.0.1:{nt}")),
            ("SLACK_BOT_TOKEN", BOT_TOKEN.into()),
            ("SLACK_CHANNEL", CHANNEL.into()),
            ("SLACK_API_BASE_URL", format!("http://127.0.0.1:{emu}/api")),
            ("NOTIFIER_CONSUMER", "e2e-notifier".into()),
            ("SLACK_HTTP_TIMEOUT", "2s".into()),
            ("NOTIFY_CLAIM_IDLE", "5s".into()),
            ("NOTIFY_CLAIM_EVERY", "1s".into()),
        ]);
        notifier_env.extend(
            opts.notifier_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone())),
        );
        let mut notifier = proc("notifier", &bins.notifier, nt, "/healthz", notifier_env);
        let mut gateway = proc(
            "gateway",
            &bins.gateway,
            gw,
            "/readyz",
            backing(&[
                ("LISTEN_ADDR", format!("127.0.0.1:{gw}")),
                ("UPSTREAM_MCP_URL", format!("http://127.0.0.1:{up}/mcp")),
                ("POLICY_FILE", policy.display().to_string()),
                ("AGENT_KEYS_FILE", keys.display().to_string()),
                ("APPROVAL_TIMEOUT", opts.approval_timeout.into()),
                ("MIGRATE_ON_START", "false".into()),
                ("SHUTDOWN_GRACE", "1s".into()),
                ("DECISION_POLL_INTERVAL", "1s".into()),
            ]),
        );
        upstream.spawn_child();
        emulator.spawn_child();
        webhook.spawn_child();
        if opts.start_notifier {
            notifier.spawn_child();
        }
        gateway.spawn_child();
        upstream.wait_healthy().await;
        emulator.wait_healthy().await;
        webhook.wait_healthy().await;
        if opts.start_notifier {
            notifier.wait_healthy().await;
        }
        gateway.wait_healthy().await;
        Stack {
            db,
            redis,
            gateway,
            webhook,
            notifier,
            emulator,
            upstream,
            dir,
            http: reqwest::Client::new(),
            _machine: machine,
        }
    }

    /// This stack's scratch directory (configs, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's MCP endpoint.
    pub fn mcp_url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gateway.port)
    }

    /// The emulator's base URL.
    pub fn emulator_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.emulator.port)
    }

    /// An MCP client (rmcp) connected to the gateway as the demo agent.
    pub async fn client(&self) -> RunningService<RoleClient, ()> {
        self.client_with_headers(&[]).await
    }

    /// The demo agent's client, sending `headers` on every request.
    pub async fn client_with_headers(
        &self,
        headers: &[(&'static str, &str)],
    ) -> RunningService<RoleClient, ()> {
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(self.mcp_url()).auth_header(AGENT_TOKEN);
        for (k, v) in headers {
            config.custom_headers.insert(
                reqwest::header::HeaderName::from_static(k),
                reqwest::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        let transport = StreamableHttpClientTransport::from_config(config);
        ().serve(transport)
            .await
            .expect("MCP client connects through the gateway")
    }

    /// The emulator's view: messages, ephemerals, clicks, API calls.
    pub async fn slack(&self) -> Value {
        self.http
            .get(format!("{}/_emulator/messages", self.emulator_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The channel's messages.
    pub async fn messages(&self) -> Vec<Value> {
        self.slack().await["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until the channel has `n` messages and returns them.
    pub async fn wait_messages(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages().await;
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} Slack message(s) within {within:?}, have {}:\n{}",
                m.len(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `pred` holds for the message with `ts`.
    pub async fn wait_message(
        &self,
        ts: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let m = self.messages().await.into_iter().find(|m| m["ts"] == ts);
            if let Some(m) = m.as_ref()
                && pred(m)
            {
                return m.clone();
            }
            assert!(
                Instant::now() < deadline,
                "message {ts} never became {what}; last seen: {m:#?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks a button as `user` through the emulator; returns the emulator's report.
    pub async fn click(&self, user: &str, ts: &str, action_id: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/_emulator/click", self.emulator_url()))
            .json(&json!({"user_id": user, "channel": CHANNEL, "ts": ts, "action_id": action_id}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(
            status.is_success() || status.as_u16() == 409,
            "click: {status} {body}"
        );
        body
    }

    /// The ticket a message's buttons carry.
    pub fn ticket_of(message: &Value) -> TicketId {
        let blocks = message["blocks"].as_array().unwrap();
        let value = blocks
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap())
            .find(|e| e["action_id"] == APPROVE)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("message has no Approve button: {message:#}"));
        // The value is `<ticket>:<call fingerprint>`.
        let ticket = value.split_once(':').map_or(value, |(t, _)| t);
        ticket.parse().unwrap()
    }

    /// The ticket row.
    pub async fn ticket(&self, id: TicketId) -> Ticket {
        ticket::get(&self.db.pool, id)
            .await
            .unwrap()
            .expect("ticket row")
    }

    /// Calls the upstream actually executed.
    pub async fn executed(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("http://127.0.0.1:{}/calls", self.upstream.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["calls"].as_array().cloned().unwrap()
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in [
            &self.gateway,
            &self.webhook,
            &self.notifier,
            &self.emulator,
            &self.upstream,
        ] {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("----- {} (last 40 lines) -----\n", p.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}\n(logs kept in {})", self.logs(), self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A `tools/call` with JSON arguments.
/// What a call started in the background yields.
pub type CallHandle = tokio::task::JoinHandle<Result<CallToolResult, rmcp::ServiceError>>;

/// A held call: its handle, and the approval message it posted (and that message's ts).
pub struct Held {
    pub call: CallHandle,
    pub message: Value,
    pub ts: String,
}

/// Starts `params` in the background on `client`.
pub fn spawn_call(
    client: &RunningService<RoleClient, ()>,
    params: CallToolRequestParams,
) -> CallHandle {
    let peer = client.peer().clone();
    tokio::spawn(async move { peer.call_tool(params).await })
}

impl Stack {
    /// Starts `params` on `client` and waits (up to `within`) for its one approval message.
    pub async fn hold(
        &self,
        client: &RunningService<RoleClient, ()>,
        params: CallToolRequestParams,
        within: Duration,
    ) -> Held {
        let call = spawn_call(client, params);
        let mut msgs = self.wait_messages(1, within).await;
        assert_eq!(msgs.len(), 1, "one approval message: {msgs:?}");
        let message = msgs.swap_remove(0);
        let ts = message["ts"].as_str().unwrap().to_owned();
        Held { call, message, ts }
    }
}

pub fn call(tool: &'static str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(args.as_object().cloned().unwrap())
}

/// The text of a successful call's first content block, parsed as JSON.
pub fn result_json(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "tool reported an error: {r:?}");
    let text = r.content[0].as_text().expect("text content").text.clone();
    serde_json::from_str(&text).unwrap()
}

/// Asserts that a call failed with a JSON-RPC error whose message contains `want`.
pub fn assert_refused<T: std::fmt::Debug>(r: &Result<T, rmcp::ServiceError>, want: &str) {
    match r {
        Err(rmcp::ServiceError::McpError(e)) => {
            assert!(e.message.contains(want), "expected {want:?}, got {e:?}");
        }
        other => panic!("expected a JSON-RPC error {want:?}, got {other:?}"),
    }
}
