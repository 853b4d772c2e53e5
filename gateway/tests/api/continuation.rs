//! 2026-07-28 multi round-trip calls through the gateway: an approved call the upstream answers
//! with an `InputRequiredResult` continues on the client's retry without a second approval, and
//! only for that very call; plus the W3C trace context of `_meta`, passed on and recorded.

use std::time::Duration;

use airlock_gateway::request_state::{Issue, RequestStates};
use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::Decision;
use airlock_shared::trace_context::{self, AuditedCall};
use airlock_shared::{TicketId, canonical};
use airlock_test_support::upstream::Mode;
use serde_json::{Value, json};

use super::helpers::*;

const MODERN: &str = "2026-07-28";
const KEY: &str = "continuation-test-key-0123456789abcdef";
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";

const POLICY: &str = r#"
version: 1
default: deny
rules:
  - name: big wizard refunds
    tools: ["wizard", "create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
    approvers: [U0123ABCD]
  - { name: small wizard refunds, tools: ["wizard", "create_refund"], action: allow }
  - { name: reads, tools: ["list_*"], action: allow, read_only: true }
"#;

async fn app_in(mode: Mode) -> TestApp {
    spawn_with(Opts {
        policy: POLICY.to_owned(),
        mode,
        request_state_key: Some(KEY.to_owned()),
        ..Opts::default()
    })
    .await
}

/// A 2026-07-28 `tools/call`; `extra` goes into `params` beside name and arguments.
fn call(id: i64, tool: &str, args: Value, extra: Value) -> Value {
    let mut params = json!({"name": tool, "arguments": args, "_meta": {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        if k == "_meta" {
            for (mk, mv) in v.as_object().cloned().unwrap_or_default() {
                params["_meta"][mk] = mv;
            }
        } else {
            params[k] = v;
        }
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params})
}

async fn send_as(url: &str, token: &str, body: &Value) -> Answer {
    let tool = body["params"]["name"].as_str().unwrap().to_owned();
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", BOTH)
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    read_answer(resp).await
}

/// Sends a call that policy holds, approves it, and returns its answer and ticket.
async fn approved(app: &TestApp, body: Value) -> (Answer, TicketId) {
    let url = app.url();
    let waiting = tokio::spawn(async move { send_as(&url, BILLING_TOKEN, &body).await });
    let ticket = app.wait_for_request().await;
    decide(&app.db, &app.redis, ticket, Decision::Approve, true).await;
    (waiting.await.unwrap(), ticket)
}

fn approval_requests(jobs: &[NotifyJob]) -> usize {
    jobs.iter()
        .filter(|j| matches!(j, NotifyJob::ApprovalRequest { .. }))
        .count()
}

/// The audit rows of billing-bot once there are `n` of them.
async fn audited(app: &TestApp, n: usize) -> Vec<AuditedCall> {
    eventually(Duration::from_secs(5), || async {
        let rows = trace_context::audited_calls(&app.db.pool, "billing-bot")
            .await
            .unwrap();
        (rows.len() >= n).then_some(rows)
    })
    .await
    .unwrap_or_else(|| panic!("{n} audit rows never appeared"))
}

fn confirm() -> Value {
    json!({"confirm": {"action": "accept", "content": {"ok": true}}})
}

#[tokio::test]
async fn an_approved_call_that_needs_input_continues_without_a_second_approval() {
    for mode in [Mode::Json, Mode::Sse] {
        let app = app_in(mode).await;
        let args = json!({"amount": 500});
        let (first, ticket) = approved(&app, call(1, "wizard", args.clone(), json!({}))).await;
        let result = &first.body["result"];
        assert_eq!(
            result["resultType"], "input_required",
            "{mode:?}: {}",
            first.text
        );
        assert!(
            result["inputRequests"]["confirm"].is_object(),
            "{}",
            first.text
        );
        let state = result["requestState"].as_str().unwrap().to_owned();
        assert!(state.starts_with("airlock1."), "wrapped: {state}");
        assert!(
            !state.contains("wizard:500"),
            "the upstream's state is inside, signed"
        );

        let retry = call(
            2,
            "wizard",
            args.clone(),
            json!({"inputResponses": confirm(), "requestState": state}),
        );
        let done = send_as(&app.url(), BILLING_TOKEN, &retry).await;
        assert_eq!(done.code(), None, "{mode:?}: {}", done.text);
        assert_eq!(done.tool_text()["confirmed"], "accept", "{}", done.text);
        // The upstream got its own state back, exactly, and ran twice; one ticket, one message.
        let params = app.upstream.call_params();
        assert_eq!(params.len(), 2, "{params:?}");
        assert_eq!(params[1]["requestState"], "wizard:500");
        assert_eq!(params[1]["inputResponses"], confirm());
        assert_eq!(
            approval_requests(&app.jobs().await),
            1,
            "{mode:?}: one Slack message"
        );
        let rows = audited(&app, 2).await;
        let outcomes: Vec<(&str, Option<uuid::Uuid>)> = rows
            .iter()
            .map(|r| (r.outcome.as_str(), r.ticket_id))
            .collect();
        assert_eq!(
            outcomes,
            vec![("approved", Some(ticket.0)), ("continued", Some(ticket.0))],
            "{mode:?}: the retry is audited as a continuation of the ticket"
        );
    }
}

#[tokio::test]
async fn an_allowed_call_continues_under_policy_and_the_upstream_gets_no_state_it_never_gave() {
    let app = app_in(Mode::Json).await;
    let args = json!({"amount": 50, "no_state": true});
    let first = send_as(
        &app.url(),
        BILLING_TOKEN,
        &call(1, "wizard", args.clone(), json!({})),
    )
    .await;
    assert_eq!(
        first.body["result"]["resultType"], "input_required",
        "{}",
        first.text
    );
    // The gateway still gives a state: it is what ties the retry to this call.
    let state = first.body["result"]["requestState"]
        .as_str()
        .unwrap()
        .to_owned();
    let retry = call(
        2,
        "wizard",
        args,
        json!({"inputResponses": confirm(), "requestState": state}),
    );
    let done = send_as(&app.url(), BILLING_TOKEN, &retry).await;
    assert_eq!(done.tool_text()["confirmed"], "accept", "{}", done.text);
    let params = app.upstream.call_params();
    assert!(params[1].get("requestState").is_none(), "{:?}", params[1]);
    let rows = audited(&app, 2).await;
    assert!(
        rows.iter()
            .all(|r| r.outcome == "forwarded" && r.ticket_id.is_none()),
        "{rows:?}"
    );
    assert!(app.jobs().await.is_empty(), "nothing was held");
}

#[tokio::test]
async fn forged_tampered_foreign_expired_or_mismatched_states_are_refused_before_the_upstream() {
    let app = app_in(Mode::Json).await;
    let args = json!({"amount": 500});
    let (first, ticket) = approved(&app, call(1, "wizard", args.clone(), json!({}))).await;
    let state = first.body["result"]["requestState"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.upstream.call_count(), 1);

    let hash = canonical::request_hash("wizard", &args);
    let issue = Issue {
        ticket: Some(ticket),
        request_hash: &hash,
        principal: "billing-bot",
    };
    let key =
        |k: &str| RequestStates::new(Some(&k.to_owned().into()), Duration::from_secs(60)).unwrap();
    let foreign = key("another-gateways-key-0123456789abcdef").seal(
        &issue,
        Some("wizard:500".into()),
        chrono::Utc::now(),
    );
    // Signed with the gateway's own key, but issued long enough ago to have expired.
    let expired = key(KEY).seal(
        &issue,
        Some("wizard:500".into()),
        chrono::Utc::now() - chrono::Duration::hours(1),
    );
    let i = "airlock1.".len() + 5;
    let flipped = if &state[i..=i] == "x" { "y" } else { "x" };
    let tampered = format!("{}{flipped}{}", &state[..i], &state[i + 1..]);
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "the upstream's own state",
            BILLING_TOKEN,
            json!("wizard:500"),
            "not issued by this gateway",
        ),
        (
            "tampered",
            BILLING_TOKEN,
            json!(tampered),
            "failed verification",
        ),
        (
            "another key",
            BILLING_TOKEN,
            json!(foreign),
            "failed verification",
        ),
        ("expired", BILLING_TOKEN, json!(expired), "expired"),
        (
            "another agent",
            OTHER_TOKEN,
            json!(state.clone()),
            "another agent",
        ),
    ];
    for (n, (what, token, rs, why)) in cases.into_iter().enumerate() {
        let id = 10 + i64::try_from(n).unwrap();
        let body = call(
            id,
            "wizard",
            args.clone(),
            json!({"inputResponses": confirm(), "requestState": rs}),
        );
        let a = send_as(&app.url(), token, &body).await;
        assert_eq!(a.code(), Some(-32602), "{what}: {}", a.text);
        assert_eq!(a.message(), "invalid request state", "{what}");
        let got = a
            .body
            .pointer("/error/data/why")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert!(got.contains(why), "{what}: {got}");
    }
    // A valid state presented for other arguments: refused too, and not held either.
    let other = call(
        20,
        "wizard",
        json!({"amount": 501}),
        json!({"inputResponses": confirm(), "requestState": state}),
    );
    let a = send_as(&app.url(), BILLING_TOKEN, &other).await;
    assert_eq!(a.code(), Some(-32602), "{}", a.text);
    assert!(a.text.contains("another call"), "{}", a.text);
    assert_eq!(
        app.upstream.call_count(),
        1,
        "nothing refused reached the upstream"
    );
    assert_eq!(approval_requests(&app.jobs().await), 1, "no second ticket");
    // billing-bot's rows: the original call and five refusals (other-bot's is its own).
    let rows = audited(&app, 6).await;
    let refused = rows
        .iter()
        .filter(|r| r.outcome == "invalid_request_state")
        .count();
    assert_eq!(refused, 5, "{rows:?}");
}

