//! The gateway's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_shared::config::{ByteSize, ConfigError, Env, LogFormat};
use airlock_shared::db::Pooler;
use airlock_shared::edge::Edge;
use airlock_shared::otel::OtelConfig;
use airlock_shared::redis_conn::RedisMode;
use secrecy::{ExposeSecret, SecretString};

pub use crate::bridge::UpstreamEra;
pub use crate::oauth::OAuthConfig;

/// Everything the gateway needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// May hold a password: a secret, never shown by `Debug` or in logs.
    pub database_url: SecretString,
    /// `DATABASE_POOLER`: `transaction` when `DATABASE_URL` is a transaction-mode pooler.
    pub database_pooler: Pooler,
    /// May hold a password: a secret, never shown by `Debug` or in logs.
    pub redis_url: SecretString,
    /// Single node or Redis Cluster (`REDIS_CLUSTER`, `REDIS_CLUSTER_NODES`).
    pub redis_mode: RedisMode,
    pub redis_key_prefix: String,
    pub upstream_mcp_url: String,
    pub policy_file: String,
    pub agent_keys_file: String,
    pub approval_timeout: Duration,
    pub session_lock_ttl: Duration,
    pub lock_acquire_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    /// OpenTelemetry traces: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) and
    /// `OTEL_SERVICE_NAME`; `None` exports nothing.
    pub otel: Option<OtelConfig>,
    pub migrate_on_start: bool,
    pub keepalive_interval: Duration,
    pub upstream_timeout: Duration,
    /// Requests that may wait for the upstream's answer headers at once (`UPSTREAM_CONCURRENCY`).
    pub upstream_concurrency: usize,
    /// How long an idle upstream connection is kept for reuse (`UPSTREAM_IDLE_TIMEOUT`); below
    /// the upstream's own keep-alive timeout, so the gateway never reuses one it just closed.
    pub upstream_idle_timeout: Duration,
    /// How often waiters re-check Postgres in case a signal was lost.
    pub decision_poll_interval: Duration,
    /// How often the policy and agent keys files are checked for changes (SIGHUP: at once).
    pub policy_reload_interval: Duration,
    /// Limits at the HTTP edge (`HEADER_READ_TIMEOUT`, `BODY_TIMEOUT`, `IDLE_TIMEOUT`,
    /// `MAX_CONNECTIONS`; a declared body over `MAX_BODY_BYTES` gets 413 unread).
    pub edge: Edge,
    /// Signs the gateway's `requestState` (`REQUEST_STATE_KEY`); unset: a random key per
    /// process, so continuations do not survive a restart or cross replicas.
    pub request_state_key: Option<SecretString>,
    /// How long a `requestState` the gateway issued stays valid (`REQUEST_STATE_TTL`).
    pub request_state_ttl: Duration,
    /// Which MCP revisions the upstream speaks (`UPSTREAM_ERA`): probed (`auto`), or fixed.
    pub upstream_era: UpstreamEra,
    /// Held calls served as MCP tasks (`TASK_*`).
    pub tasks: TaskConfig,
    /// Agents with OAuth access tokens (`OAUTH_*`); `None` unless `OAUTH_ISSUERS` is set.
    pub oauth: Option<OAuthConfig>,
}

/// `TASK_POLL_INTERVAL`, `TASK_MAX_RESULT_BYTES`, `TASK_RETENTION`, `TASK_SWEEP_INTERVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskConfig {
    /// The `pollInterval` a task asks its client to keep.
    pub poll_interval: Duration,
    /// The largest upstream answer a task stores; a larger one fails the task.
    pub max_result_bytes: usize,
    /// How long an ended task and its result are kept before the sweeper deletes them.
    pub retention: Duration,
    /// How often each replica's task sweeper runs.
    pub sweep_interval: Duration,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(2),
            max_result_bytes: 1 << 20,
            retention: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(5),
        }
    }
}

