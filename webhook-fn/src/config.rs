//! The webhook's configuration, typed from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_shared::Keys;
use airlock_shared::config::{ConfigError, Env, LogFormat};
use airlock_shared::db::Pooler;
use airlock_shared::edge::Edge;
use airlock_shared::redis_conn::RedisMode;
use airlock_shared::secret::SecretSource;
use secrecy::SecretString;

use crate::approval::TRACE_READ_TIMEOUT;

/// How long a Lambda invocation waits for its spans to reach the collector before it answers:
/// the instance is frozen once it has answered, so what is still queued would go out only with
/// the next invocation, if any. Counted against Slack's 3 s when exporting under Lambda.
pub const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_millis(150);

/// Everything the webhook needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// `DATABASE_URL` (may hold a password).
    pub database_url: SecretString,
    /// `DATABASE_POOLER`: `transaction` when `DATABASE_URL` is a transaction-mode pooler
    /// (PgBouncer, RDS Proxy); default `none`.
    pub database_pooler: Pooler,
    /// `REDIS_URL` (may hold a password).
    pub redis_url: SecretString,
    /// `REDIS_CLUSTER` / `REDIS_CLUSTER_NODES`: single node or Redis Cluster.
    pub redis_mode: RedisMode,
    /// `SLACK_SIGNING_SECRET` or `SLACK_SIGNING_SECRET_ARN` (exactly one).
    pub signing_secret: SecretSource,
    /// Redis names, under `REDIS_KEY_PREFIX` (default `airlock`).
    pub keys: Keys,
    /// `APPROVER_USER_IDS`: who may decide tickets that name no approvers (empty: anyone).
    pub approvers: Vec<String>,
    /// `SLACK_TEAM_ID`: when set, clicks from other workspaces are ignored.
    pub team_id: Option<String>,
    /// `SLACK_API_APP_ID`: when set, clicks for other Slack apps are ignored.
    pub api_app_id: Option<String>,
    /// `LISTEN_ADDR` for the plain HTTP server (default `0.0.0.0:8081`).
    pub listen_addr: SocketAddr,
    /// Run under the Lambda runtime (`AWS_LAMBDA_RUNTIME_API` is set).
    pub lambda: bool,
    /// `LOG_FORMAT`: `json` or `pretty` (default json under Lambda, pretty otherwise).
    pub log_format: LogFormat,
    /// OpenTelemetry traces: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) and
    /// `OTEL_SERVICE_NAME`; `None` exports nothing.
    pub otel: Option<airlock_shared::otel::OtelConfig>,
    /// `DATABASE_MAX_CONNECTIONS` (default 2 under Lambda, 10 otherwise).
    pub db_max_connections: u32,
    /// `DATABASE_TIMEOUT`: bound on acquiring a connection and on each query (default 800ms).
    pub db_timeout: Duration,
    /// `REDIS_TIMEOUT`: bound on connecting and on each command (default 250ms).
    pub redis_timeout: Duration,
    /// `BODY_TIMEOUT`: bound on reading a request body (default 500ms); the same as `edge`'s.
    pub body_timeout: Duration,
    /// Limits of the plain HTTP server (`HEADER_READ_TIMEOUT`, `BODY_TIMEOUT`, `IDLE_TIMEOUT`,
    /// `MAX_CONNECTIONS`); Lambda mode has none of its own.
    pub edge: Edge,
    /// `SECRETS_TIMEOUT`: bound on the one Secrets Manager read at start (default 5s).
    pub secrets_timeout: Duration,
    /// `USERGROUP_MAX_AGE`: how old a user group's membership snapshot may be and still count
    /// (default 2 min, twice the notifier's `USERGROUP_TTL`).
    pub membership_max_age: Duration,
}

