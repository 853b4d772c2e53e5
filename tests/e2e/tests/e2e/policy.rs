//! Calls that policy decides without a person.

use std::time::Duration;

use serde_json::json;

use crate::stack::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_calls_pass_straight_through() {
    let s = Stack::start().await;
    let client = s.client().await;
    let tools = client.peer().list_all_tools().await.unwrap();
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert!(names.contains(&"create_refund".to_owned()), "{names:?}");
    let refund = tools.iter().find(|t| t.name == "create_refund").unwrap();
    let schema = serde_json::to_value(&refund.input_schema).unwrap();
    assert_eq!(
        schema["required"],
        json!(["charge_id", "amount", "currency"])
    );

    let r = client
        .peer()
        .call_tool(call("list_charges", json!({"limit": 2})))
        .await
        .unwrap();
    assert_eq!(result_json(&r)["charges"].as_array().unwrap().len(), 2);
    let r = client
        .peer()
        .call_tool(call(
            "create_refund",
            json!({"charge_id": "ch_1002", "amount": 40, "currency": "usd"}),
        ))
        .await
        .unwrap();
    assert_eq!(result_json(&r)["refund"]["amount"], 40.0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(s.messages().await.is_empty(), "allowed calls ask nobody");
    assert_eq!(s.executed().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_never_reach_the_upstream() {
    let s = Stack::start().await;
    let client = s.client().await;
    let r = client
        .peer()
        .call_tool(call("delete_customer", json!({"customer_id": "cus_123"})))
        .await;
    assert_refused(&r, "denied by policy");
    // A tool the policy does not name falls to `default: deny`.
    let r = client
        .peer()
        .call_tool(call("drop_database", json!({})))
        .await;
    assert_refused(&r, "denied by policy");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(s.messages().await.is_empty());
    assert!(s.executed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_budget_stops_a_runaway_agent() {
    let policy = demo_policy().replace(
        "max_tool_calls_per_session: 50",
        "max_tool_calls_per_session: 3",
    );
    assert!(policy.contains("max_tool_calls_per_session: 3"));
    let s = Stack::start_with(Options {
        policy,
        ..Options::default()
    })
    .await;
    let client = s.client().await;
    for _ in 0..3 {
        client
            .peer()
            .call_tool(call("list_charges", json!({})))
            .await
            .unwrap();
    }
    let r = client
        .peer()
        .call_tool(call("list_charges", json!({})))
        .await;
    assert_refused(&r, "budget exceeded");
    assert_eq!(s.executed().await.len(), 3);
    // A new session has its own budget.
    let other = s.client().await;
    other
        .peer()
        .call_tool(call("list_charges", json!({})))
        .await
        .unwrap();
    assert_eq!(s.executed().await.len(), 4);
}