impl TaskConfig {
    fn from_env(env: &mut Env) -> Self {
        let d = Self::default();
        let t = Self {
            poll_interval: env.duration("TASK_POLL_INTERVAL", d.poll_interval),
            max_result_bytes: env
                .or("TASK_MAX_RESULT_BYTES", ByteSize(d.max_result_bytes))
                .0,
            retention: env.duration("TASK_RETENTION", d.retention),
            sweep_interval: env.duration("TASK_SWEEP_INTERVAL", d.sweep_interval),
        };
        if t.poll_interval.is_zero() || t.sweep_interval.is_zero() {
            env.problem("TASK_POLL_INTERVAL and TASK_SWEEP_INTERVAL: must be above zero");
        }
        t
    }
}

/// `REQUEST_STATE_KEY` (at least 32 characters when set) and `REQUEST_STATE_TTL` (`10m`).
fn request_state(env: &mut Env) -> (Option<SecretString>, Duration) {
    let key = env.secret("REQUEST_STATE_KEY");
    if key.as_ref().is_some_and(|k| k.expose_secret().len() < 32) {
        env.problem(
            "REQUEST_STATE_KEY: must be at least 32 characters (e.g. openssl rand -hex 32)",
        );
    }
    let ttl = env.duration("REQUEST_STATE_TTL", Duration::from_secs(600));
    (key, ttl)
}

/// The HTTP edge's limits (`HEADER_READ_TIMEOUT`, `BODY_TIMEOUT`, `IDLE_TIMEOUT`,
/// `MAX_CONNECTIONS`).
fn edge(env: &mut Env, max_body_bytes: usize) -> Edge {
    Edge::from_env(
        env,
        // Every held call is an open connection: a pod is sized for many thousands.
        Edge {
            max_body_bytes,
            max_connections: 16_384,
            ..Edge::default()
        },
    )
}

impl Config {
    /// Reads the configuration, reporting every missing or invalid variable at once.
    pub fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let listen_addr = env.or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8080)));
        let (database_url, database_pooler, migrate_on_start) = database(&mut env);
        let redis_url = env.required_secret("REDIS_URL");
        let redis_mode = RedisMode::from_env(&mut env);
        let redis_key_prefix: String = env.or("REDIS_KEY_PREFIX", "airlock".to_owned());
        let upstream = upstream_url(&mut env);
        let policy_file: Option<String> = env.required("POLICY_FILE");
        let agent_keys_file: Option<String> = env.required("AGENT_KEYS_FILE");
        let approval_timeout = env.duration("APPROVAL_TIMEOUT", Duration::from_secs(300));
        let session_lock_ttl = session_lock_ttl(&mut env);
        let lock_acquire_timeout = env.duration("LOCK_ACQUIRE_TIMEOUT", Duration::from_secs(5));
        let max_body_bytes = env.or("MAX_BODY_BYTES", ByteSize(4 << 20)).0;
        let shutdown_grace = env.duration("SHUTDOWN_GRACE", Duration::from_secs(30));
        let (log_format, otel) = observability(&mut env);
        let keepalive_interval = env.duration("KEEPALIVE_INTERVAL", Duration::from_secs(15));
        let upstream_timeout = env.duration("UPSTREAM_TIMEOUT", Duration::from_secs(300));
        let upstream_concurrency: usize = env.or("UPSTREAM_CONCURRENCY", 256);
        if upstream_concurrency == 0 {
            env.problem("UPSTREAM_CONCURRENCY: must be at least 1");
        }
        // Common servers close idle keep-alive connections after 5 s: ours retire first.
        let upstream_idle_timeout = env.duration("UPSTREAM_IDLE_TIMEOUT", Duration::from_secs(4));
        let decision_poll_interval = env.duration("DECISION_POLL_INTERVAL", Duration::from_secs(1));
        let policy_reload_interval = env.duration("POLICY_RELOAD_INTERVAL", Duration::from_secs(5));
        let edge = edge(&mut env, max_body_bytes);
        let (request_state_key, request_state_ttl) = request_state(&mut env);
        let tasks = TaskConfig::from_env(&mut env);
        let upstream_era = env.or("UPSTREAM_ERA", UpstreamEra::Auto);
        let oauth = OAuthConfig::from_env(&mut env);
        env.finish()?;
        match (
            database_url,
            redis_url,
            upstream,
            policy_file,
            agent_keys_file,
        ) {
            (
                Some(database_url),
                Some(redis_url),
                Some(upstream_mcp_url),
                Some(policy_file),
                Some(agent_keys_file),
            ) => Ok(Self {
                listen_addr,
                database_url,
                database_pooler,
                redis_url,
                redis_mode,
                redis_key_prefix,
                upstream_mcp_url,
                policy_file,
                agent_keys_file,
                approval_timeout,
                session_lock_ttl,
                lock_acquire_timeout,
                max_body_bytes,
                shutdown_grace,
                log_format,
                otel,
                migrate_on_start,
                keepalive_interval,
                upstream_timeout,
                upstream_concurrency,
                upstream_idle_timeout,
                decision_poll_interval,
                policy_reload_interval,
                edge,
                request_state_key,
                request_state_ttl,
                tasks,
                upstream_era,
                oauth,
            }),
            _ => Err(ConfigError {
                problems: vec!["required variables missing".into()],
            }),
        }
    }
}

