//! One OpenTelemetry trace across the approval loop: the agent's `tools/call`, the ticket, the
//! notifier's job and its Slack post, the click, and the resumed call upstream, as a real OTLP
//! receiver (the official protobufs) gets them from the three processes.

use std::collections::HashMap;
use std::time::Duration;

use airlock_shared::trace_context;
use airlock_test_support::otlp::{OtlpReceiver, ReceivedSpan};
use serde_json::{Value, json};

use crate::stack::*;

const WAIT: Duration = Duration::from_secs(20);
/// The agent's own span: trace 4bf9…, span 00f0….
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn big_refund() -> rmcp::model::CallToolRequestParams {
    call(
        "create_refund",
        json!({"charge_id": "ch_1001", "amount": 250, "currency": "usd", "reason": "parcel lost"}),
    )
}

/// The one span named `name` (with attribute `attr` when given), or a panic listing them all.
fn one<'a>(spans: &'a [ReceivedSpan], name: &str, attr: Option<(&str, &str)>) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == name && attr.is_none_or(|(k, v)| s.attr(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "one {name} {attr:?} span: {spans:#?}");
    found[0]
}

/// Span ids from `s` up to its root, through the spans received.
fn ancestry(spans: &[ReceivedSpan], s: &ReceivedSpan) -> Vec<String> {
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut out = Vec::new();
    let mut parent = s.parent_span_id.as_str();
    while let Some(p) = by_id.get(parent) {
        out.push(p.span_id.clone());
        parent = p.parent_span_id.as_str();
    }
    out.push(parent.to_owned());
    out
}

/// What the loop leaves in the receiver once the message shows the approval.
fn loop_done(spans: &[ReceivedSpan]) -> bool {
    let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
    count("tools_call") >= 1
        && count("upstream_call") >= 1
        && count("click") >= 1
        && count("job") >= 2
        && count("slack_api") >= 2
}

