//! What the notifier's `/readyz` looks at, on the shared probe routes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::db::Db;
use airlock_shared::probes::Readiness;
use axum::Router;

use crate::metrics::Metrics;

/// How long a readiness probe waits for each backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the probes look at.
#[derive(Clone)]
pub struct ProbeState {
    /// Postgres.
    pub pool: Db,
    /// Redis.
    pub redis: RedisConn,
    /// Metrics to expose.
    pub metrics: Metrics,
    /// False once the worker stops taking jobs.
    pub accepting: Arc<AtomicBool>,
}

/// `/healthz`, `/readyz` (Redis, Postgres, still taking jobs) and `/metrics`.
pub fn routes(state: ProbeState) -> Router {
    let registry = state.metrics.registry().clone();
    airlock_shared::probes::routes(registry, move || readiness(state.clone()))
}

async fn readiness(s: ProbeState) -> Readiness {
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
    Readiness {
        ready: redis_ok && db_ok && accepting,
        detail: serde_json::json!({"redis": redis_ok, "postgres": db_ok, "accepting": accepting}),
    }
}
