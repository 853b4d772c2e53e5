//! Building a gateway from its configuration, serving it, and shutting it down gracefully.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::Keys;
use airlock_shared::redis_conn::{ConnOpts, RedisConn, RedisMode, cluster_builder};
use axum::Router;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::approval::hold::sweep_loop;
use crate::approval::hub::SubscribeTo;
use crate::approval::{HeldCalls, Holds, Hub};
use crate::audit::AuditSink;
use crate::auth;
use crate::bridge::Bridge;
use crate::call::Pipeline;
use crate::config::Config;
use crate::discovery::{Cache, Discovery};
use crate::input_schema::InputSchemas;
use crate::lock::{LockWakeups, Locks};
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::policy;
use crate::request_state::RequestStates;
use crate::rules::{Rules, RulesError};
use crate::session::Sessions;
use crate::state::{AppState, Inner};
use crate::task::sweep::sweep_loop as task_sweep_loop;
use crate::task::{TaskSettings, Tasks};
use crate::upstream::Upstream;
use crate::upstream_session::UpstreamSessions;
use crate::{endpoint, health};

/// The header that carries each request's id; set when the client sent none, and echoed.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The hub and the ticket sweeper, started; the holds that use them, and the lock waiters the
/// hub's subscription wakes.
fn start_holds(
    config: &Config,
    pool: &airlock_shared::db::Db,
    redis_client: SubscribeTo,
    redis: &RedisConn,
    keys: &Keys,
    metrics: &Metrics,
    background: &CancellationToken,
) -> (Holds, LockWakeups) {
    let wakeups = LockWakeups::new(keys);
    let hub = Hub::start(
        pool.clone(),
        redis_client,
        keys,
        config.decision_poll_interval,
        metrics.clone(),
        wakeups.clone(),
        background.clone(),
    );
    tokio::spawn(sweep_loop(
        pool.clone(),
        redis.clone(),
        keys.clone(),
        background.clone(),
    ));
    let holds = Holds {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        hub,
        metrics: metrics.clone(),
        interrupt: CancellationToken::new(),
    };
    (holds, wakeups)
}

