//! Airlock's MCP gateway: a policy-gated proxy that holds approval-required tool calls until a
//! person decides in Slack.

pub mod approval;
pub mod audit;
pub mod auth;
mod batch;
pub mod config;
pub mod discovery;
pub mod error;
pub mod lock;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod session;
pub mod sse;
pub mod transport;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_shared::{Keys, SessionId, ticket};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::approval::{Approvals, Hub};
use crate::audit::AuditSink;
use crate::auth::AgentKeys;
use crate::config::Config;
use crate::lock::Locks;
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::session::Sessions;
use crate::upstream::Upstream;

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
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Held calls by (session, JSON-RPC id), so that `notifications/cancelled` can reach them.
type Inflight = Mutex<HashMap<(SessionId, String), CancellationToken>>;

/// Shared state of one gateway instance.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    pub policy: Arc<Policy>,
    pub agents: Arc<AgentKeys>,
    pub sessions: Sessions,
    pub upstream: Upstream,
    pub locks: Locks,
    pub approvals: Approvals,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub pool: PgPool,
    pub redis: ConnectionManager,
    pub max_body_bytes: usize,
    pub approval_timeout: Duration,
    /// How often idle SSE streams and held calls get a keepalive.
    pub keepalive: Duration,
    /// The last good discovery answers.
    pub discovery: discovery::Cache,
    /// Re-initialising upstream sessions one at a time keeps two requests from racing to it.
    reinit: tokio::sync::Mutex<()>,
    inflight: Inflight,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Removes a held call from the in-flight table when it ends.
pub struct HeldEntry<'a> {
    table: &'a Inflight,
    key: (SessionId, String),
}

impl Drop for HeldEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            t.remove(&self.key);
        }
    }
}

impl AppState {
    fn track_held(&self, sid: &SessionId, id: &Value, cancel: CancellationToken) -> HeldEntry<'_> {
        let key = (sid.clone(), id.to_string());
        if let Ok(mut t) = self.inflight.lock() {
            t.insert(key.clone(), cancel);
        }
        HeldEntry {
            table: &self.inflight,
            key,
        }
    }

    fn cancel_held(&self, sid: &SessionId, id: &Value) {
        let token = self
            .inflight
            .lock()
            .ok()
            .and_then(|t| t.get(&(sid.clone(), id.to_string())).cloned());
        if let Some(t) = token {
            tracing::info!(session = %sid, request = %id, "client cancelled a held call");
            t.cancel();
        }
    }
}

/// The gateway's routes.
pub fn app(state: AppState) -> Router {
    let mcp = Router::new()
        .route(
            "/mcp",
            get(proxy::get).post(proxy::post).delete(proxy::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            proxy::authenticate,
        ));
    Router::new()
        .merge(mcp)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(app): State<AppState>) -> Response {
    let pg = airlock_shared::db::ping(&app.pool).await;
    let mut conn = app.redis.clone();
    let redis = redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok();
    let body = json!({ "postgres": pg, "redis": redis, "policy": true });
    let status = if pg && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
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

/// Connects to everything and loads policy and keys.
pub async fn build(config: &Config) -> Result<Gateway, StartError> {
    let policy = Arc::new(Policy::load(&config.policy_file)?);
    let agents = Arc::new(AgentKeys::load(&config.agent_keys_file)?);
    let pool = airlock_shared::db::connect(&config.database_url, 16, Duration::from_secs(5))
        .await
        .map_err(StartError::Postgres)?;
    if config.migrate_on_start {
        airlock_shared::db::migrate(&pool).await?;
    }
    let redis_client = redis::Client::open(config.redis_url.as_str())?;
    let redis = ConnectionManager::new(redis_client.clone()).await?;
    let keys = Keys::new(config.redis_key_prefix.clone());
    let metrics = Metrics::new();
    let background = CancellationToken::new();
    let interrupt = CancellationToken::new();
    let hub = Hub::start(
        pool.clone(),
        redis_client,
        &keys,
        config.decision_poll_interval,
        metrics.clone(),
        background.clone(),
    );
    let approvals = Approvals {
        pool: pool.clone(),
        redis: redis.clone(),
        keys: keys.clone(),
        hub,
        metrics: metrics.clone(),
        interrupt: interrupt.clone(),
    };
    tokio::spawn(sweep_loop(approvals.clone(), background.clone()));
    let (audit, audit_writer) = AuditSink::start(pool.clone(), 10_000, metrics.clone());
    let state = AppState(Arc::new(Inner {
        policy,
        agents,
        sessions: Sessions::new(pool.clone()),
        upstream: Upstream::new(
            config.upstream_mcp_url.clone(),
            config.upstream_timeout,
            config.upstream_concurrency,
        )?,
        locks: Locks::new(
            redis.clone(),
            keys,
            config.session_lock_ttl,
            config.lock_acquire_timeout,
            metrics.clone(),
        ),
        approvals,
        audit,
        metrics,
        pool,
        redis,
        max_body_bytes: config.max_body_bytes,
        approval_timeout: config.approval_timeout,
        keepalive: config.keepalive_interval,
        discovery: discovery::Cache::default(),
        reinit: tokio::sync::Mutex::new(()),
        inflight: Mutex::default(),
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

/// Expires tickets whose waiter vanished (a crashed pod), so their messages are updated.
async fn sweep_loop(a: Approvals, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match ticket::sweep_expired(&a.pool, Duration::from_secs(5)).await {
            Ok(expired) => {
                for t in expired {
                    tracing::info!(ticket = %t.id, "swept an expired ticket nobody waited on");
                    let mut conn = a.redis.clone();
                    let job = airlock_shared::NotifyJob::TicketClosed { ticket_id: t.id };
                    if let Err(e) = airlock_shared::job::enqueue(&mut conn, &a.keys, &job).await {
                        tracing::error!(ticket = %t.id, error = %e, "could not enqueue message update");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "ticket sweep failed"),
        }
    }
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
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            shutdown.cancel();
        }
    });
    gateway.serve(listener, shutdown).await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
