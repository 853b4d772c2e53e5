//! Tracing set-up shared by every binary: logs always, OpenTelemetry traces when configured.

use std::sync::OnceLock;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

use crate::config::LogFormat;
use crate::otel::{self, OtelConfig};

/// Spans that exist for log lines only (one per HTTP request, carrying its request id) and are
/// not exported: a trace starts at the span that knows its parent (the agent's `tools/call`,
/// the click), not at the request that happens to carry it.
const LOG_ONLY_SPANS: [&str; 2] = ["request", "slack_action"];

/// The provider of the installed exporter: set once spans are exported.
static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Whether this process exports spans, so that work done only for traces (reading a ticket's
/// trace context) is skipped otherwise.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// What `init` set up; `shutdown` before the process exits so the last spans are sent.
#[must_use = "shut it down on exit, or the last spans are lost"]
#[derive(Debug, Default)]
pub struct Telemetry;

impl Telemetry {
    /// Flushes and stops the exporter (blocks up to the exporter's timeout when the collector
    /// is slow or away; a failure is only logged).
    pub fn shutdown(self) {
        if let Some(p) = PROVIDER.get()
            && let Err(e) = p.shutdown()
        {
            eprintln!("OpenTelemetry shutdown: {e}");
        }
    }
}

/// Sends the spans queued so far, waiting at most `within`; `false` if they were not all sent
/// in time (they stay queued, and the export goes on in the background). Under AWS Lambda the
/// instance is frozen as soon as a response is returned, so spans still queued would wait for
/// the next invocation, or be lost with the instance.
pub async fn flush(within: Duration) -> bool {
    let Some(provider) = PROVIDER.get().cloned() else {
        return true;
    };
    // The SDK's flush blocks on the exporter thread's reply.
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
    matches!(tokio::time::timeout(within, flushed).await, Ok(Ok(Ok(()))))
}

/// Installs the global subscriber: JSON when deployed, pretty locally. `RUST_LOG` filters.
/// With `otel`, spans also go to its OTLP endpoint; a failure to build the exporter is logged
/// and the service runs without traces rather than not at all.
pub fn init(format: LogFormat, otel: Option<&OtelConfig>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer();
    let fmt = match format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt.compact().boxed(),
    };
    let (built, failed) = match otel.map(otel::provider) {
        None => (None, None),
        Some(Ok(pair)) => (Some(pair), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let (provider, tracer) = built.unzip();
    let exported = filter::filter_fn(|m| !(m.is_span() && LOG_ONLY_SPANS.contains(&m.name())));
    let traces = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(exported)
    });
    // A second init (tests) keeps the first subscriber.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(traces)
        .try_init();
    if let (Ok(()), Some(p)) = (installed, provider) {
        let _ = PROVIDER.set(p);
    }
    if let Some(e) = failed {
        tracing::error!(error = %chain(&e), "OpenTelemetry exporter not built; running without traces");
    }
    if let Some(c) = otel.filter(|_| exporting()) {
        tracing::info!(endpoint = %c.traces_endpoint, service = %c.service_name, "exporting traces over OTLP");
    }
    Telemetry
}

/// Formats an error with its whole cause chain, for the one log line at the edge.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}
