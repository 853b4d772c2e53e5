//! The demo upstream as a newcomer meets it: refunds stop at what is left of a charge, and a
//! session ends with the status the official SDKs expect, directly and through the gateway.

use std::time::Duration;

use serde_json::json;

use crate::stack::*;

fn error_text(r: &rmcp::model::CallToolResult) -> String {
    assert_eq!(r.is_error, Some(true), "expected a tool error: {r:?}");
    r.content[0].as_text().expect("text content").text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_stop_at_what_is_left_of_the_charge() {
    let s = Stack::start().await;
    let client = s.client().await;
    let refund = |charge: &'static str, amount: f64, currency: &'static str| {
        call(
            "create_refund",
            json!({"charge_id": charge, "amount": amount, "currency": currency}),
        )
    };
    let peer = client.peer();
    // ch_1002 is 95.50 USD; every amount stays under the demo policy's approval line.
    let r = peer
        .call_tool(refund("ch_1002", 60.0, "usd"))
        .await
        .unwrap();
    assert_eq!(result_json(&r)["refund"]["amount"], 60.0);
    let r = peer
        .call_tool(refund("ch_1002", 40.0, "usd"))
        .await
        .unwrap();
    let why = error_text(&r);
    assert!(
        why.contains("40.00 USD")
            && why.contains("95.50 USD")
            && why.contains("35.50 USD of it is left"),
        "{why}"
    );
    let r = peer
        .call_tool(refund("ch_1002", 35.5, "usd"))
        .await
        .unwrap();
    assert_eq!(result_json(&r)["refund"]["amount"], 35.5);
    let r = peer
        .call_tool(refund("ch_1002", 0.01, "usd"))
        .await
        .unwrap();
    assert!(error_text(&r).contains("0.00 USD of it is left"));
    let r = peer.call_tool(refund("ch_9999", 5.0, "usd")).await.unwrap();
    assert!(error_text(&r).contains("no charge ch_9999"));
    let r = peer.call_tool(refund("ch_1003", 5.0, "usd")).await.unwrap();
    assert!(error_text(&r).contains("in EUR"));

    let r = peer
        .call_tool(call("list_charges", json!({"customer_id": "cus_123"})))
        .await
        .unwrap();
    let charges = result_json(&r)["charges"].as_array().unwrap().clone();
    let ids: Vec<&str> = charges.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ch_1001", "ch_1002"]);
    assert_eq!(charges[1]["amount"], 95.5);
    assert_eq!(charges[1]["amount_refunded"], 95.5);
    // The README's quickstart refund fits its charge.
    assert!(charges[0]["amount"].as_f64().unwrap() >= 250.0);

    // Refused refunds moved no money: only the two refunds and the listing ran.
    let tools: Vec<String> = s
        .executed()
        .await
        .iter()
        .map(|c| c["tool"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tools, ["create_refund", "create_refund", "list_charges"]);
}

/// Opens a session at `url` with raw HTTP and ends it with `DELETE`; returns the status.
async fn end_session(http: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let with = |rb: reqwest::RequestBuilder| {
        let rb = rb
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(10));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "0"}}});
    let r = with(http.post(url)).json(&init).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "initialize at {url}: {}",
        r.status()
    );
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let body = r.text().await.unwrap();
    assert!(body.contains("protocolVersion"), "{body}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = with(http.post(url))
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .json(&note)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "initialized: {}", r.status());
    let r = with(http.delete(url))
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_session_answers_as_the_official_sdks_expect() {
    let s = Stack::start().await;
    let direct = format!("http://127.0.0.1:{}/mcp", s.upstream.port);
    // The Python SDK warns "Session termination failed" on anything but 200, 204 or 405.
    let status = end_session(&s.http, &direct, None).await;
    assert!(
        matches!(status, 200 | 204),
        "demo upstream DELETE: {status}"
    );
    let status = end_session(&s.http, &s.mcp_url(), Some(AGENT_TOKEN)).await;
    assert_eq!(
        status, 204,
        "the gateway relays the upstream's answer as is"
    );
}