/// The stack with its three services exporting spans to `endpoint`.
async fn exporting_to(endpoint: String) -> Stack {
    Stack::start_with(Options {
        otel_endpoint: Some(endpoint),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_agent_through_slack_and_back() {
    let otlp = OtlpReceiver::start().await;
    let s = exporting_to(otlp.endpoint()).await;
    let traceparent = client_traceparent();
    let client = s
        .client_with_headers(&[("traceparent", &traceparent), ("tracestate", "agent=1")])
        .await;
    let Held { call, message, ts } = s.hold(&client, big_refund(), WAIT).await;
    let id = Stack::ticket_of(&message);
    let click = s.click(ALICE, &ts, APPROVE).await;
    assert_eq!(click["webhook_status"], 200, "{click}");
    let answer = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    result_json(&answer.expect("approved call succeeds"));
    s.wait_message(&ts, WAIT, "approved", |m| {
        m["rendered"]
            .as_str()
            .unwrap_or_default()
            .contains("Approved")
    })
    .await;

    let spans = otlp.wait_for(WAIT, "the whole loop", loop_done).await;
    let call = one(&spans, "tools_call", None);
    assert_eq!(call.service, "airlock-gateway");
    assert_eq!(call.trace_id, CLIENT_TRACE, "the agent's trace");
    assert_eq!(
        call.parent_span_id, CLIENT_SPAN,
        "the agent's span is the parent"
    );
    for name in ["ticket_open", "hold", "upstream_call"] {
        let child = one(&spans, name, None);
        assert_eq!(child.parent_span_id, call.span_id, "{name} under the call");
    }
    let opened = one(&spans, "ticket_open", None);
    // The ticket keeps the call span's context: the same trace, the gateway's span.
    let (tp, state) = trace_context::of_ticket(&s.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        tp.as_deref(),
        Some(format!("00-{CLIENT_TRACE}-{}-01", call.span_id).as_str())
    );
    assert_eq!(state.as_deref(), Some("agent=1"));

    // The notifier: the request's job under the ticket's opening, its post under the job.
    let asked = one(&spans, "job", Some(("kind", "approval_request")));
    assert_eq!(asked.service, "airlock-notifier");
    assert_eq!(asked.parent_span_id, opened.span_id);
    assert!(ancestry(&spans, asked).contains(&call.span_id));
    let post = one(&spans, "slack_api", Some(("method", "chat.postMessage")));
    assert_eq!(post.parent_span_id, asked.span_id);

    // The click, under the call whose ticket it decided; the message update under the click.
    let clicked = one(&spans, "click", None);
    assert_eq!(clicked.service, "airlock-webhook");
    assert_eq!(clicked.parent_span_id, call.span_id);
    let closed = one(&spans, "job", Some(("kind", "ticket_closed")));
    assert_eq!(closed.parent_span_id, clicked.span_id);
    let update = one(&spans, "slack_api", Some(("method", "chat.update")));
    assert_eq!(update.parent_span_id, closed.span_id);

    let (held, resumed) = (
        one(&spans, "hold", None),
        one(&spans, "upstream_call", None),
    );
    assert_eq!(resumed.attr("held"), Some("true"), "{resumed:?}");
    for s in [
        call, opened, held, resumed, asked, post, clicked, closed, update,
    ] {
        assert_eq!(s.trace_id, CLIENT_TRACE, "{} in the agent's trace", s.name);
        assert_eq!(
            ancestry(&spans, s).last().map(String::as_str),
            Some(CLIENT_SPAN),
            "{} leads up to the agent's span",
            s.name
        );
    }
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_trace_of_its_own() {
    let otlp = OtlpReceiver::start().await;
    let s = exporting_to(otlp.endpoint()).await;
    let bad = format!("00-{}-{CLIENT_SPAN}-01", CLIENT_TRACE.to_uppercase());
    let client = s.client_with_headers(&[("traceparent", &bad)]).await;
    let read = client
        .call_tool(call("list_charges", json!({"customer_id": "cus_123"})))
        .await
        .expect("the call is not refused for its traceparent");
    result_json(&read);
    let spans = otlp
        .wait_for(WAIT, "the call's spans", |s| {
            s.iter().any(|s| s.name == "upstream_call")
        })
        .await;
    let call = one(&spans, "tools_call", None);
    assert_eq!(call.parent_span_id, "", "a root span");
    assert_ne!(call.trace_id, CLIENT_TRACE.to_lowercase());
    let up = one(&spans, "upstream_call", None);
    assert_eq!(
        (up.trace_id.as_str(), up.parent_span_id.as_str()),
        (call.trace_id.as_str(), call.span_id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_exported_and_the_ticket_keeps_the_agents_context() {
    let otlp = OtlpReceiver::start().await;
    let s = Stack::start().await;
    let client = s.client().await;
    let mut params = big_refund();
    params.meta = Some(
        json!({"traceparent": client_traceparent()})
            .as_object()
            .cloned()
            .unwrap()
            .into(),
    );
    let Held { call, message, ts } = s.hold(&client, params, WAIT).await;
    let id = Stack::ticket_of(&message);
    s.click(ALICE, &ts, APPROVE).await;
    let answer = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    result_json(&answer.expect("approved call succeeds"));
    let (tp, _) = trace_context::of_ticket(&s.db.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tp, Some(client_traceparent()), "the agent's own value");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        otlp.requests(),
        0,
        "nothing is exported without an endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_call() {
    // A port nobody listens on: every export fails, in the exporter's thread.
    let s = exporting_to(format!("http://127.0.0.1:{}", free_port())).await;
    let client = s
        .client_with_headers(&[("traceparent", &client_traceparent())])
        .await;
    let Held { call, ts, .. } = s.hold(&client, big_refund(), WAIT).await;
    let click = s.click(ALICE, &ts, APPROVE).await;
    assert_eq!(click["webhook_status"], 200, "{click}");
    let answer = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    result_json(&answer.expect("approved call succeeds"));
    let read = client
        .call_tool(call_of("list_charges"))
        .await
        .expect("allowed call succeeds");
    result_json(&read);
}

fn call_of(tool: &'static str) -> rmcp::model::CallToolRequestParams {
    call(tool, json!({"customer_id": "cus_123"}))
}

/// One stateless (2026-07-28) request to the gateway that declares the tasks extension, sent in
/// the agent's trace; the JSON-RPC answer, from a JSON or an SSE body.
async fn modern(s: &Stack, method: &str, mut params: Value) -> Value {
    const MODERN: &str = "2026-07-28";
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities":
            {"extensions": {"io.modelcontextprotocol/tasks": {}}},
        "io.modelcontextprotocol/clientInfo": {"name": "traces", "version": "1"},
    });
    let name = params
        .get("name")
        .or(params.get("taskId"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = s
        .http
        .post(s.mcp_url())
        .bearer_auth(AGENT_TOKEN)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .header("mcp-name", name)
        .header("traceparent", client_traceparent())
        .json(&body)
        .send()
        .await
        .unwrap();
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .rfind(|v| v.get("id").is_some())
            .unwrap_or_else(|| panic!("no answer in {text}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_run_as_a_task_stays_in_the_agents_trace() {
    let otlp = OtlpReceiver::start().await;
    let s = exporting_to(otlp.endpoint()).await;
    let args =
        json!({"charge_id": "ch_1001", "amount": 250, "currency": "usd", "reason": "parcel lost"});
    let made = modern(
        &s,
        "tools/call",
        json!({"name": "create_refund", "arguments": args}),
    )
    .await;
    assert_eq!(made["result"]["resultType"], "task", "{made}");
    let task = made["result"]["taskId"].as_str().unwrap().to_owned();
    let message = s.wait_messages(1, WAIT).await.swap_remove(0);
    let ts = message["ts"].as_str().unwrap();
    let click = s.click(ALICE, ts, APPROVE).await;
    assert_eq!(click["webhook_status"], 200, "{click}");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = modern(&s, "tasks/get", json!({"taskId": task})).await;
        if got["result"]["status"] == "completed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The call that made the task was answered long before the run; the run still joins it.
    let spans = otlp
        .wait_for(WAIT, "the task's run", |spans| {
            spans.iter().any(|s| s.name == "task_run")
                && spans.iter().any(|s| s.name == "upstream_call")
        })
        .await;
    let call = one(&spans, "tools_call", None);
    assert_eq!(call.trace_id, CLIENT_TRACE);
    let run = one(&spans, "task_run", None);
    assert_eq!(run.service, "airlock-gateway");
    assert_eq!(
        run.trace_id, CLIENT_TRACE,
        "the run is in the agent's trace"
    );
    assert_eq!(
        run.parent_span_id, call.span_id,
        "under the call that made the task"
    );
    let up = one(&spans, "upstream_call", None);
    assert_eq!(up.parent_span_id, run.span_id, "{up:?}");
    assert_eq!(up.attr("task"), Some("true"), "{up:?}");
}
