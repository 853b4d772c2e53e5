//! Arguments that do not fit the tool's `inputSchema`, and conditions that cannot be evaluated:
//! neither lets a call slip past an `approve` or `deny` rule to a later `allow`.

use airlock_shared::ticket::TicketStatus;
use serde_json::json;

use super::helpers::*;

/// The shared test policy with argument validation turned off.
fn unchecked_policy() -> String {
    POLICY.replace("version: 1\n", "version: 1\nvalidate_arguments: false\n")
}

#[tokio::test]
async fn an_amount_sent_as_a_string_never_reaches_the_upstream() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            1,
            "create_refund",
            json!({"amount": "500"}),
        )
        .await;
    assert_eq!(
        (a.code(), a.message()),
        (Some(-32602), "invalid params"),
        "{:?}",
        a.body
    );
    let errors = a.body.pointer("/error/data/errors").unwrap();
    assert_eq!(errors[0]["path"], "/amount", "{errors}");
    assert_eq!(errors[0]["keyword"], "type", "{errors}");
    // A required argument left out is named by its keyword too.
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            2,
            "create_refund",
            json!({"currency": "usd"}),
        )
        .await;
    assert_eq!(a.code(), Some(-32602), "{:?}", a.body);
    assert_eq!(
        a.body.pointer("/error/data/errors/0/keyword"),
        Some(&json!("required"))
    );
    assert!(
        app.upstream.calls().is_empty(),
        "{:?}",
        app.upstream.calls()
    );
    assert!(app.jobs().await.is_empty(), "no approval was asked for");
    // A call that fits goes through as before.
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            3,
            "create_refund",
            json!({"amount": 50}),
        )
        .await;
    assert!(a.code().is_none(), "{:?}", a.body);
    assert_eq!(app.upstream.calls().len(), 1);
}

#[tokio::test]
async fn a_tool_the_upstream_does_not_list_is_refused() {
    let app = spawn_with(Opts {
        policy: POLICY.replace("\"slow\", \"stall\"", "\"slow\", \"stall\", \"unlisted\""),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    for id in 1..=2 {
        let a = app
            .call(BILLING_TOKEN, &sid, id, "unlisted", json!({}))
            .await;
        assert_eq!(
            (a.code(), a.message()),
            (Some(-32602), "unknown tool"),
            "{:?}",
            a.body
        );
    }
    assert!(app.upstream.calls().is_empty());
    // The gateway listed the tools once for this session, not once per call.
    let lists = app
        .upstream
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "tools/list")
        .count();
    assert_eq!(lists, 1);
}

#[tokio::test]
async fn without_a_listing_no_call_is_allowed_unchecked() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    app.upstream.set_down(true);
    let a = app
        .call(BILLING_TOKEN, &sid, 1, "list_charges", json!({}))
        .await;
    assert_eq!(
        (a.code(), a.message()),
        (Some(-32603), "upstream error"),
        "{:?}",
        a.body
    );
    let why = a.body.pointer("/error/data/why").unwrap().as_str().unwrap();
    assert!(why.contains("arguments could not be checked"), "{why}");
    // A call that policy denies anyway is denied as before.
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            2,
            "delete_customer",
            json!({"id": "c1"}),
        )
        .await;
    assert_eq!((a.code(), a.message()), (Some(-32001), "denied by policy"));
    app.upstream.set_down(false);
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn with_validation_off_the_string_amount_is_held_not_allowed() {
    let app = spawn_with(Opts {
        policy: unchecked_policy(),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(
        app.url(),
        sid.clone(),
        7,
        "create_refund",
        json!({"amount": "500"}),
        "application/json",
    );
    let id = app.wait_for_request().await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending);
    assert_eq!(t.rule, "big refunds need a manager");
    assert!(app.upstream.calls().is_empty());
    call.abort();
    // A missing pointer on the comparison is held too (in a session the first hold does not
    // keep busy).
    let other = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(
        app.url(),
        other,
        8,
        "create_refund",
        json!({"currency": "usd"}),
        "application/json",
    );
    let id = wait_for_request(&app.redis, 1).await;
    assert_eq!(app.ticket(id).await.rule, "big refunds need a manager");
    call.abort();
    assert!(app.upstream.calls().is_empty());
    let metrics = app.metrics().await;
    assert!(
        metrics
            .contains(r#"airlock_policy_unevaluable_total{rule="big refunds need a manager"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unevaluable_allow_rule_is_skipped_and_counted() {
    let policy = r#"
version: 1
validate_arguments: false
default: deny
rules:
  - name: cheap reads
    tools: ["list_charges"]
    when: [{ arg: /limit, lt: 10 }]
    action: allow
"#;
    let app = spawn_with(Opts {
        policy: policy.to_owned(),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            1,
            "list_charges",
            json!({"limit": "5"}),
        )
        .await;
    assert_eq!(
        (a.code(), a.body.pointer("/error/data/rule")),
        (Some(-32001), Some(&json!("default"))),
        "{:?}",
        a.body
    );
    let a = app
        .call(BILLING_TOKEN, &sid, 2, "list_charges", json!({"limit": 5}))
        .await;
    assert!(a.code().is_none(), "{:?}", a.body);
    assert_eq!(app.upstream.calls().len(), 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"airlock_policy_unevaluable_total{rule="cheap reads"} 1"#),
        "{metrics}"
    );
}
