//! Traces under Lambda: an instance is frozen as soon as it answers, so each invocation sends
//! its spans first, and a collector that does not answer costs the click at most the bound.

use std::process::Stdio;
use std::time::{Duration, Instant};

use airlock_shared::TicketId;
use airlock_test_support::otlp::OtlpReceiver;
use airlock_test_support::{TestDb, fresh_db, fresh_redis};
use serde_json::Value;
use tokio::sync::mpsc;
use webhook_fn::signature;

use crate::helpers::*;
use crate::lambda_runtime::{lambda_env, start_runtime, url_event};
use crate::process::{Guard, command};

/// The agent traces of the tickets clicked here.
const WARM_UP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const AGENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The binary under a local Runtime API, exporting spans.
struct Lambda {
    db: TestDb,
    events: mpsc::UnboundedSender<(String, String)>,
    results: mpsc::UnboundedReceiver<(String, Value)>,
    sent: usize,
    _child: Guard,
}

impl Lambda {
    async fn start(endpoint: &str) -> Self {
        let db = fresh_db().await;
        let redis = fresh_redis().await;
        let (api, events, results) = start_runtime().await;
        let mut env = lambda_env(&db, &redis, api);
        env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into());
        // Left to itself, the batch exporter would send only after this delay.
        env.insert("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into());
        // Spans below the log filter are not made at all, exported or not.
        let child = command(&env)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            db,
            events,
            results,
            sent: 0,
            _child: Guard(child),
        }
    }

    /// A pending ticket whose held call was in `trace`.
    async fn open(&self, trace: &str) -> TicketId {
        let mut new = new_ticket(&[], Duration::from_secs(600));
        new.traceparent = Some(format!("00-{trace}-00f067aa0ba902b7-01"));
        open_on(&self.db, &new).await
    }

    /// One invocation with a signed approval of a ticket in `trace`: how long until the
    /// response, and its HTTP status.
    async fn approve(&mut self, trace: &str) -> (Duration, u16) {
        let id = self.open(trace).await;
        let body = approve_body(id, "U0LAMBDA");
        let ts = unix_now().to_string();
        let sig = signature::sign(SECRET, &ts, &body);
        self.sent += 1;
        let req = format!("req-{}", self.sent);
        let sent = Instant::now();
        self.events
            .send((req.clone(), url_event(&body, &ts, &sig)))
            .unwrap();
        let (key, resp) = tokio::time::timeout(Duration::from_secs(20), self.results.recv())
            .await
            .expect("the runtime answered")
            .unwrap();
        let took = sent.elapsed();
        assert_eq!(key, format!("{req}/response"), "{resp}");
        (took, crate::lambda::decode_response(&resp).0)
    }
}

#[tokio::test]
async fn an_invocation_sends_its_spans_before_the_instance_is_frozen() {
    let otlp = OtlpReceiver::start().await;
    let mut lambda = Lambda::start(&otlp.endpoint()).await;
    // The first click of a cold instance also opens its connections, which may take longer
    // than the bounded read of the ticket's trace context; the second finds them open.
    assert_eq!(lambda.approve(WARM_UP_TRACE).await.1, 200);
    assert_eq!(lambda.approve(AGENT_TRACE).await.1, 200);
    // No further event: the instance now waits in `next`, as a frozen one would, and its
    // exporter's own schedule is ten minutes away.
    let spans = otlp
        .wait_for(Duration::from_secs(5), "the second click's span", |spans| {
            spans
                .iter()
                .any(|s| s.name == "click" && s.trace_id == AGENT_TRACE)
        })
        .await;
    let clicks = spans.iter().filter(|s| s.name == "click").count();
    assert_eq!(clicks, 2, "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "airlock-webhook"));
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_the_click_by_the_bound_only() {
    // Accepts connections and never answers: the exporter's own timeout is 10 s.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let mut lambda = Lambda::start(&format!("http://{addr}")).await;
    for _ in 0..2 {
        let (took, status) = lambda.approve(AGENT_TRACE).await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(2),
            "answered after {took:?}; the flush is bounded at {:?}",
            webhook_fn::config::TRACE_FLUSH_TIMEOUT
        );
    }
    held.abort();
}
