//! The notifier's configuration, typed from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use airlock_shared::config::{ConfigError, Env, LogFormat};
use airlock_shared::db::Pooler;
use airlock_shared::redis_conn::RedisMode;
use airlock_shared::secret::SecretSource;
use secrecy::SecretString;
use url::Url;

/// Slack's Web API.
pub const DEFAULT_SLACK_API: &str = "https://slack.com/api";

/// Everything the notifier needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Redis (the job stream, pacing and post claims).
    pub redis_url: SecretString,
    /// `REDIS_CLUSTER` / `REDIS_CLUSTER_NODES`: single node or Redis Cluster.
    pub redis_mode: RedisMode,
    /// Postgres (the ticket rows).
    pub database_url: SecretString,
    /// `DATABASE_POOLER`: `transaction` when `DATABASE_URL` is a transaction-mode pooler.
    pub database_pooler: Pooler,
    /// Prefix of every Redis name (`REDIS_KEY_PREFIX`, default `airlock`).
    pub key_prefix: String,
    /// The bot token's source (`SLACK_BOT_TOKEN` or `SLACK_BOT_TOKEN_ARN`).
    pub token: SecretSource,
    /// Bound on reading the token from Secrets Manager at start (`SECRETS_TIMEOUT`, default 5s).
    pub secrets_timeout: Duration,
    /// Where approval requests go unless a rule names its own channel.
    pub default_channel: String,
    /// The Web API base, e.g. `https://slack.com/api`.
    pub slack_api_base_url: Url,
    /// Jobs worked on at once.
    pub concurrency: usize,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub listen_addr: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// OpenTelemetry traces: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) and
    /// `OTEL_SERVICE_NAME`; `None` exports nothing.
    pub otel: Option<airlock_shared::otel::OtelConfig>,
    /// This replica's consumer name in the group: unique per replica, stable across its restarts
    /// (`NOTIFIER_CONSUMER`, else `POD_NAME`, else `HOSTNAME`).
    pub consumer: String,
    /// Delivery and timing knobs.
    pub tuning: Tuning,
}

/// The timing knobs; tests shorten them.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Failed attempts after which a job is dead-lettered (`NOTIFY_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// First retry delay (`NOTIFY_RETRY_BASE`); doubles per attempt, with jitter.
    pub retry_base: Duration,
    /// Longest retry delay (`NOTIFY_RETRY_MAX`).
    pub retry_max: Duration,
    /// Longest `Retry-After` we honour before counting the wait as a failure (`SLACK_MAX_RETRY_AFTER`).
    pub max_retry_after: Duration,
    /// Rate-limited answers tolerated for one job before it counts as failed.
    pub max_rate_limited: u32,
    /// A job pending this long with another consumer is taken over (`NOTIFY_CLAIM_IDLE`).
    pub claim_idle: Duration,
    /// How often to look for such jobs (`NOTIFY_CLAIM_EVERY`).
    pub claim_every: Duration,
    /// How long one `XREADGROUP` blocks (`NOTIFY_READ_BLOCK`).
    pub read_block: Duration,
    /// Minimum gap between posts to one channel, or `None` for no pacing
    /// (`SLACK_CHANNEL_PACE`, `off` to disable).
    pub channel_pace: Option<Duration>,
    /// Timeout of one Slack call (`SLACK_HTTP_TIMEOUT`).
    pub http_timeout: Duration,
    /// How long an update waits for its message to be posted (`NOTIFY_UPDATE_WAIT`).
    pub update_wait: Duration,
    /// How long in-flight jobs get to finish on SIGTERM (`SHUTDOWN_GRACE`).
    pub shutdown_grace: Duration,
    /// The reconciler's pass interval, or `None` for no reconciler (`RECONCILE_INTERVAL`,
    /// `off` to disable).
    pub reconcile_every: Option<Duration>,
    /// How old a ticket's change must be before the reconciler re-queues its job
    /// (`RECONCILE_GRACE`).
    pub reconcile_grace: Duration,
    /// How long a re-queued job gets before it is re-queued again (`RECONCILE_RETRY`).
    pub reconcile_retry: Duration,
    /// Tickets per query per pass (`RECONCILE_BATCH`).
    pub reconcile_batch: u32,
    /// How long a user group's membership is reused, and how often it is re-read while a
    /// pending ticket names the group (`USERGROUP_TTL`).
    pub usergroup_ttl: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            max_rate_limited: 20,
            claim_idle: Duration::from_secs(60),
            claim_every: Duration::from_secs(10),
            read_block: Duration::from_secs(2),
            channel_pace: Some(Duration::from_secs(1)),
            http_timeout: Duration::from_secs(10),
            update_wait: Duration::from_secs(15 * 60),
            shutdown_grace: Duration::from_secs(20),
            reconcile_every: Some(Duration::from_secs(15)),
            reconcile_grace: Duration::from_secs(10),
            reconcile_retry: Duration::from_secs(120),
            reconcile_batch: 200,
            usergroup_ttl: Duration::from_secs(60),
        }
    }
}