#[tokio::test]
async fn trace_context_reaches_the_upstream_and_lands_on_the_ticket_and_audit_row() {
    let app = app_in(Mode::Json).await;
    let meta =
        json!({"_meta": {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"}});
    let (held, ticket) = approved(
        &app,
        call(1, "create_refund", json!({"amount": 500}), meta.clone()),
    )
    .await;
    assert_eq!(held.code(), None, "{}", held.text);
    let allowed = send_as(
        &app.url(),
        BILLING_TOKEN,
        &call(2, "list_charges", json!({}), meta),
    )
    .await;
    assert_eq!(allowed.code(), None, "{}", allowed.text);
    for p in app.upstream.call_params() {
        assert_eq!(
            p["_meta"]["traceparent"], TRACEPARENT,
            "passed on unchanged: {p}"
        );
        assert_eq!(p["_meta"]["tracestate"], "rojo=00f067aa0ba902b7");
    }
    let on_ticket = trace_context::of_ticket(&app.db.pool, ticket)
        .await
        .unwrap();
    assert_eq!(
        on_ticket,
        Some((
            Some(TRACEPARENT.to_owned()),
            Some("rojo=00f067aa0ba902b7".to_owned())
        ))
    );
    // What the notifier renders the Slack message from carries none of it.
    let shown = serde_json::to_string(&app.ticket(ticket).await).unwrap();
    assert!(!shown.contains("0af7651916cd43dd"), "{shown}");
    let rows = audited(&app, 2).await;
    for r in &rows {
        assert_eq!(r.traceparent.as_deref(), Some(TRACEPARENT), "{r:?}");
        assert_eq!(
            r.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7"),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_traceparent_is_not_recorded_and_the_call_still_runs() {
    let app = app_in(Mode::Json).await;
    let bad = "00-NOT-A-TRACE-01";
    let meta = json!({"_meta": {"traceparent": bad, "tracestate": "rojo=1"}});
    let (held, ticket) =
        approved(&app, call(1, "create_refund", json!({"amount": 500}), meta)).await;
    assert_eq!(held.code(), None, "{}", held.text);
    assert_eq!(app.upstream.call_count(), 1);
    // The body is the client's: the upstream sees the value as sent.
    assert_eq!(app.upstream.call_params()[0]["_meta"]["traceparent"], bad);
    let on_ticket = trace_context::of_ticket(&app.db.pool, ticket)
        .await
        .unwrap();
    assert_eq!(on_ticket, Some((None, None)));
    let rows = audited(&app, 1).await;
    assert_eq!(
        (
            rows[0].traceparent.as_deref(),
            rows[0].tracestate.as_deref()
        ),
        (None, None)
    );
    assert_eq!(rows[0].outcome, "approved");
}
