//! Two people in a browser: the demo's `approvals: 2` rule (refunds over 1000), clicked through
//! on the emulator's page. The first approval only shows progress ("1 of 2") and keeps the
//! buttons; the second approves, and the held call runs exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser::{Driver, Session, WAIT, chromium_session};
use crate::stack::*;

const BOB: &str = "U0BOB";

impl Session<'_> {
    /// Picks who the page acts as.
    async fn act_as(&self, user: &str) {
        let option = self
            .wait_for(&format!("#user option[value='{user}']"))
            .await;
        self.click(&option).await;
    }

    /// Waits until the message's text satisfies `done`, and returns it.
    async fn wait_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = match self.find(css).await {
                Some(e) => self.text(&e).await,
                None => String::new(),
            };
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A headless Chromium session on `url`.
async fn open(driver: &Driver, url: String) -> String {
    let id = chromium_session(driver).await;
    driver
        .post(&format!("/session/{id}/url"), json!({"url": url}))
        .await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_approve_in_a_browser_and_the_call_runs_once() {
    let s = Stack::start().await;
    let client = s.client().await;
    let peer = client.peer().clone();
    let mut held = tokio::spawn(async move {
        peer.call_tool(call(
            "create_refund",
            json!({"charge_id": "ch_1003", "amount": 1100, "currency": "eur"}),
        ))
        .await
    });
    let msgs = s.wait_messages(1, WAIT).await;
    let ts = msgs[0]["ts"].as_str().unwrap().to_owned();

    let driver = Driver::start().await;
    let id = open(&driver, s.emulator_url()).await;
    let page = Session {
        d: &driver,
        id: id.clone(),
    };
    let msg_css = format!(".msg[data-ts='{ts}']");
    let approve_css = format!("{msg_css} button[data-action-id='{APPROVE}']");

    // The first approver: the message shows the progress and keeps its buttons.
    page.act_as(ALICE).await;
    let before = page
        .wait_text(&msg_css, "the request", |t| t.contains("create_refund"))
        .await;
    assert!(before.contains("1100"), "page shows: {before}");
    let approve = page.wait_for(&approve_css).await;
    page.click(&approve).await;
    let progress = page
        .wait_text(&msg_css, "1 of 2", |t| t.contains("1 of 2"))
        .await;
    assert!(progress.contains("@alice"), "page shows: {progress}");
    assert!(
        page.find(&approve_css).await.is_some(),
        "buttons stay until the quorum"
    );
    // One approval runs nothing: the call still waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "one approval of two must not run the call"
    );
    assert!(s.executed().await.is_empty());

    // The second approver, in the same page: the call runs, once.
    page.act_as(BOB).await;
    let approve = page.wait_for(&approve_css).await;
    page.click(&approve).await;
    let r = tokio::time::timeout(WAIT, &mut held)
        .await
        .expect("the held call completes")
        .unwrap();
    result_json(&r.expect("approved by two people in the browser"));
    assert_eq!(s.executed().await.len(), 1, "two approvals, one execution");

    let after = page
        .wait_text(&msg_css, "the approval", |t| {
            t.contains("Approved") && t.contains("@alice") && t.contains("@bob")
        })
        .await;
    assert!(
        page.find(&format!("{msg_css} button")).await.is_none(),
        "buttons gone once decided: {after}\n{}",
        s.logs()
    );
    assert_eq!(s.executed().await.len(), 1);
    let _ = driver
        .http
        .delete(format!("{}/session/{id}", driver.base))
        .send()
        .await;
    drop(driver.process);
}