impl Tuning {
    /// The knobs from the environment, defaulting each.
    fn from_env(env: &mut Env) -> Self {
        let d = Tuning::default();
        let max_attempts: u32 = env.or("NOTIFY_MAX_ATTEMPTS", d.max_attempts);
        if max_attempts == 0 {
            env.problem("NOTIFY_MAX_ATTEMPTS: must be at least 1");
        }
        let channel_pace = match env.raw("SLACK_CHANNEL_PACE").map(str::trim) {
            Some("off") | Some("0") => None,
            _ => Some(env.duration("SLACK_CHANNEL_PACE", Duration::from_secs(1))),
        };
        let reconcile_every = match env.raw("RECONCILE_INTERVAL").map(str::trim) {
            Some("off") | Some("0") => None,
            _ => Some(env.duration("RECONCILE_INTERVAL", Duration::from_secs(15))),
        };
        let reconcile_batch: u32 = env.or("RECONCILE_BATCH", d.reconcile_batch);
        if reconcile_batch == 0 || reconcile_batch > 10_000 {
            env.problem("RECONCILE_BATCH: must be between 1 and 10000");
        }
        let tuning = Self {
            max_attempts,
            retry_base: env.duration("NOTIFY_RETRY_BASE", d.retry_base),
            retry_max: env.duration("NOTIFY_RETRY_MAX", d.retry_max),
            max_retry_after: env.duration("SLACK_MAX_RETRY_AFTER", d.max_retry_after),
            max_rate_limited: d.max_rate_limited,
            claim_idle: env.duration("NOTIFY_CLAIM_IDLE", d.claim_idle),
            claim_every: env.duration("NOTIFY_CLAIM_EVERY", d.claim_every),
            read_block: env.duration("NOTIFY_READ_BLOCK", d.read_block),
            channel_pace,
            http_timeout: env.duration("SLACK_HTTP_TIMEOUT", d.http_timeout),
            update_wait: env.duration("NOTIFY_UPDATE_WAIT", d.update_wait),
            shutdown_grace: env.duration("SHUTDOWN_GRACE", d.shutdown_grace),
            reconcile_every,
            reconcile_grace: env.duration("RECONCILE_GRACE", d.reconcile_grace),
            reconcile_retry: env.duration("RECONCILE_RETRY", d.reconcile_retry),
            reconcile_batch,
            usergroup_ttl: env.duration("USERGROUP_TTL", d.usergroup_ttl),
        };
        if tuning.claim_idle <= tuning.http_timeout * 2 {
            env.problem(
                "NOTIFY_CLAIM_IDLE: must be more than twice SLACK_HTTP_TIMEOUT, or a slow Slack \
                 call would let another replica take the job over mid-call",
            );
        }
        tuning
    }
}

impl Config {
    /// Reads the configuration, reporting every problem at once.
    pub fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let redis_url = env.required_secret("REDIS_URL");
        let redis_mode = RedisMode::from_env(&mut env);
        let database_url = env.required_secret("DATABASE_URL");
        let database_pooler = env.or("DATABASE_POOLER", Pooler::None);
        let token = env.secret_source("SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN_ARN");
        let secrets_timeout = env.duration("SECRETS_TIMEOUT", Duration::from_secs(5));
        let default_channel: Option<String> = env.required("SLACK_CHANNEL");
        let slack_api_base_url: Option<Url> = env
            .optional("SLACK_API_BASE_URL")
            .or_else(|| Url::parse(DEFAULT_SLACK_API).ok());
        if slack_api_base_url
            .as_ref()
            .is_some_and(|u| !matches!(u.scheme(), "http" | "https"))
        {
            env.problem("SLACK_API_BASE_URL: must be an http or https URL");
        }
        let concurrency: usize = env.or("CONCURRENCY", 32);
        if concurrency == 0 || concurrency > 1024 {
            env.problem("CONCURRENCY: must be between 1 and 1024");
        }
        let listen_addr: SocketAddr = env.or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8082)));
        let log_format = env.or("LOG_FORMAT", LogFormat::Json);
        let otel = airlock_shared::otel::OtelConfig::from_env(&mut env, "airlock-notifier");
        let key_prefix: String = env.or("REDIS_KEY_PREFIX", "airlock".to_owned());
        let consumer: String = env.or("NOTIFIER_CONSUMER", default_consumer_name(&env));

        let tuning = Tuning::from_env(&mut env);

        env.finish()?;
        match (
            redis_url,
            database_url,
            token,
            default_channel,
            slack_api_base_url,
        ) {
            (
                Some(redis_url),
                Some(database_url),
                Some(token),
                Some(default_channel),
                Some(slack_api_base_url),
            ) => Ok(Self {
                redis_url,
                redis_mode,
                database_url,
                database_pooler,
                key_prefix,
                token,
                secrets_timeout,
                default_channel,
                slack_api_base_url,
                concurrency,
                listen_addr,
                log_format,
                otel,
                consumer,
                tuning,
            }),
            // finish() reported each missing value above.
            _ => Err(ConfigError {
                problems: vec!["incomplete configuration".into()],
            }),
        }
    }
}

