//! Liveness, readiness and metrics endpoints.

use airlock_shared::probes::{self, Readiness};
use axum::Router;
use serde_json::json;

use crate::state::AppState;

/// `/healthz`, `/readyz` (Postgres and Redis answer) and `/metrics`.
pub fn routes(app: AppState) -> Router {
    let registry = app.metrics.registry().clone();
    probes::routes(registry, move || readiness(app.clone()))
}

async fn readiness(app: AppState) -> Readiness {
    let pg = airlock_shared::db::ping(&app.pool).await;
    let mut conn = app.redis.clone();
    let redis = redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .is_ok();
    Readiness {
        ready: pg && redis,
        detail: json!({ "postgres": pg, "redis": redis, "policy": true }),
    }
}
