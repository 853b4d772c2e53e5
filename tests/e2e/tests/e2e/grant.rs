//! A standing grant end to end: a person clicks "Approve for 1 h" in a browser on the emulator's
//! page (and confirms), the held bulk read runs, and a second bulk read passes at once with no
//! new Slack message; the decided message offers Revoke, and a Revoke click holds the next one.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::{Driver, Session, WAIT, chromium_session};
use crate::stack::*;

const GRANT: &str = "airlock_approve_for";
const REVOKE: &str = "airlock_revoke_grant";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_for_an_hour_in_a_browser_lets_the_next_call_pass() {
    let s = Stack::start().await;
    let client = s.client().await;
    let held = s
        .hold(&client, call("list_charges", json!({"limit": 60})), WAIT)
        .await;

    let driver = Driver::start().await;
    let id = chromium_session(&driver).await;
    let page = Session {
        d: &driver,
        id: id.clone(),
    };
    driver
        .post(
            &format!("/session/{id}/url"),
            json!({"url": s.emulator_url()}),
        )
        .await;
    let alice = page
        .wait_for(&format!("#user option[value='{ALICE}']"))
        .await;
    page.click(&alice).await;
    let msg_css = format!(".msg[data-ts='{}']", held.ts);
    let grant = page
        .wait_for(&format!("{msg_css} button[data-action-id='{GRANT}']"))
        .await;
    assert_eq!(page.text(&grant).await, "Approve for 1 h");
    page.click(&grant).await;
    let confirm = page.wait_for("#m-confirm").await;
    page.click(&confirm).await;

    let first = tokio::time::timeout(WAIT, held.call)
        .await
        .expect("the held call completes")
        .unwrap();
    result_json(&first.expect("approved in the browser"));

    // The second bulk read passes on the grant: no new message, and it answers at once.
    let started = Instant::now();
    let second = client
        .peer()
        .call_tool(call("list_charges", json!({"limit": 70})))
        .await
        .expect("passes on the grant");
    result_json(&second);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.messages().await.len(), 1, "no new approval message");

    // The decided message shows the grant and a Revoke button; a Revoke holds the next call.
    let m = s
        .wait_message(&held.ts, WAIT, "approved with a grant", |m| {
            m.to_string().contains("Grant active until") && m.to_string().contains(REVOKE)
        })
        .await;
    assert!(m.to_string().contains("Approved"));
    s.click(ALICE, &held.ts, REVOKE).await;
    s.wait_message(&held.ts, WAIT, "revoked", |m| {
        m.to_string().contains("Grant revoked by")
    })
    .await;
    let third = spawn_call(&client, call("list_charges", json!({"limit": 80})));
    s.wait_messages(2, WAIT).await;
    assert!(!third.is_finished(), "held again after the revoke");
    third.abort();
    let _ = driver
        .http
        .delete(format!("{}/session/{id}", driver.base))
        .send()
        .await;
    drop(driver.process);
}