impl Config {
    /// Reads the configuration, reporting every problem at once.
    pub fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let lambda = env.raw("AWS_LAMBDA_RUNTIME_API").is_some();
        let database_url = env.required_secret("DATABASE_URL");
        let database_pooler = env.or("DATABASE_POOLER", Pooler::None);
        let redis_url = env.required_secret("REDIS_URL");
        let redis_mode = RedisMode::from_env(&mut env);
        let signing_secret = env.secret_source("SLACK_SIGNING_SECRET", "SLACK_SIGNING_SECRET_ARN");
        let prefix = env.or("REDIS_KEY_PREFIX", "airlock".to_owned());
        let approvers = env
            .raw("APPROVER_USER_IDS")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let team_id = env.optional("SLACK_TEAM_ID");
        let api_app_id = env.optional("SLACK_API_APP_ID");
        let listen_addr = env.or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8081)));
        let default_format = if lambda {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };
        let log_format = env.or("LOG_FORMAT", default_format);
        let otel = airlock_shared::otel::OtelConfig::from_env(&mut env, "airlock-webhook");
        let db_max_connections: u32 =
            env.or("DATABASE_MAX_CONNECTIONS", if lambda { 2 } else { 10 });
        if db_max_connections == 0 {
            env.problem("DATABASE_MAX_CONNECTIONS: must be at least 1");
        }
        let db_timeout = env.duration("DATABASE_TIMEOUT", Duration::from_millis(800));
        let redis_timeout = env.duration("REDIS_TIMEOUT", Duration::from_millis(250));
        let edge = Edge::from_env(&mut env, edge_defaults());
        let secrets_timeout = env.duration("SECRETS_TIMEOUT", Duration::from_secs(5));
        let membership_max_age = crate::membership::max_age(&mut env);
        let worst = edge.body_timeout + db_timeout * 2 + redis_timeout * 2;
        check_slack_deadline(&mut env, worst, otel.is_some(), lambda);
        env.finish()?;
        match (database_url, redis_url, signing_secret) {
            (Some(database_url), Some(redis_url), Some(signing_secret)) => Ok(Self {
                database_url,
                database_pooler,
                redis_url,
                redis_mode,
                signing_secret,
                keys: Keys::new(prefix),
                approvers,
                team_id,
                api_app_id,
                listen_addr,
                lambda,
                log_format,
                otel,
                db_max_connections,
                db_timeout,
                redis_timeout,
                body_timeout: edge.body_timeout,
                edge,
                secrets_timeout,
                membership_max_age,
            }),
            // finish() already failed if any of these were missing.
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// Slack's servers send a click in one go: heads and bodies get short bounds. (The body
/// size limit is the click handler's; `serve` applies it.)
fn edge_defaults() -> Edge {
    Edge {
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_millis(500),
        ..Edge::default()
    }
}

/// Slack gives up on a click after 3 s: the bounds of one click's steps must add up to less.
/// Exporting traces adds one bounded read (the ticket's trace context) to each click, and
/// under Lambda the flush of each invocation's spans before it answers.
fn check_slack_deadline(env: &mut Env, steps: Duration, exporting: bool, lambda: bool) {
    let trace_read = if exporting {
        TRACE_READ_TIMEOUT
    } else {
        Duration::ZERO
    };
    let trace_flush = if exporting && lambda {
        TRACE_FLUSH_TIMEOUT
    } else {
        Duration::ZERO
    };
    let worst = steps + trace_read + trace_flush;
    if worst >= Duration::from_secs(3) {
        env.problem(format!(
            "BODY_TIMEOUT + 2×DATABASE_TIMEOUT + 2×REDIS_TIMEOUT (+ {trace_read:?} to read a \
             ticket's trace context when exporting traces, + {trace_flush:?} to send an \
             invocation's spans under Lambda) is {worst:?}; it must stay under Slack's 3 s limit"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn lists_everything_missing_at_once() {
        let err = Config::from_env(env(&[
            ("DATABASE_TIMEOUT", "soon"),
            ("DATABASE_POOLER", "session"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "SLACK_SIGNING_SECRET",
            "DATABASE_TIMEOUT",
            "DATABASE_POOLER",
        ] {
            assert!(text.contains(name), "{name} missing from: {text}");
        }
        assert_eq!(err.problems.len(), 5, "{text}");
    }

    #[test]
    fn defaults_and_lists() {
        let c = Config::from_env(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("SLACK_SIGNING_SECRET", "s"),
            ("APPROVER_USER_IDS", " U1, ,U2 "),
        ]))
        .unwrap();
        assert_eq!(c.approvers, vec!["U1", "U2"]);
        assert_eq!(c.keys.prefix(), "airlock");
        assert_eq!(c.listen_addr.port(), 8081);
        assert!(!c.lambda);
        assert_eq!(c.db_max_connections, 10);
        assert_eq!(c.database_pooler, Pooler::None);
    }

    #[test]
    fn exporting_traces_counts_its_read_against_slacks_3_s() {
        let base = [
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("SLACK_SIGNING_SECRET", "s"),
            // 500 ms + 2 × 950 ms + 2 × 250 ms = 2.9 s: inside, but not with the 150 ms read.
            ("DATABASE_TIMEOUT", "950ms"),
        ];
        let c = Config::from_env(env(&base)).unwrap();
        assert_eq!(c.otel, None);
        let with = [
            &base[..],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
        ]
        .concat();
        let err = Config::from_env(env(&with)).unwrap_err();
        assert!(err.to_string().contains("trace context"), "{err}");
        let ok = [&with[..], &[("DATABASE_TIMEOUT", "800ms")]].concat();
        let c = Config::from_env(env(&ok)).unwrap();
        let otel = c.otel.unwrap();
        assert_eq!(otel.service_name, "airlock-webhook");
        assert_eq!(otel.traces_endpoint.as_str(), "http://c:4318/v1/traces");
    }

    #[test]
    fn under_lambda_the_span_flush_also_counts_against_slacks_3_s() {
        let base = [
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("SLACK_SIGNING_SECRET", "s"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            // 500 ms + 2 × 870 ms + 2 × 250 ms + 150 ms = 2.89 s; + 150 ms to flush = 3.04 s.
            ("DATABASE_TIMEOUT", "870ms"),
        ];
        assert!(Config::from_env(env(&base)).is_ok());
        let lambda = [&base[..], &[("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")]].concat();
        let err = Config::from_env(env(&lambda)).unwrap_err();
        assert!(err.to_string().contains("under Lambda"), "{err}");
        // The defaults leave room for both.
        let defaults: Vec<_> = lambda
            .into_iter()
            .filter(|(k, _)| *k != "DATABASE_TIMEOUT")
            .collect();
        assert!(Config::from_env(env(&defaults)).unwrap().lambda);
    }

    #[test]
    fn lambda_uses_a_small_pool_and_both_secret_sources_conflict() {
        let c = Config::from_env(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            (
                "SLACK_SIGNING_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:1:secret:s",
            ),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ]))
        .unwrap();
        assert!(c.lambda);
        assert_eq!(c.db_max_connections, 2);
        assert!(matches!(
            c.signing_secret,
            SecretSource::SecretsManager { .. }
        ));
        let err = Config::from_env(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("REDIS_URL", "redis://x"),
            ("SLACK_SIGNING_SECRET", "s"),
            ("SLACK_SIGNING_SECRET_ARN", "arn"),
            ("REDIS_TIMEOUT", "2s"),
        ]))
        .unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }
}
