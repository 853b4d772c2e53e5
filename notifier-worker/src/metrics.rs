//! Prometheus metrics, in a registry of this app's own.

use airlock_shared::probes::MetricsRegistry;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// The notifier's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// Jobs finished, by kind and outcome (done, dead_letter, given_back).
    pub jobs: IntCounterVec,
    /// Slack calls, by method and result.
    pub slack_calls: IntCounterVec,
    /// Slack call durations, by method.
    pub slack_seconds: HistogramVec,
    /// From a job's stream entry to its first Slack call.
    pub queue_latency: Histogram,
    /// Jobs being worked on.
    pub in_flight: IntGauge,
    /// Retries, by reason.
    pub retries: IntCounterVec,
    /// Jobs taken over from other consumers.
    pub claimed: IntCounter,
    /// Duplicate messages found after posting and deleted.
    pub duplicates_removed: IntCounter,
    /// Errors of Redis or Postgres in the worker's own loops.
    pub backend_errors: IntCounterVec,
    /// Jobs the reconciler queued again from Postgres, by kind.
    pub requeued: IntCounterVec,
    /// Reconciler passes this replica ran (it held the lease), by result.
    pub reconcile_passes: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Fresh metrics in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = MetricsRegistry::new();
        let jobs = IntCounterVec::new(
            Opts::new("airlock_notifier_jobs_total", "Jobs finished"),
            &["kind", "outcome"],
        )?;
        let slack_calls = IntCounterVec::new(
            Opts::new("airlock_notifier_slack_calls_total", "Slack Web API calls"),
            &["method", "result"],
        )?;
        let slack_seconds = HistogramVec::new(
            HistogramOpts::new("airlock_notifier_slack_call_seconds", "Slack call duration")
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            &["method"],
        )?;
        let queue_latency = Histogram::with_opts(
            HistogramOpts::new(
                "airlock_notifier_queue_latency_seconds",
                "From stream entry to the first Slack call",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let in_flight = IntGauge::new("airlock_notifier_jobs_in_flight", "Jobs being worked on")?;
        let retries = IntCounterVec::new(
            Opts::new("airlock_notifier_retries_total", "Job retries"),
            &["reason"],
        )?;
        let claimed = IntCounter::new(
            "airlock_notifier_claimed_total",
            "Jobs taken over from stalled consumers",
        )?;
        let duplicates_removed = IntCounter::new(
            "airlock_notifier_duplicate_posts_removed_total",
            "Duplicate approval messages deleted after a lost race",
        )?;
        let backend_errors = IntCounterVec::new(
            Opts::new(
                "airlock_notifier_backend_errors_total",
                "Redis or Postgres errors",
            ),
            &["backend"],
        )?;
        let requeued = IntCounterVec::new(
            Opts::new(
                "airlock_notifier_reconcile_requeued_total",
                "Jobs re-queued by the reconciler",
            ),
            &["kind"],
        )?;
        let reconcile_passes = IntCounterVec::new(
            Opts::new(
                "airlock_notifier_reconcile_passes_total",
                "Reconciler passes run by this replica",
            ),
            &["result"],
        )?;
        Ok(Self {
            requeued: registry.register(requeued),
            reconcile_passes: registry.register(reconcile_passes),
            jobs: registry.register(jobs),
            slack_calls: registry.register(slack_calls),
            slack_seconds: registry.register(slack_seconds),
            queue_latency: registry.register(queue_latency),
            in_flight: registry.register(in_flight),
            retries: registry.register(retries),
            claimed: registry.register(claimed),
            duplicates_removed: registry.register(duplicates_removed),
            backend_errors: registry.register(backend_errors),
            registry,
        })
    }

    /// The registry, for `/metrics`.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        self.registry.render()
    }
}
