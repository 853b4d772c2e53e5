//! Airlock's notifier: takes jobs from the Redis notification stream and posts, updates and
//! answers Slack approval messages. Several replicas share one consumer group.
//!
//! The ticket row is the source of truth for what a message shows; its stored `ts` is the guard
//! that keeps one message per ticket.

pub mod claim;
pub mod config;
pub mod message;
pub mod metrics;
pub mod pace;
pub mod probes;
pub mod reconcile;
pub mod retry;
pub mod stream;
pub mod usergroups;
pub mod web_api;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_shared::Keys;
use airlock_shared::redis_conn::{ConnOpts, RedisConn};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, Tuning};
pub use worker::Worker;

/// Why the notifier could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The bot token could not be loaded.
    #[error("loading the Slack bot token")]
    Token(#[from] airlock_shared::secret::SecretError),
    /// Redis could not be reached.
    #[error("connecting to Redis")]
    Redis(#[source] redis::RedisError),
    /// The database URL is unusable.
    #[error("setting up the Postgres pool")]
    Db(#[source] sqlx::Error),
    /// The HTTP client could not be built.
    #[error("building the Slack HTTP client")]
    Http(#[source] reqwest::Error),
    /// Metrics could not be registered.
    #[error("registering metrics")]
    Metrics(#[source] prometheus::Error),
    /// The health listener failed.
    #[error("serving /healthz")]
    Serve(#[source] std::io::Error),
    /// The worker could not start.
    #[error("running the worker")]
    Worker(#[from] worker::WorkerError),
}

/// A notifier, connected and ready to run.
pub struct Notifier {
    worker: Worker,
    reconciler: Option<reconcile::Reconciler>,
    refresher: usergroups::Refresher,
    state: probes::ProbeState,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// A lazy pool: the notifier starts (and reports unready) while Postgres is down.
fn database(config: &Config) -> Result<airlock_shared::db::Db, RunError> {
    airlock_shared::db::connect_lazy(
        config.database_url.expose_secret(),
        config.database_pooler,
        (config.concurrency as u32).clamp(2, 32),
        0,
        Duration::from_secs(5),
    )
    .map_err(RunError::Db)
}

impl Notifier {
    /// Connects to Redis, Postgres and (for the token) Secrets Manager.
    pub async fn build(config: &Config) -> Result<Self, RunError> {
        // A JSON secret may hold the token under one of these names.
        let token = airlock_shared::secret::read(
            &config.token,
            config.secrets_timeout,
            &["SLACK_BOT_TOKEN", "token"],
        )
        .await?;
        let t = &config.tuning;
        let (conn, read_conn) = connect_redis(config).await.map_err(RunError::Redis)?;
        let pool = database(config)?;
        let slack =
            web_api::SlackClient::new(config.slack_api_base_url.clone(), token, t.http_timeout)
                .map_err(RunError::Http)?;
        let keys = Keys::new(config.key_prefix.clone());
        let metrics = metrics::Metrics::new().map_err(RunError::Metrics)?;
        let stream = stream::JobStream::new(
            keys.clone(),
            config.consumer.clone(),
            conn.clone(),
            read_conn,
        );
        let reconciler = reconciler(config, &pool, &keys, &conn, &metrics);
        let groups = usergroups::UserGroups::new(slack.clone(), pool.clone(), t.clone());
        let refresher = usergroups::Refresher {
            groups: groups.clone(),
            redis: conn.clone(),
            keys: keys.clone(),
            owner: format!("{}/{}", config.consumer, uuid::Uuid::new_v4().simple()),
        };
        let worker = Worker::new(worker::Parts {
            pool: pool.clone(),
            stream,
            slack,
            pacer: pace::Pacer::new(t.channel_pace, keys.clone(), conn.clone()),
            // A claim outlives one Slack call, and lapses well before the job could be taken over.
            claims: claim::PostClaims::new(
                keys,
                conn.clone(),
                t.http_timeout + Duration::from_secs(2),
            ),
            metrics: metrics.clone(),
            default_channel: config.default_channel.clone(),
            tuning: t.clone(),
            concurrency: config.concurrency,
            usergroups: groups,
        });
        Ok(Self {
            worker,
            reconciler,
            refresher,
            state: probes::ProbeState {
                pool,
                redis: conn,
                metrics,
                accepting: Arc::new(AtomicBool::new(true)),
            },
        })
    }

    /// The metrics, for tests and benchmarks.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.state.metrics
    }

    /// Serves the probes on `listener` and runs the worker until `shutdown`, then drains.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), RunError> {
        let app = probes::routes(self.state.clone());
        let http_stop = CancellationToken::new();
        let stop = http_stop.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        let accepting = self.state.accepting.clone();
        let flag = shutdown.clone();
        tokio::spawn(async move {
            flag.cancelled().await;
            accepting.store(false, Ordering::Relaxed);
        });
        let reconciler = self
            .reconciler
            .map(|r| tokio::spawn(r.run(shutdown.clone())));
        let refresher = tokio::spawn(self.refresher.run(shutdown.clone()));
        let result = self.worker.run(shutdown).await;
        // It holds nothing worth finishing: a refresh cut short is the next one's to do.
        refresher.abort();
        if let Some(r) = reconciler {
            // On a worker error nothing cancels `shutdown`; the reconciler must not outlive us.
            if result.is_err() {
                r.abort();
            }
            let _ = r.await;
        }
        http_stop.cancel();
        let served = server.await;
        result?;
        match served {
            Ok(r) => r.map_err(RunError::Serve),
            Err(_) => Ok(()),
        }
    }
}

/// Two connections per Redis node: commands, and the blocking XREADGROUP on its own so that it
/// never holds up the others.
async fn connect_redis(config: &Config) -> Result<(RedisConn, RedisConn), redis::RedisError> {
    let (url, mode) = (config.redis_url.expose_secret(), &config.redis_mode);
    let opts = ConnOpts {
        connection_timeout: Some(Duration::from_secs(2)),
        response_timeout: Some(Duration::from_secs(2)),
        retries: Some(3),
    };
    let conn = RedisConn::connect(url, mode, opts).await?;
    let read_opts = ConnOpts {
        response_timeout: Some(config.tuning.read_block + Duration::from_secs(5)),
        ..opts
    };
    Ok((conn, RedisConn::connect(url, mode, read_opts).await?))
}

/// The reconciler, unless `RECONCILE_INTERVAL` turned it off.
fn reconciler(
    config: &Config,
    pool: &airlock_shared::db::Db,
    keys: &Keys,
    conn: &RedisConn,
    metrics: &metrics::Metrics,
) -> Option<reconcile::Reconciler> {
    let t = &config.tuning;
    let every = t.reconcile_every?;
    Some(reconcile::Reconciler::new(reconcile::ReconcilerParts {
        pool: pool.clone(),
        keys: keys.clone(),
        redis: conn.clone(),
        metrics: metrics.clone(),
        every,
        bounds: airlock_shared::ticket::Reconcile {
            grace: t.reconcile_grace,
            retry: t.reconcile_retry,
            limit: i64::from(t.reconcile_batch),
        },
        replica: config.consumer.clone(),
    }))
}

/// Builds the notifier from `config`, binds `LISTEN_ADDR`, and runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let notifier = Notifier::build(&config).await?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(RunError::Serve)?;
    tracing::info!(listen = %config.listen_addr, "serving /healthz, /readyz and /metrics");
    notifier.run(listener, shutdown).await
}
