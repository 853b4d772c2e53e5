//! Airlock's Slack webhook: the one door through which approval decisions enter the system.
//!
//! A click is verified against Slack's signing secret, authorised, and written to Postgres with
//! one conditional update (the first decision wins). Only after that commit does the webhook
//! publish a hint for gateways and queue a job for the notifier. The same [`app`] serves a plain
//! HTTP listener and AWS Lambda (function URL or API Gateway events).

pub mod approval;
pub mod config;
pub mod interaction;
pub mod lambda;
pub mod metrics;
pub mod signature;
pub mod slack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use airlock_shared::db;
use airlock_shared::probes::Readiness;
use airlock_shared::secret::{self, SecretError};
use axum::Router;
use axum::routing::post;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::approval::Approvals;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::signature::Verifier;

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the signing secret failed")]
    Secret(#[from] SecretError),
    #[error("DATABASE_URL is not usable")]
    Database(#[source] sqlx::Error),
    #[error("REDIS_URL is not usable")]
    Redis(#[source] redis::RedisError),
    #[error("metrics registry")]
    Metrics(#[source] prometheus::Error),
    #[error("binding or serving {addr}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Lambda runtime stopped")]
    Lambda(#[source] lambda_http::Error),
}

/// Shared by every request; cheap to clone. Connections live here so that a warm Lambda
/// instance reuses them across invocations.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Checks Slack's signature.
    pub verifier: Verifier,
    /// Records decisions and tells others.
    pub approvals: Approvals,
    /// This app's metrics.
    pub metrics: Metrics,
    /// Bound on reading a request body.
    pub body_timeout: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Resolves the secret and prepares lazy connections: start-up does not wait for Postgres or
/// Redis, so a cold start stays short and a down dependency shows in `/readyz`, not as a crash.
pub async fn build(config: &Config) -> Result<AppState, StartError> {
    let secret = secret::read(&config.signing_secret, config.secrets_timeout, &[]).await?;
    // As a long-running server, keep a few connections open and warm: a click burst must not
    // wait for new TLS connections (batched decisions need about two). A Lambda instance serves
    // one click at a time and must start fast.
    let min_connections = if config.lambda {
        0
    } else {
        config.db_max_connections.min(WARM_CONNECTIONS)
    };
    let pool = db::connect_lazy(
        config.database_url.expose_secret(),
        config.db_max_connections,
        min_connections,
        config.db_timeout,
    )
    .map_err(StartError::Database)?;
    if !config.lambda {
        db::warm(&pool, min_connections);
    }
    let client =
        redis::Client::open(config.redis_url.expose_secret()).map_err(StartError::Redis)?;
    let redis = ConnectionManager::new_lazy_with_config(
        client,
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.redis_timeout))
            .set_response_timeout(Some(config.redis_timeout))
            .set_number_of_retries(1),
    )
    .map_err(StartError::Redis)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    Ok(AppState(Arc::new(Inner {
        verifier: Verifier::new(secret),
        approvals: Approvals {
            batch: approval::decision_batcher(pool.clone(), 256),
            pool,
            redis,
            keys: config.keys.clone(),
            approvers: config.approvers.clone(),
            team_id: config.team_id.clone(),
            api_app_id: config.api_app_id.clone(),
            db_timeout: config.db_timeout,
            redis_timeout: config.redis_timeout,
            metrics: metrics.clone(),
        },
        metrics,
        body_timeout: config.body_timeout,
    })))
}

/// Connections a long-running webhook server keeps open.
const WARM_CONNECTIONS: u32 = 2;

/// The routes, for both the HTTP server and Lambda.
pub fn app(state: AppState) -> Router {
    let probes = airlock_shared::probes::routes(state.metrics.registry().clone(), {
        let state = state.clone();
        move || readiness(state.clone())
    });
    Router::new()
        .route("/slack/actions", post(slack::actions))
        .with_state(state)
        .merge(probes)
        // Each request gets an `x-request-id` (the caller's, if sent), answers with it, and runs in
        // a span that carries it, so a refused request logs with its context.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
}

/// The span of one request, with its id.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", method = %req.method(), path = req.uri().path(), request_id = id)
}

/// Ready when Postgres answers: without it no decision can be recorded. Redis is only a hint.
async fn readiness(app: AppState) -> Readiness {
    let a = &app.approvals;
    let postgres = tokio::time::timeout(a.db_timeout, db::ping(&a.pool))
        .await
        .unwrap_or(false);
    Readiness {
        ready: postgres,
        detail: serde_json::json!({ "postgres": postgres }),
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Runs the webhook in the mode the environment asks for, until SIGTERM (or Lambda stops us).
pub async fn run(config: Config) -> Result<(), StartError> {
    let state = build(&config).await?;
    if config.lambda {
        tracing::info!("running under the Lambda runtime");
        return lambda_http::run(lambda::service(state))
            .await
            .map_err(StartError::Lambda);
    }
    let router = app(state);
    let addr = config.listen_addr.to_string();
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Serve {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, "listening");
    let shutdown = airlock_shared::shutdown::on_signal();
    serve(listener, router, async move { shutdown.cancelled().await })
        .await
        .map_err(|source| StartError::Serve { addr, source })
}
