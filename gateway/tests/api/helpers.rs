//! `spawn_app()` and friends.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use airlock_gateway::auth::token_sha256;
use airlock_gateway::config::{Config, OAuthConfig, UpstreamEra};
use airlock_gateway::sse::{Event, Parser};
use airlock_shared::config::LogFormat;
use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::{self, Decided, Decision, Ticket};
use airlock_shared::{DecisionSignal, TicketId, signal};
use airlock_test_support::upstream::{FakeUpstream, Mode, Serving};
use airlock_test_support::{TestDb, TestRedis, fresh_db, fresh_redis};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const BILLING_TOKEN: &str = "tok-billing-bot";
pub const OTHER_TOKEN: &str = "tok-other-bot";
pub const APPROVER: &str = "U0123ABCD";
/// The `accept` header of a client that takes JSON or SSE.
pub const BOTH: &str = "application/json, text/event-stream";
/// A keepalive short enough that tests can wait for one.
pub const SHORT_KEEPALIVE: Duration = Duration::from_millis(200);

pub const POLICY: &str = r#"
version: 1
default: deny
budget: { max_tool_calls_per_session: 50 }
rules:
  - name: reads are free
    tools: ["list_*"]
    action: allow
    read_only: true
  - name: big refunds need a manager
    tools: ["create_refund"]
    when:
      - { arg: /amount, gt: 100 }
    action: approve
    approvers: [U0123ABCD]
  - name: small refunds
    tools: ["create_refund"]
    action: allow
  - name: test tools
    tools: ["slow", "stall", "explode"]
    action: allow
  - name: never delete
    tools: ["delete_*"]
    action: deny
    reason: deleting is not allowed from agents
"#;

/// Knobs a test may turn.
#[derive(Clone)]
pub struct Opts {
    pub policy: String,
    pub mode: Mode,
    pub approval_timeout: Duration,
    pub session_lock_ttl: Duration,
    pub lock_acquire_timeout: Duration,
    pub shutdown_grace: Duration,
    pub poll_interval: Duration,
    pub max_body_bytes: usize,
    pub upstream_concurrency: usize,
    /// How often a held call's stream carries a keepalive.
    pub keepalive_interval: Duration,
    pub upstream_idle_timeout: Duration,
    /// How the fake upstream serves its connections.
    pub upstream_serving: Serving,
    /// The `owner:` of billing-bot in the keys file.
    pub billing_owner: Option<String>,
    /// `REQUEST_STATE_KEY` (`None`: a random key per gateway).
    pub request_state_key: Option<String>,
    pub request_state_ttl: Duration,
    /// `TASK_*`.
    pub tasks: airlock_gateway::config::TaskConfig,
    /// `UPSTREAM_ERA`.
    pub upstream_era: UpstreamEra,
    /// `OAUTH_*` (`None`: static tokens only).
    pub oauth: Option<OAuthConfig>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            policy: POLICY.to_owned(),
            mode: Mode::Json,
            approval_timeout: Duration::from_secs(30),
            session_lock_ttl: Duration::from_secs(60),
            lock_acquire_timeout: Duration::from_millis(300),
            shutdown_grace: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            max_body_bytes: 64 * 1024,
            upstream_concurrency: 256,
            keepalive_interval: Duration::from_secs(15),
            upstream_idle_timeout: Duration::from_secs(4),
            upstream_serving: Serving::default(),
            billing_owner: None,
            request_state_key: None,
            request_state_ttl: Duration::from_secs(600),
            tasks: airlock_gateway::config::TaskConfig {
                poll_interval: Duration::from_millis(100),
                sweep_interval: Duration::from_millis(500),
                ..Default::default()
            },
            upstream_era: UpstreamEra::Auto,
            oauth: None,
        }
    }
}

/// A gateway on a port of its own, with its own database and key prefix.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub redis: TestRedis,
    pub upstream: FakeUpstream,
    pub shutdown: CancellationToken,
    _server: JoinHandle<()>,
    pub http: reqwest::Client,
    pub opts: Opts,
    dir: std::path::PathBuf,
}

