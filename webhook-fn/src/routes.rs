//! The webhook's routes, for both the HTTP server and Lambda.

use airlock_shared::db;
use airlock_shared::probes::Readiness;
use axum::Router;
use axum::routing::post;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::actions;
use crate::state::AppState;

/// The routes, for both the HTTP server and Lambda.
pub fn app(state: AppState) -> Router {
    let probes = airlock_shared::probes::routes(state.metrics.registry().clone(), {
        let state = state.clone();
        move || readiness(state.clone())
    });
    Router::new()
        .route("/slack/actions", post(actions::actions))
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