/// `DATABASE_URL`, `DATABASE_POOLER` and `MIGRATE_ON_START`, which is on by default and off
/// behind a transaction pooler, where the migrator's session-level advisory lock would be taken
/// on one server connection and released on another.
fn database(env: &mut Env) -> (Option<SecretString>, Pooler, bool) {
    let url = env.required_secret("DATABASE_URL");
    let pooler = env.or("DATABASE_POOLER", Pooler::None);
    let migrate = env.flag("MIGRATE_ON_START", pooler == Pooler::None);
    if migrate && pooler == Pooler::Transaction {
        env.problem(
            "MIGRATE_ON_START: migrations cannot run through a transaction pooler \
             (DATABASE_POOLER=transaction); run `airlock-gateway migrate` with a DATABASE_URL \
             that reaches Postgres directly",
        );
    }
    (url, pooler, migrate)
}

/// `LOG_FORMAT`, and the OpenTelemetry exporter (`OTEL_*`, off unless an endpoint is set).
fn observability(env: &mut Env) -> (LogFormat, Option<OtelConfig>) {
    let format = env.or("LOG_FORMAT", LogFormat::Pretty);
    (format, OtelConfig::from_env(env, "airlock-gateway"))
}

/// `SESSION_LOCK_TTL`, at least 1 s.
fn session_lock_ttl(env: &mut Env) -> Duration {
    let ttl = env.duration("SESSION_LOCK_TTL", Duration::from_secs(60));
    if ttl < Duration::from_secs(1) {
        env.problem("SESSION_LOCK_TTL: must be at least 1s (it is extended every third of it)");
    }
    ttl
}