/// Stable per replica (`POD_NAME`, else `HOSTNAME`), so a restarted pod finishes the jobs it
/// held at once; a generated name only where neither is set.
fn default_consumer_name(env: &Env) -> String {
    let stable = ["POD_NAME", "HOSTNAME"]
        .into_iter()
        .filter_map(|k| env.raw(k))
        .map(str::trim)
        .find(|v| !v.is_empty());
    match stable {
        Some(name) => name.to_owned(),
        None => {
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            format!("notifier-{}", &suffix[..8])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs)
    }

    #[test]
    fn a_minimal_config_gets_the_documented_defaults() {
        let c = Config::from_env(env(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("SLACK_BOT_TOKEN", "xoxb-secret"),
            ("SLACK_CHANNEL", "C123"),
        ]))
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8082");
        assert_eq!(c.slack_api_base_url.as_str(), "https://slack.com/api");
        assert_eq!(c.key_prefix, "airlock");
        assert_eq!(c.tuning.channel_pace, Some(Duration::from_secs(1)));
        assert_eq!(c.tuning.reconcile_every, Some(Duration::from_secs(15)));
        assert_eq!(c.tuning.reconcile_grace, Duration::from_secs(10));
        match &c.token {
            SecretSource::Plain(t) => assert_eq!(t.expose_secret(), "xoxb-secret"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("xoxb-secret"));
    }

    #[test]
    fn every_problem_is_reported_and_no_secret_is_echoed() {
        let err = Config::from_env(env(&[
            ("SLACK_BOT_TOKEN", "xoxb-secret"),
            (
                "SLACK_BOT_TOKEN_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:x",
            ),
            ("CONCURRENCY", "0"),
            ("LISTEN_ADDR", "nowhere"),
            ("SLACK_API_BASE_URL", "ftp://x"),
            ("NOTIFY_CLAIM_IDLE", "5s"),
            ("RECONCILE_BATCH", "0"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "REDIS_URL",
            "DATABASE_URL",
            "not both",
            "SLACK_CHANNEL",
            "CONCURRENCY",
            "LISTEN_ADDR",
            "SLACK_API_BASE_URL",
            "NOTIFY_CLAIM_IDLE",
            "RECONCILE_BATCH",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(!text.contains("xoxb-secret"));
    }

    #[test]
    fn the_consumer_name_is_the_pod_name_then_the_host_name() {
        let base = [
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            ("SLACK_BOT_TOKEN", "xoxb-secret"),
            ("SLACK_CHANNEL", "C123"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Config::from_env(env(&pairs)).unwrap().consumer
        };
        assert_eq!(
            with(&[("POD_NAME", "notifier-0"), ("HOSTNAME", "h")]),
            "notifier-0"
        );
        assert_eq!(with(&[("HOSTNAME", "notifier-1")]), "notifier-1");
        assert_eq!(
            with(&[("HOSTNAME", "h"), ("NOTIFIER_CONSUMER", "mine")]),
            "mine"
        );
        assert_ne!(with(&[]), with(&[]), "generated names differ");
    }

    #[test]
    fn pacing_can_be_turned_off_and_an_arn_is_accepted() {
        let c = Config::from_env(env(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("DATABASE_URL", "postgres://x@127.0.0.1/db"),
            (
                "SLACK_BOT_TOKEN_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:x",
            ),
            ("SLACK_CHANNEL", "C123"),
            ("SLACK_CHANNEL_PACE", "off"),
            ("RECONCILE_INTERVAL", "off"),
        ]))
        .unwrap();
        assert_eq!(c.tuning.channel_pace, None);
        assert_eq!(c.tuning.reconcile_every, None);
        assert!(matches!(c.token, SecretSource::SecretsManager { .. }));
    }
}
