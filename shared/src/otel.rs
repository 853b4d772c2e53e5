//! OpenTelemetry: where traces go (OTLP over HTTP/protobuf, only when configured), and the W3C
//! trace context that one approval carries from service to service (an agent's HTTP header or
//! `_meta`, the ticket row, the stream job). Without an endpoint nothing is exported and the
//! helpers here find no context, so every service behaves exactly as before.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use url::Url;

use crate::config::Env;

/// The standard base endpoint; `/v1/traces` is appended (OTLP/HTTP exporter specification).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard traces endpoint, used as it is; wins over [`ENDPOINT_VAR`].
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The standard service name variable (each binary has its own default).
pub const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// The standard protocol variables: only `http/protobuf` is built in (no gRPC stack).
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// Where this service's traces go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtelConfig {
    /// The full OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_endpoint: Url,
    /// `service.name` on every span.
    pub service_name: String,
}

impl OtelConfig {
    /// Reads the standard `OTEL_*` variables; `None` (tracing off) when no endpoint is set.
    /// Problems (a bad URL, a protocol we do not speak) are reported with the rest of the
    /// configuration.
    pub fn from_env(env: &mut Env, default_service: &str) -> Option<Self> {
        for var in PROTOCOL_VARS {
            if let Some(p) = env.raw(var).map(str::trim)
                && p != "http/protobuf"
            {
                env.problem(format!("{var}: only http/protobuf is supported, got {p:?}"));
            }
        }
        let service_name = env
            .raw(SERVICE_NAME_VAR)
            .map_or(default_service, str::trim)
            .to_owned();
        let traces_endpoint = match env.optional::<Url>(TRACES_ENDPOINT_VAR) {
            Some(u) => u,
            None => {
                let base = env.optional::<Url>(ENDPOINT_VAR)?;
                let joined = format!("{}/v1/traces", base.as_str().trim_end_matches('/'));
                match joined.parse() {
                    Ok(u) => u,
                    Err(e) => {
                        env.problem(format!("{ENDPOINT_VAR}: invalid value: {e}"));
                        return None;
                    }
                }
            }
        };
        if !matches!(traces_endpoint.scheme(), "http" | "https") {
            env.problem(format!(
                "OTLP endpoint {traces_endpoint}: expected an http or https URL"
            ));
            return None;
        }
        Some(Self {
            traces_endpoint,
            service_name,
        })
    }
}

/// The tracer provider behind the tracing layer: a batch processor on its own thread, posting
/// protobuf to the collector. Export failures are the exporter's to log and never reach a
/// request: spans are dropped, calls go on.
pub fn provider(
    config: &OtelConfig,
) -> Result<(SdkTracerProvider, SdkTracer), opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_endpoint.as_str())
        .build()?;
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(config.service_name.clone());
    Ok((provider, tracer))
}

/// A W3C trace context as it travels between services: on a ticket row, in a stream job
/// (beside the job's own fields, absent on entries written before traces existed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carrier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl Carrier {
    /// A context from a `traceparent` and its `tracestate`.
    pub fn new(traceparent: Option<String>, tracestate: Option<String>) -> Self {
        Self {
            traceparent,
            tracestate,
        }
    }

    /// The context of `span` when it is exported (OpenTelemetry on and the span sampled in or
    /// out, but real); `None` without OpenTelemetry.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let cx = span.context();
        if !cx.span().span_context().is_valid() {
            return None;
        }
        let mut fields = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut fields);
        let traceparent = fields.remove("traceparent")?;
        Some(Self {
            traceparent: Some(traceparent),
            tracestate: fields.remove("tracestate").filter(|s| !s.is_empty()),
        })
    }

    /// The context of the current span (see [`Carrier::of_span`]).
    pub fn current() -> Option<Self> {
        Self::of_span(&tracing::Span::current())
    }

    /// Makes this context the OpenTelemetry parent of `span`, which must not have been entered
    /// yet. `false` when there is nothing valid to take (no or a malformed `traceparent`: the
    /// span then starts a trace of its own) or OpenTelemetry is off.
    pub fn parent(&self, span: &tracing::Span) -> bool {
        let Some(traceparent) = self.traceparent.as_deref() else {
            return false;
        };
        let mut fields = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        if let Some(state) = self.tracestate.as_deref() {
            fields.insert("tracestate".to_owned(), state.to_owned());
        }
        let cx = TraceContextPropagator::new().extract(&fields);
        if !cx.span().span_context().is_valid() {
            return false;
        }
        span.set_parent(cx).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Option<OtelConfig>, Vec<String>> {
        let mut env = Env::from_pairs(pairs);
        let c = OtelConfig::from_env(&mut env, "airlock-test");
        env.finish().map(|()| c).map_err(|e| e.problems)
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        assert_eq!(config(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_service_a_default() {
        let c = config(&[(ENDPOINT_VAR, "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(
            c.traces_endpoint.as_str(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(c.service_name, "airlock-test");
        let c = config(&[
            (ENDPOINT_VAR, "http://ignored:4318"),
            (TRACES_ENDPOINT_VAR, "https://c.example/otlp/traces"),
            (SERVICE_NAME_VAR, "gw-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.traces_endpoint.as_str(), "https://c.example/otlp/traces");
        assert_eq!(c.service_name, "gw-eu");
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = config(&[
            (ENDPOINT_VAR, "not a url"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let problems = config(&[(ENDPOINT_VAR, "ftp://collector")]).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn without_opentelemetry_there_is_no_context_to_carry_or_take() {
        let span = tracing::info_span!("x");
        assert_eq!(Carrier::of_span(&span), None);
        let c = Carrier::new(
            Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into()),
            None,
        );
        assert!(!c.parent(&span));
        assert!(!Carrier::new(Some("garbage".into()), None).parent(&span));
    }

    #[test]
    fn a_parent_is_taken_and_its_trace_passed_on() {
        use tracing_subscriber::layer::SubscriberExt;
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call");
            let client = Carrier::new(
                Some("00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01".into()),
                Some("rojo=00f067aa0ba902b7".into()),
            );
            assert!(client.parent(&span));
            let ours = Carrier::of_span(&span).unwrap();
            let tp = ours.traceparent.unwrap();
            assert!(
                tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{tp}"
            );
            assert!(!tp.contains("00f067aa0ba902b7"), "a span of its own: {tp}");
            assert_eq!(ours.tracestate.as_deref(), Some("rojo=00f067aa0ba902b7"));
            // Entered, a span's parent is fixed; a malformed parent starts a trace of its own.
            let fresh = tracing::info_span!("fresh");
            assert!(!Carrier::new(Some("00-xyz".into()), None).parent(&fresh));
            let tp = Carrier::of_span(&fresh).unwrap().traceparent.unwrap();
            assert!(!tp.contains("0af7651916cd43dd8448eb211c80319c"), "{tp}");
            assert!(!client.parent(&fresh));
        });
    }

    #[test]
    fn a_carrier_is_absent_from_old_job_json_and_left_out_when_empty() {
        let c: Carrier = serde_json::from_str(r#"{"kind":"approval_request"}"#).unwrap();
        assert_eq!(c, Carrier::default());
        assert_eq!(serde_json::to_string(&Carrier::default()).unwrap(), "{}");
    }
}
