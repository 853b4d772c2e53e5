//! `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::metrics::Metrics;

/// How long a readiness probe waits for each backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes look at.
#[derive(Clone)]
pub struct AppState {
    /// Postgres.
    pub pool: PgPool,
    /// Redis.
    pub redis: ConnectionManager,
    /// Metrics to expose.
    pub metrics: Metrics,
    /// False once the worker stops taking jobs.
    pub accepting: Arc<AtomicBool>,
}

/// The health and metrics routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let mut conn = s.redis.clone();
    let redis_ok = tokio::time::timeout(
        PROBE_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let db_ok = tokio::time::timeout(PROBE_TIMEOUT, airlock_shared::db::ping(&s.pool))
        .await
        .unwrap_or(false);
    let accepting = s.accepting.load(Ordering::Relaxed);
    let body = serde_json::json!({"redis": redis_ok, "postgres": db_ok, "accepting": accepting});
    let status = if redis_ok && db_ok && accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