/// `UPSTREAM_MCP_URL`, which must be an http(s) URL.
fn upstream_url(env: &mut Env) -> Option<String> {
    let upstream: Option<String> = env.required("UPSTREAM_MCP_URL");
    if let Some(u) = &upstream
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        env.problem(format!(
            "UPSTREAM_MCP_URL: expected an http(s) URL, got {u:?}"
        ));
    }
    upstream
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn lists_every_missing_and_invalid_variable() {
        let err = Config::from_env(env(&[
            ("APPROVAL_TIMEOUT", "soon"),
            ("MAX_BODY_BYTES", "lots"),
            ("LOG_FORMAT", "xml"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "UPSTREAM_MCP_URL",
            "POLICY_FILE",
            "AGENT_KEYS_FILE",
            "APPROVAL_TIMEOUT",
            "MAX_BODY_BYTES",
            "LOG_FORMAT",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert_eq!(err.problems.len(), 8, "{text}");
    }

    #[test]
    fn a_transaction_pooler_turns_start_up_migrations_off_and_refuses_them() {
        let base = [
            ("DATABASE_URL", "postgres://x@pgbouncer:6432/y"),
            ("REDIS_URL", "redis://x"),
            ("UPSTREAM_MCP_URL", "http://up/mcp"),
            ("POLICY_FILE", "p.yaml"),
            ("AGENT_KEYS_FILE", "k.yaml"),
            ("DATABASE_POOLER", "transaction"),
        ];
        let c = Config::from_env(env(&base)).unwrap();
        assert_eq!(c.database_pooler, Pooler::Transaction);
        assert!(!c.migrate_on_start);
        let mut both = base.to_vec();
        both.push(("MIGRATE_ON_START", "true"));
        both.push(("DATABASE_POOLER", "statement"));
        let mut vars = std::collections::HashMap::new();
        for (k, v) in both {
            vars.insert(k.to_owned(), v.to_owned());
        }
        let err = Config::from_env(Env::from_map(vars.clone())).unwrap_err();
        assert!(err.to_string().contains("DATABASE_POOLER"), "{err}");
        vars.insert("DATABASE_POOLER".to_owned(), "transaction".to_owned());
        let err = Config::from_env(Env::from_map(vars)).unwrap_err();
        assert!(err.to_string().contains("MIGRATE_ON_START"), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_env(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("UPSTREAM_MCP_URL", "http://up/mcp"),
            ("POLICY_FILE", "p.yaml"),
            ("AGENT_KEYS_FILE", "k.yaml"),
        ]))
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.approval_timeout, Duration::from_secs(300));
        assert_eq!(c.session_lock_ttl, Duration::from_secs(60));
        assert_eq!(c.lock_acquire_timeout, Duration::from_secs(5));
        assert_eq!(c.max_body_bytes, 4 << 20);
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert!(c.migrate_on_start);
        assert_eq!(c.database_pooler, Pooler::None);
        assert_eq!(c.edge.header_timeout, Duration::from_secs(10));
        assert_eq!(c.edge.body_timeout, Duration::from_secs(30));
        assert_eq!(c.edge.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.edge.max_connections, 16_384);
        assert_eq!(c.edge.max_body_bytes, 4 << 20);
        assert_eq!(c.upstream_idle_timeout, Duration::from_secs(4));
        assert_eq!(c.upstream_era, UpstreamEra::Auto);
    }

    #[test]
    fn the_upstream_era_is_one_of_four() {
        let base = [
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("UPSTREAM_MCP_URL", "http://up/mcp"),
            ("POLICY_FILE", "p.yaml"),
            ("AGENT_KEYS_FILE", "k.yaml"),
        ];
        let set = Config::from_env(env(&[&base[..], &[("UPSTREAM_ERA", "legacy")]].concat()));
        assert_eq!(set.unwrap().upstream_era, UpstreamEra::Legacy);
        let bad = Config::from_env(env(&[&base[..], &[("UPSTREAM_ERA", "old")]].concat()));
        assert!(bad.unwrap_err().to_string().contains("UPSTREAM_ERA"));
    }

    #[test]
    fn the_request_state_key_is_optional_but_never_short_and_never_shown() {
        let base = [
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("UPSTREAM_MCP_URL", "http://up/mcp"),
            ("POLICY_FILE", "p.yaml"),
            ("AGENT_KEYS_FILE", "k.yaml"),
        ];
        let unset = Config::from_env(env(&base)).unwrap();
        assert!(unset.request_state_key.is_none());
        assert_eq!(unset.request_state_ttl, Duration::from_secs(600));
        let short = Config::from_env(env(&[&base[..], &[("REQUEST_STATE_KEY", "tiny")]].concat()))
            .unwrap_err();
        assert!(short.to_string().contains("REQUEST_STATE_KEY"), "{short}");
        assert!(!short.to_string().contains("tiny"), "{short}");
        let key = "rs-key-secret-0123456789abcdef0123456789";
        let set = [("REQUEST_STATE_KEY", key), ("REQUEST_STATE_TTL", "2m")];
        let c = Config::from_env(env(&[&base[..], &set[..]].concat())).unwrap();
        assert_eq!(c.request_state_ttl, Duration::from_secs(120));
        assert!(!format!("{c:?}").contains("rs-key-secret"));
    }

    #[test]
    fn debug_output_hides_the_store_urls() {
        let c = Config::from_env(env(&[
            ("DATABASE_URL", "postgres://app:pg-secret@db/airlock"),
            ("REDIS_URL", "redis://:redis-secret@cache"),
            ("UPSTREAM_MCP_URL", "http://up/mcp"),
            ("POLICY_FILE", "p.yaml"),
            ("AGENT_KEYS_FILE", "k.yaml"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("http://up/mcp"), "{shown}");
    }
}
