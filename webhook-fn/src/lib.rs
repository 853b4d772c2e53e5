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
pub mod secrets;
pub mod signature;
pub mod slack;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use airlock_shared::db;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::TcpListener;

use crate::approval::Approvals;
use crate::config::{Config, SecretSource};
use crate::metrics::Metrics;
use crate::signature::Verifier;

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the signing secret failed")]
    Secret(#[from] secrets::SecretError),
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
    let secret = match &config.signing_secret {
        SecretSource::Plain(s) => s.clone(),
        SecretSource::SecretsManager { arn } => secrets::fetch(arn, config.secrets_timeout).await?,
    };
    // As a long-running server, keep a few connections open and warm: a click burst must not
    // wait for new TLS connections (batched decisions need about two). A Lambda instance serves
    // one click at a time and must start fast.
    let min_connections = if config.lambda {
        0
    } else {
        config.db_max_connections.min(WARM_CONNECTIONS)
    };
    let pool = db::connect_lazy(
        &config.database_url,
        config.db_max_connections,
        min_connections,
        config.db_timeout,
    )
    .map_err(StartError::Database)?;
    if !config.lambda {
        db::warm(&pool, min_connections);
    }
    let client = redis::Client::open(config.redis_url.as_str()).map_err(StartError::Redis)?;
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
    Router::new()
        .route("/slack/actions", post(slack::actions))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when Postgres answers: without it no decision can be recorded. Redis is only a hint.
async fn readyz(State(app): State<AppState>) -> Response {
    let a = &app.approvals;
    match tokio::time::timeout(a.db_timeout, db::ping(&a.pool)).await {
        Ok(true) => (StatusCode::OK, "ready").into_response(),
        Ok(false) | Err(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "postgres unavailable").into_response()
        }
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    match app.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `router` on `listener` within `edge`'s limits until `shutdown` completes, then
/// drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    edge: &airlock_shared::edge::Edge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A declared body over the click handler's own limit is refused before it is read.
    let edge = airlock_shared::edge::Edge {
        max_body_bytes: slack::MAX_BODY_BYTES,
        ..edge.clone()
    };
    airlock_shared::edge::Server::new(edge)
        .serve(listener, router, shutdown)
        .await;
    Ok(())
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
    serve(listener, router, &config.edge, shutdown_signal())
        .await
        .map_err(|source| StartError::Serve { addr, source })
}

/// SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining open requests");
}
