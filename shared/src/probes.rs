//! The probe routes every service serves: `/healthz`, `/readyz` and `/metrics`, and a metrics
//! registry that logs registration and encoding errors instead of panicking.

use std::future::Future;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// The answer of a readiness check: ready or not, and a JSON body saying what was looked at.
#[derive(Debug, Clone)]
pub struct Readiness {
    /// Whether to answer 200 (else 503).
    pub ready: bool,
    /// What each dependency said.
    pub detail: serde_json::Value,
}

/// A registry of one service's metrics.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

impl MetricsRegistry {
    /// An empty registry of this service's own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `metric` and hands it back; a failed registration (a duplicate name) is logged
    /// and the metric still counts, it is only missing from `/metrics`.
    pub fn register<M: Collector + Clone + 'static>(&self, metric: M) -> M {
        if let Err(e) = self.registry.register(Box::new(metric.clone())) {
            tracing::error!(error = %e, "registering a metric failed");
        }
        metric
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// `/healthz` (the process answers), `/readyz` (what `check` says) and `/metrics`.
pub fn routes<F, Fut>(metrics: MetricsRegistry, check: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Readiness> + Send + 'static,
{
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let check = check.clone();
                async move { readyz(check().await) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics_text(&metrics) }
            }),
        )
}

fn readyz(r: Readiness) -> Response {
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(r.detail)).into_response()
}

fn metrics_text(metrics: &MetricsRegistry) -> Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_metric_is_logged_not_a_panic() {
        let r = MetricsRegistry::new();
        let a = r.register(prometheus::IntCounter::new("airlock_test_total", "t").unwrap());
        let b = r.register(prometheus::IntCounter::new("airlock_test_total", "t").unwrap());
        a.inc();
        b.inc();
        let text = r.render().unwrap();
        assert!(text.contains("airlock_test_total 1"), "{text}");
    }
}
