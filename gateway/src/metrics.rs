//! Prometheus metrics, one registry per gateway instance.

use airlock_shared::probes::MetricsRegistry;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: MetricsRegistry,
    /// Tool calls by outcome.
    pub tool_calls: IntCounterVec,
    /// Calls currently held for approval.
    pub held_calls: IntGauge,
    /// From ticket open to decision.
    pub approval_wait: Histogram,
    /// Audit rows dropped because the queue was full or Postgres refused them.
    pub audit_dropped: IntCounter,
    /// Decisions found by the fallback poll before any signal arrived.
    pub signal_lost: IntCounter,
    /// Session locks lost while held.
    pub lock_lost: IntCounter,
    /// Pub/sub reconnects.
    pub pubsub_reconnects: IntCounter,
    /// Calls on which a rule's conditions could not be evaluated, by rule.
    pub policy_unevaluable: IntCounterVec,
    /// Reloads of the policy and agent keys, by outcome (applied, refused).
    pub policy_reloads: IntCounterVec,
    /// 1 for the revision of the policy in force.
    policy_info: IntGaugeVec,
    /// Held calls served as MCP tasks.
    pub tasks: TaskMetrics,
    /// Access tokens and their issuers' keys.
    pub oauth: OAuthMetrics,
}

/// The metrics of OAuth access tokens.
#[derive(Clone)]
pub struct OAuthMetrics {
    /// Access tokens checked, by outcome: `accepted`, or why it was refused.
    pub tokens: IntCounterVec,
    /// JWKS fetches by issuer and outcome (`ok`, `failed`).
    pub jwks_fetches: IntCounterVec,
}

impl OAuthMetrics {
    fn new(registry: &MetricsRegistry) -> Result<Self, prometheus::Error> {
        let tokens = IntCounterVec::new(
            Opts::new(
                "airlock_oauth_tokens_total",
                "Access tokens checked, by outcome",
            ),
            &["outcome"],
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "airlock_oauth_jwks_fetches_total",
                "Fetches of an issuer's keys, by issuer and outcome",
            ),
            &["issuer", "outcome"],
        )?;
        Ok(Self {
            tokens: registry.register(tokens),
            jwks_fetches: registry.register(jwks_fetches),
        })
    }
}

/// The metrics of held calls served as MCP tasks.
#[derive(Clone)]
pub struct TaskMetrics {
    /// Tasks created.
    pub created: IntCounter,
    /// Ended tasks by status: completed, failed, cancelled (counted once across replicas).
    pub ended: IntCounterVec,
    /// From task creation to the ticket's decision.
    pub to_decision: Histogram,
}

impl TaskMetrics {
    fn new(registry: &MetricsRegistry) -> Result<Self, prometheus::Error> {
        let created = IntCounter::new("airlock_tasks_created_total", "Held calls served as tasks")?;
        let ended = IntCounterVec::new(
            Opts::new("airlock_tasks_ended_total", "Tasks ended, by status"),
            &["status"],
        )?;
        let to_decision = Histogram::with_opts(
            HistogramOpts::new(
                "airlock_task_decision_seconds",
                "Time from task creation to the ticket's decision",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )?;
        Ok(Self {
            created: registry.register(created),
            ended: registry.register(ended),
            to_decision: registry.register(to_decision),
        })
    }
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = MetricsRegistry::new();
        let tool_calls = IntCounterVec::new(
            Opts::new("airlock_tool_calls_total", "Tool calls by outcome"),
            &["outcome"],
        )?;
        let policy_unevaluable = IntCounterVec::new(
            Opts::new(
                "airlock_policy_unevaluable_total",
                "Calls on which a rule's conditions could not be evaluated (approve/deny matched, allow skipped)",
            ),
            &["rule"],
        )?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "airlock_policy_reloads_total",
                "Reloads of the policy and agent keys by outcome",
            ),
            &["outcome"],
        )?;
        let policy_info = IntGaugeVec::new(
            Opts::new(
                "airlock_policy_info",
                "1 for the revision of the policy in force",
            ),
            &["revision"],
        )?;
        let held_calls = IntGauge::new("airlock_held_calls", "Calls held for approval now")?;
        let approval_wait = Histogram::with_opts(
            HistogramOpts::new(
                "airlock_approval_wait_seconds",
                "Time from ticket open to decision",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )?;
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let audit_dropped = counter("airlock_audit_dropped_total", "Audit rows dropped")?;
        let signal_lost = counter(
            "airlock_signal_lost_total",
            "Decisions found by the Postgres poll before any pub/sub signal",
        )?;
        let lock_lost = counter(
            "airlock_session_lock_lost_total",
            "Session locks lost while held",
        )?;
        let pubsub_reconnects = counter(
            "airlock_pubsub_reconnects_total",
            "Pub/sub connection re-established",
        )?;
        let tool_calls = registry.register(tool_calls);
        let held_calls = registry.register(held_calls);
        let approval_wait = registry.register(approval_wait);
        let audit_dropped = registry.register(audit_dropped);
        let signal_lost = registry.register(signal_lost);
        let lock_lost = registry.register(lock_lost);
        let pubsub_reconnects = registry.register(pubsub_reconnects);
        let policy_unevaluable = registry.register(policy_unevaluable);
        let policy_reloads = registry.register(policy_reloads);
        let policy_info = registry.register(policy_info);
        let tasks = TaskMetrics::new(&registry)?;
        let oauth = OAuthMetrics::new(&registry)?;
        Ok(Self {
            registry,
            tool_calls,
            held_calls,
            approval_wait,
            audit_dropped,
            signal_lost,
            lock_lost,
            pubsub_reconnects,
            policy_unevaluable,
            policy_reloads,
            policy_info,
            tasks,
            oauth,
        })
    }

    /// Marks `revision` as the policy in force (and no other).
    pub fn policy_revision(&self, revision: &str) {
        self.policy_info.reset();
        self.policy_info.with_label_values(&[revision]).set(1);
    }

    /// The registry `/metrics` renders.
    pub fn registry(&self) -> &MetricsRegistry {
        &self.registry
    }
}