pub fn write_files(opts: &Opts) -> (std::path::PathBuf, String, String) {
    let dir = std::env::temp_dir().join(format!("airlock-gw-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, &opts.policy).unwrap();
    let keys = dir.join("agents.yaml");
    let owner = opts
        .billing_owner
        .as_ref()
        .map(|o| format!("    owner: {o}\n"))
        .unwrap_or_default();
    std::fs::write(
        &keys,
        format!(
            "agents:\n  - name: billing-bot\n    token_sha256: {}\n{owner}  - name: other-bot\n    token_sha256: {}\n",
            token_sha256(BILLING_TOKEN),
            token_sha256(OTHER_TOKEN)
        ),
    )
    .unwrap();
    (
        dir,
        policy.display().to_string(),
        keys.display().to_string(),
    )
}

pub fn config_for(
    db: &TestDb,
    redis: &TestRedis,
    upstream: &FakeUpstream,
    opts: &Opts,
    policy: String,
    keys: String,
) -> Config {
    Config {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone().into(),
        database_pooler: airlock_shared::db::Pooler::None,
        redis_url: redis.url.clone().into(),
        redis_mode: airlock_shared::RedisMode::Single,
        redis_key_prefix: redis.keys.prefix().to_owned(),
        upstream_mcp_url: upstream.url(),
        policy_file: policy,
        agent_keys_file: keys,
        approval_timeout: opts.approval_timeout,
        session_lock_ttl: opts.session_lock_ttl,
        lock_acquire_timeout: opts.lock_acquire_timeout,
        max_body_bytes: opts.max_body_bytes,
        shutdown_grace: opts.shutdown_grace,
        log_format: LogFormat::Pretty,
        otel: None,
        migrate_on_start: true,
        keepalive_interval: opts.keepalive_interval,
        upstream_timeout: Duration::from_secs(30),
        upstream_concurrency: opts.upstream_concurrency,
        upstream_idle_timeout: opts.upstream_idle_timeout,
        decision_poll_interval: opts.poll_interval,
        // Fast, so that reload tests need not wait; SIGHUP would hit every test's gateway.
        policy_reload_interval: Duration::from_millis(100),
        edge: airlock_shared::edge::Edge {
            max_body_bytes: opts.max_body_bytes,
            ..airlock_shared::edge::Edge::default()
        },
        request_state_key: opts.request_state_key.clone().map(Into::into),
        request_state_ttl: opts.request_state_ttl,
        tasks: opts.tasks,
        upstream_era: opts.upstream_era,
        oauth: opts.oauth.clone(),
    }
}

/// Starts a gateway with default options.
pub async fn spawn_app() -> TestApp {
    spawn_with(Opts::default()).await
}

/// Starts a gateway with the given options.
pub async fn spawn_with(opts: Opts) -> TestApp {
    spawn_on(fresh_db().await, opts, |_| {}).await
}

/// Starts a gateway on the given database after `adjust` has changed its configuration.
pub async fn spawn_on(db: TestDb, opts: Opts, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let redis = fresh_redis().await;
    let upstream = FakeUpstream::spawn_serving(opts.mode, opts.upstream_serving).await;
    let (dir, policy, keys) = write_files(&opts);
    let mut config = config_for(&db, &redis, &upstream, &opts, policy, keys);
    adjust(&mut config);
    let (addr, shutdown, server) = start_gateway(&config).await;
    TestApp {
        addr,
        db,
        redis,
        upstream,
        shutdown,
        _server: server,
        http: reqwest::Client::new(),
        opts,
        dir,
    }
}

/// Starts a gateway whose Redis is `cluster` (cluster mode); `redis` only names its prefix.
pub async fn spawn_on_cluster(
    opts: Opts,
    cluster: &airlock_test_support::cluster::RedisCluster,
) -> TestApp {
    let db = fresh_db().await;
    let redis = fresh_redis().await;
    let upstream = FakeUpstream::spawn_serving(opts.mode, opts.upstream_serving).await;
    let (dir, policy, keys) = write_files(&opts);
    let mut config = config_for(&db, &redis, &upstream, &opts, policy, keys);
    config.redis_url = cluster.urls()[0].clone().into();
    config.redis_mode = cluster.mode();
    let (addr, shutdown, server) = start_gateway(&config).await;
    TestApp {
        addr,
        db,
        redis,
        upstream,
        shutdown,
        _server: server,
        http: reqwest::Client::new(),
        opts,
        dir,
    }
}

/// Builds and serves a gateway for `config` on a fresh port.
pub async fn start_gateway(config: &Config) -> (SocketAddr, CancellationToken, JoinHandle<()>) {
    let gateway = airlock_gateway::build(config)
        .await
        .expect("gateway builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(gateway.serve(listener, shutdown.clone()));
    (addr, shutdown, server)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the gateway answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// The JSON-RPC error code, if the answer is an error.
    pub fn code(&self) -> Option<i64> {
        self.body.pointer("/error/code").and_then(Value::as_i64)
    }

    /// The JSON-RPC error message.
    pub fn message(&self) -> &str {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The text of the first content item of a tool result.
    pub fn tool_text(&self) -> Value {
        let text = self
            .body
            .pointer("/result/content/0/text")
            .and_then(Value::as_str)
            .unwrap_or("null");
        serde_json::from_str(text).unwrap_or(Value::Null)
    }
}

/// Reads a response whose body is JSON or a single SSE-carried JSON-RPC response.
pub async fn read_answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        // The last `data:` line carrying a response (with an id) is the answer.
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .rfind(|v| v.get("id").is_some())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// Starts a `tools/call` in the background; the handle yields the answer when the call ends.
pub fn spawn_call(
    url: String,
    session: String,
    id: i64,
    tool: &str,
    args: Value,
    accept: &'static str,
) -> JoinHandle<Answer> {
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    tokio::spawn(async move {
        let resp = reqwest::Client::new()
            .post(url)
            .bearer_auth(BILLING_TOKEN)
            .header("content-type", "application/json")
            .header("accept", accept)
            .header("mcp-session-id", session)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        read_answer(resp).await
    })
}

impl TestApp {
    /// The configuration of another gateway instance on this test's database, Redis, upstream,
    /// policy and agent keys (a restart, or a second replica).
    pub fn second_config(&self) -> Config {
        config_for(
            &self.db,
            &self.redis,
            &self.upstream,
            &self.opts,
            self.dir.join("policy.yaml").display().to_string(),
            self.dir.join("agents.yaml").display().to_string(),
        )
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// The directory holding this gateway's policy and agent keys files.
    pub fn files_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A POST to /mcp with the given token, session and raw body.
    pub fn post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(self.url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    /// A POST of `body` to /mcp as the billing agent, with the given `accept`.
    pub fn request(
        &self,
        session: Option<&str>,
        accept: &str,
        body: impl serde::Serialize,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(self.url())
            .bearer_auth(BILLING_TOKEN)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(serde_json::to_string(&body).unwrap());
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    /// Sends [`Self::request`] and returns the response (any status).
    pub async fn send(
        &self,
        session: Option<&str>,
        accept: &str,
        body: impl serde::Serialize,
    ) -> reqwest::Response {
        self.request(session, accept, body).send().await.unwrap()
    }

    /// Sends `initialize` for protocol `version` as the billing agent.
    pub async fn init(&self, version: &str) -> reqwest::Response {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        self.request(None, BOTH, &body).send().await.unwrap()
    }

    /// Opens a session of protocol `version` as the billing agent.
    pub async fn session(&self, version: &str) -> String {
        let r = self.init(version).await;
        assert_eq!(r.status(), 200);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.bytes().await.unwrap();
        sid
    }

    /// Approves the `nth` approval request (0-based) once it is enqueued.
    pub async fn approve_next(&self, nth: usize) -> TicketId {
        let id = wait_for_request(&self.redis, nth).await;
        decide(&self.db, &self.redis, id, Decision::Approve, true).await;
        id
    }

    /// Opens a session as the agent with `token`.
    pub async fn initialize(&self, token: &str) -> String {
        let resp = self
            .post(Some(token), None, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .expect("session header")
            .to_str()
            .unwrap()
            .to_owned();
        let a = read_answer(resp).await;
        assert_eq!(
            a.body.pointer("/result/serverInfo/name"),
            Some(&json!("fake-upstream"))
        );
        sid
    }

    /// Calls a tool in a session and reads the answer.
    pub async fn call(
        &self,
        token: &str,
        session: &str,
        id: i64,
        tool: &str,
        args: Value,
    ) -> Answer {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        read_answer(
            self.post(Some(token), Some(session), body.to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The jobs on the notification stream, oldest first.
    pub async fn jobs(&self) -> Vec<NotifyJob> {
        jobs(&self.redis).await
    }

    /// Waits until the stream holds an approval request, and returns its ticket.
    pub async fn wait_for_request(&self) -> TicketId {
        wait_for_request(&self.redis, 0).await
    }

    /// Reads a ticket.
    pub async fn ticket(&self, id: TicketId) -> Ticket {
        ticket::get(&self.db.pool, id)
            .await
            .unwrap()
            .expect("ticket exists")
    }
}

/// The jobs on a test's notification stream.
pub async fn jobs(redis: &TestRedis) -> Vec<NotifyJob> {
    airlock_test_support::streams::notify_jobs(redis).await
}

/// Waits for the approval request number `nth` (0-based) and returns its ticket id.
pub async fn wait_for_request(redis: &TestRedis, nth: usize) -> TicketId {
    for _ in 0..200 {
        let found: Vec<TicketId> = jobs(redis)
            .await
            .into_iter()
            .filter_map(|j| match j {
                NotifyJob::ApprovalRequest { ticket_id } => Some(ticket_id),
                _ => None,
            })
            .collect();
        if let Some(id) = found.get(nth) {
            return *id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no approval request #{nth} was enqueued");
}

/// Decides a ticket the way the webhook does: the row first, then the signal.
pub async fn decide(
    db: &TestDb,
    redis: &TestRedis,
    id: TicketId,
    decision: Decision,
    publish: bool,
) -> Decided {
    let d = ticket::decide(&db.pool, id, decision, APPROVER, "Ana Approver", None)
        .await
        .unwrap();
    if publish && let Decided::Changed(t) = &d {
        let mut conn = redis.conn().await;
        signal::publish(
            &mut conn,
            &redis.keys,
            &DecisionSignal {
                ticket_id: t.id,
                status: t.status,
            },
        )
        .await
        .unwrap();
    }
    d
}

/// Polls `f` until it returns Some, for up to `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads an SSE response event by event; the raw text (comments too) is kept in `raw`.
pub struct Reader {
    /// The response, for tests that read raw chunks.
    pub resp: reqwest::Response,
    parser: Parser,
    /// Events parsed but not yet taken.
    pub queue: VecDeque<Event>,
    pub raw: String,
}

impl Reader {
    /// Starts reading an answer that must be an event stream.
    pub fn new(resp: reqwest::Response) -> Self {
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "{:?}",
            resp.headers()
        );
        Self {
            resp,
            parser: Parser::default(),
            queue: VecDeque::new(),
            raw: String::new(),
        }
    }

    /// Reads one more chunk: false at the end of the stream, an error if it broke.
    async fn read(&mut self) -> Result<bool, reqwest::Error> {
        let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
            .await
            .expect("something within 10 s")?;
        Ok(match chunk {
            Some(c) => {
                self.raw.push_str(&String::from_utf8_lossy(&c));
                self.queue.extend(self.parser.feed(&c));
                true
            }
            None => false,
        })
    }

    /// The next event, or None when the stream ends or breaks.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if !self.read().await.ok()? {
                return None;
            }
        }
    }

    /// The next event that carries JSON.
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            let e = self.next().await?;
            if let Some(v) = e.json() {
                return Some(v);
            }
        }
    }

    /// The next JSON-RPC message of a batch answer (id-less `message` events), or None at the
    /// end; a broken stream panics.
    pub async fn next_message(&mut self) -> Option<Value> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                assert_eq!(e.event.as_deref(), Some("message"), "{e:?}");
                assert_eq!(e.id, None, "batch events carry no ids: {e:?}");
                return Some(e.json().expect("JSON data"));
            }
            if !self.read().await.unwrap() {
                return None;
            }
        }
    }

    /// How many comment lines have come so far.
    pub fn comments(&self) -> usize {
        self.raw.lines().filter(|l| l.starts_with(':')).count()
    }

    /// Reads until at least `n` keepalive comments have come.
    pub async fn until_comments(&mut self, n: usize) {
        while self.comments() < n {
            assert!(
                self.read().await.unwrap(),
                "the stream ended without a keepalive"
            );
        }
    }

    /// The rest of a batch answer's messages, to its end.
    pub async fn rest(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(m) = self.next_message().await {
            out.push(m);
        }
        out
    }
}
