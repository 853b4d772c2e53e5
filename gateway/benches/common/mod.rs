//! Shared set-up for the gateway benchmarks: a real gateway process against real PostgreSQL and
//! Redis, and the fake upstream MCP server.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_gateway::auth::token_sha256;
use airlock_test_support::upstream::{FakeUpstream, Mode};
use airlock_test_support::{TestDb, TestRedis};
use serde_json::{Value, json};

pub const TOKEN: &str = "bench-token";

pub struct GatewayProcess {
    pub child: Child,
    pub addr: String,
    dir: std::path::PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl GatewayProcess {
    /// Resident set size of the gateway process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time (user + system) the gateway process has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(&format!("/proc/{}/stat", self.child.id()))
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

/// A multi-threaded runtime for a bench's `main`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh database and key prefix, a fake upstream answering in `mode`, and a gateway in front.
pub struct Stack {
    pub db: TestDb,
    pub redis: TestRedis,
    pub upstream: FakeUpstream,
    pub gw: GatewayProcess,
}

impl Stack {
    pub async fn start(mode: Mode, policy: &str, extra: &[(&str, &str)]) -> Self {
        let db = airlock_test_support::fresh_db().await;
        let redis = airlock_test_support::fresh_redis().await;
        let upstream = FakeUpstream::spawn(mode).await;
        let gw = start_gateway(&db, &redis, &upstream, policy, extra).await;
        Self {
            db,
            redis,
            upstream,
            gw,
        }
    }
}

pub async fn start_gateway(
    db: &TestDb,
    redis: &TestRedis,
    upstream: &FakeUpstream,
    policy: &str,
    extra: &[(&str, &str)],
) -> GatewayProcess {
    let dir = std::env::temp_dir().join(format!("airlock-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    std::fs::write(
        dir.join("agents.yaml"),
        format!(
            "agents:\n  - name: bench\n    token_sha256: {}\n",
            token_sha256(TOKEN)
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // `GATEWAY_WRAPPER="heaptrack -o /tmp/gw"` runs the gateway under a profiler (its RSS is
    // then the wrapper's, not the gateway's).
    let wrapper = std::env::var("GATEWAY_WRAPPER").unwrap_or_default();
    let mut argv: Vec<String> = wrapper.split_whitespace().map(str::to_owned).collect();
    argv.push(env!("CARGO_BIN_EXE_airlock-gateway").to_owned());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.env_clear();
    // Allocator tunables (MALLOC_ARENA_MAX, GLIBC_TUNABLES) reach the gateway for experiments.
    for (k, v) in
        std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES")
    {
        cmd.env(k, v);
    }
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", &addr)
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("REDIS_KEY_PREFIX", redis.keys.prefix())
        .env("UPSTREAM_MCP_URL", upstream.url())
        .env("POLICY_FILE", dir.join("policy.yaml"))
        .env("AGENT_KEYS_FILE", dir.join("agents.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("gateway binary starts");
    let gw = GatewayProcess { child, addr, dir };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client
            .get(format!("http://{}/readyz", gw.addr))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw
}

pub fn init_body() -> String {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}).to_string()
}

pub async fn initialize(client: &reqwest::Client, url: &str, token: Option<&str>) -> String {
    let mut r = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init_body());
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    assert!(resp.status().is_success(), "initialize: {}", resp.status());
    let sid = resp
        .headers()
        .get("mcp-session-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let _ = resp.bytes().await;
    sid
}

pub fn call_body(id: u64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args}}).to_string()
}

pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub count: usize,
}

pub fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Summary {
        p50: at(0.5),
        p99: at(0.99),
        max: *v.last().unwrap(),
        count: v.len(),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// User + system CPU seconds from a `/proc/<pid>/stat` file (`/proc/self/stat`: this process).
pub fn cpu_secs(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 11 and 12 after the name (state first).
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    ticks as f64 / 100.0
}
