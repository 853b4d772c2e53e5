//! Prometheus metrics, on a registry of this app's own.

use airlock_shared::probes::MetricsRegistry;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

/// The webhook's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// Requests to `/slack/actions` by outcome.
    pub requests: IntCounterVec,
    /// Handler latency of `/slack/actions` by outcome.
    pub latency: HistogramVec,
    /// Redis steps that failed after a decision was committed (`publish`, `enqueue`).
    pub redis_failures: IntCounterVec,
}

impl Metrics {
    /// Registers every metric on a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = MetricsRegistry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "airlock_webhook_requests_total",
                "Slack action requests by outcome",
            ),
            &["outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "airlock_webhook_request_seconds",
                "Slack action handling time by outcome",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["outcome"],
        )?;
        let redis_failures = IntCounterVec::new(
            Opts::new(
                "airlock_webhook_redis_failures_total",
                "Redis steps that failed after the decision was committed",
            ),
            &["step"],
        )?;
        Ok(Self {
            requests: registry.register(requests),
            latency: registry.register(latency),
            redis_failures: registry.register(redis_failures),
            registry,
        })
    }

    /// The registry, for `/metrics`.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}
