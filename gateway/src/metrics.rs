//! Prometheus metrics, one registry per gateway instance.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
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
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let tool_calls = IntCounterVec::new(
            Opts::new("airlock_tool_calls_total", "Tool calls by outcome"),
            &["outcome"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let policy_unevaluable = IntCounterVec::new(
            Opts::new(
                "airlock_policy_unevaluable_total",
                "Calls on which a rule's conditions could not be evaluated (approve/deny matched, allow skipped)",
            ),
            &["rule"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let held_calls = IntGauge::new("airlock_held_calls", "Calls held for approval now")
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let approval_wait = Histogram::with_opts(
            HistogramOpts::new(
                "airlock_approval_wait_seconds",
                "Time from ticket open to decision",
            )
            .buckets(vec![
                1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let counter = |name: &str, help: &str| {
            IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("static metric: {e}"))
        };
        let audit_dropped = counter("airlock_audit_dropped_total", "Audit rows dropped");
        let signal_lost = counter(
            "airlock_signal_lost_total",
            "Decisions found by the Postgres poll before any pub/sub signal",
        );
        let lock_lost = counter(
            "airlock_session_lock_lost_total",
            "Session locks lost while held",
        );
        let pubsub_reconnects = counter(
            "airlock_pubsub_reconnects_total",
            "Pub/sub connection re-established",
        );
        for c in [
            Box::new(tool_calls.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(held_calls.clone()),
            Box::new(approval_wait.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(signal_lost.clone()),
            Box::new(lock_lost.clone()),
            Box::new(pubsub_reconnects.clone()),
            Box::new(policy_unevaluable.clone()),
        ] {
            let _ = registry.register(c);
        }
        Self {
            registry,
            tool_calls,
            held_calls,
            approval_wait,
            audit_dropped,
            signal_lost,
            lock_lost,
            pubsub_reconnects,
            policy_unevaluable,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