/// Held calls served as tasks, and the task sweeper, started.
fn start_tasks(
    config: &Config,
    pool: &airlock_shared::db::Db,
    holds: &Holds,
    link: &UpstreamSessions,
    audit: &AuditSink,
    metrics: &Metrics,
    background: &CancellationToken,
) -> Arc<Tasks> {
    let t = config.tasks;
    let (watch, pending) = crate::task::watch::channel();
    let tasks = Arc::new(Tasks {
        pool: pool.clone(),
        holds: holds.clone(),
        link: link.clone(),
        audit: audit.clone(),
        metrics: metrics.clone(),
        settings: TaskSettings {
            poll_interval: t.poll_interval,
            max_result_bytes: t.max_result_bytes,
            retention: t.retention,
            sweep_interval: t.sweep_interval,
            // The creator's hub sees a decision within a poll interval or two; after that,
            // an approved task nobody claimed has lost its creator.
            takeover_after: (config.decision_poll_interval * 3).max(Duration::from_secs(2)),
            lost_after: config.upstream_timeout + Duration::from_secs(60),
        },
        keepalive: config.keepalive_interval,
        watch,
    });
    tokio::spawn(crate::task::watch::watch_loop(
        tasks.clone(),
        pending,
        background.clone(),
    ));
    tokio::spawn(task_sweep_loop(tasks.clone(), background.clone()));
    tasks
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] airlock_shared::config::ConfigError),
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    #[error(transparent)]
    AgentKeys(#[from] auth::KeysError),
    #[error("cannot connect to PostgreSQL")]
    Postgres(#[source] sqlx::Error),
    #[error("cannot apply migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to Redis")]
    Redis(#[from] redis::RedisError),
    #[error("cannot build the upstream client")]
    Upstream(#[from] reqwest::Error),
    #[error(transparent)]
    RequestStateKey(#[from] crate::request_state::KeyError),
    #[error("cannot build the HTTP client for the OAuth issuers")]
    OAuthClient(#[source] reqwest::Error),
    #[error("cannot define the metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl From<RulesError> for StartError {
    fn from(e: RulesError) -> Self {
        match e {
            RulesError::Policy(e) => Self::Policy(e),
            RulesError::AgentKeys(e) => Self::AgentKeys(e),
        }
    }
}

/// A built gateway, ready to serve.
pub struct Gateway {
    pub state: AppState,
    /// Stops background tasks (hub, sweeper).
    pub background: CancellationToken,
    /// Cancelled when the shutdown grace ends: held calls answer "approval interrupted".
    pub interrupt: CancellationToken,
    audit_writer: JoinHandle<()>,
    shutdown_grace: Duration,
    edge: airlock_shared::edge::Edge,
}

/// The gateway's routes, each request in a span named by its request id.
pub fn app(state: AppState) -> Router {
    let mcp = Router::new()
        .route(
            "/mcp",
            get(endpoint::get)
                .post(endpoint::post)
                .delete(endpoint::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            endpoint::authenticate,
        ));
    let metadata = state.oauth.as_ref().map(OAuth::routes).unwrap_or_default();
    traced(
        Router::new()
            .merge(mcp)
            .with_state(state.clone())
            .merge(metadata)
            .merge(health::routes(state)),
    )
}

/// Gives every request an id (the client's `x-request-id`, else a new one), echoes it, and
/// runs the request in a span that carries it, so even a refused request logs with it.
fn traced(router: Router) -> Router {
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
    });
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Connects to everything and loads policy and keys.
pub async fn build(config: &Config) -> Result<Gateway, StartError> {
    let metrics = Metrics::new()?;
    let rules = Rules::load(
        &config.policy_file,
        &config.agent_keys_file,
        metrics.clone(),
    )?;
    let (pool, redis_client, redis) = connect_stores(config).await?;
    let keys = Keys::new(config.redis_key_prefix.clone());
    let background = CancellationToken::new();
    rules.watch(Some(config.policy_reload_interval), background.clone());
    let interrupt = CancellationToken::new();
    let (mut holds, wakeups) = start_holds(
        config,
        &pool,
        redis_client,
        &redis,
        &keys,
        &metrics,
        &background,
    );
    holds.interrupt = interrupt.clone();
    let (audit, audit_writer) = AuditSink::start(pool.clone(), 10_000, metrics.clone());
    let schemas = Arc::new(InputSchemas::default());
    let link = upstream_link(config, &pool, &schemas)?;
    let locks = Locks::new(
        redis.clone(),
        keys,
        config.session_lock_ttl,
        config.lock_acquire_timeout,
        wakeups,
        metrics.clone(),
    );
    let request_states =
        RequestStates::new(config.request_state_key.as_ref(), config.request_state_ttl)?;
    let tasks = start_tasks(config, &pool, &holds, &link, &audit, &metrics, &background);
    let pipeline = Arc::new(Pipeline {
        rules: rules.clone(),
        schemas: schemas.clone(),
        locks,
        holds,
        held: HeldCalls::default(),
        link: link.clone(),
        audit,
        metrics: metrics.clone(),
        approval_timeout: config.approval_timeout,
        keepalive: config.keepalive_interval,
        request_states: Arc::new(request_states),
        tasks,
    });
    let oauth = start_oauth(config, &metrics, &background)?;
    let state = AppState(Arc::new(Inner {
        rules: rules.clone(),
        pipeline,
        discovery: Discovery {
            cache: Cache::default(),
            rules: rules.clone(),
            link,
            schemas,
        },
        metrics,
        pool,
        redis,
        max_body_bytes: config.max_body_bytes,
        oauth,
    }));
    Ok(Gateway {
        state,
        background,
        interrupt,
        audit_writer,
        shutdown_grace: config.shutdown_grace,
        edge: config.edge.clone(),
    })
}

/// The OAuth resource server when configured, its issuers' keys loading in the background.
fn start_oauth(
    config: &Config,
    metrics: &Metrics,
    background: &CancellationToken,
) -> Result<Option<Arc<OAuth>>, StartError> {
    let Some(c) = &config.oauth else {
        return Ok(None);
    };
    let oauth = OAuth::new(c, &metrics.oauth).map_err(StartError::OAuthClient)?;
    let oauth = Arc::new(oauth);
    oauth.start(background.clone());
    tracing::info!(issuers = ?c.issuers, audience = %c.audience, "OAuth access tokens accepted");
    Ok(Some(oauth))
}

/// The upstream client, and the sessions and bridges in front of it.
fn upstream_link(
    config: &Config,
    pool: &airlock_shared::db::Db,
    schemas: &Arc<InputSchemas>,
) -> Result<UpstreamSessions, StartError> {
    let upstream = Upstream::new(
        config.upstream_mcp_url.clone(),
        config.upstream_timeout,
        config.upstream_concurrency,
        config.upstream_idle_timeout,
    )?;
    let bridge = Bridge::new(
        config.upstream_era,
        upstream.clone(),
        schemas.clone(),
        pool.clone(),
    );
    Ok(UpstreamSessions::new(
        upstream,
        Sessions::new(pool.clone()),
        pool.clone(),
        Arc::new(bridge),
    ))
}

/// Postgres (migrated when asked), where the hub subscribes, and the one Redis connection for
/// commands. Per Redis node the gateway keeps two connections whatever its load: this one
/// (multiplexed) and the hub's subscription.
async fn connect_stores(
    config: &Config,
) -> Result<(airlock_shared::db::Db, SubscribeTo, RedisConn), StartError> {
    let pool = airlock_shared::db::connect(
        config.database_url.expose_secret(),
        config.database_pooler,
        16,
        Duration::from_secs(5),
    )
    .await
    .map_err(StartError::Postgres)?;
    if config.migrate_on_start {
        airlock_shared::db::migrate(&pool).await?;
    }
    let url = config.redis_url.expose_secret();
    let mode = &config.redis_mode;
    let subscribe_to = match mode {
        RedisMode::Single => SubscribeTo::Single(redis::Client::open(url)?),
        RedisMode::Cluster { .. } => {
            SubscribeTo::Cluster(Box::new(cluster_builder(url, mode, ConnOpts::default())?))
        }
    };
    let redis = RedisConn::connect(url, mode, ConnOpts::default()).await?;
    Ok((pool, subscribe_to, redis))
}

impl Gateway {
    /// Serves until `shutdown` is cancelled; then stops accepting, lets held calls run for the
    /// grace period, interrupts the rest, and returns once every response is out.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let Gateway {
            state,
            background,
            interrupt,
            audit_writer,
            shutdown_grace,
            edge,
        } = self;
        let router = app(state.clone());
        let grace_timer = {
            let (shutdown, interrupt) = (shutdown.clone(), interrupt.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!(grace = ?shutdown_grace, "shutting down: no new connections; held calls may finish");
                tokio::time::sleep(shutdown_grace).await;
                interrupt.cancel();
            })
        };
        // The edge sets TCP_NODELAY and bounds slow clients; held calls are not idle.
        let server = airlock_shared::edge::Server::new(edge).serve(
            listener,
            router,
            shutdown.clone().cancelled_owned(),
        );
        let hard_stop = async {
            shutdown.cancelled().await;
            // Interrupted calls need a moment to write their answers.
            tokio::time::sleep(shutdown_grace + Duration::from_secs(5)).await;
        };
        tokio::select! {
            () = server => {},
            () = hard_stop => tracing::warn!("connections still open after the grace period; closing"),
        }
        interrupt.cancel();
        grace_timer.abort();
        background.cancel();
        drop(state);
        let _ = tokio::time::timeout(Duration::from_secs(5), audit_writer).await;
    }
}

/// Builds and serves the gateway until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    let gateway = build(&config).await?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen_addr,
            source,
        })?;
    tracing::info!(addr = %config.listen_addr, "gateway listening");
    gateway
        .serve(listener, airlock_shared::shutdown::on_signal())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn request_id(sent: Option<&str>) -> Option<String> {
        let app = traced(Router::new().route("/x", get(|| async { "x" })));
        let mut req = Request::builder().uri("/x");
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn a_request_id_is_echoed_or_made() {
        assert_eq!(request_id(Some("abc-1")).await.as_deref(), Some("abc-1"));
        let made = request_id(None).await.expect("an id is made");
        assert_eq!(made.len(), 36, "{made}");
    }
}
