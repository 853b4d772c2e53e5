//! Task status pushed on `subscriptions/listen` (2026-07-28 extension): the acknowledgement
//! names only the caller's tasks, each status change arrives as the full task, and the
//! subscription closes gracefully once every listened task has ended.

use std::time::Duration;

use airlock_shared::ticket::Decision;
use serde_json::{Value, json};

use super::helpers::*;
use super::tasks::Client;

/// The JSON-RPC messages of an SSE stream, read one event at a time.
struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Events {
    /// The next message, or `None` when the stream ends; fails the test after 15 s.
    async fn next(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue; // a keepalive comment
                }
                return Some(serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("the listen stream went quiet")
                .unwrap();
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return None,
            }
        }
    }

    /// The next `notifications/tasks` for `task`, skipping other tasks' until `status`.
    async fn until(&mut self, task: &str, status: &str) -> Value {
        loop {
            let m = self.next().await.expect("the stream ended early");
            assert_eq!(m["method"], "notifications/tasks", "{m}");
            assert_eq!(
                m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 9,
                "{m}"
            );
            if m["params"]["taskId"] == task && m["params"]["status"] == status {
                return m["params"].clone();
            }
        }
    }
}

fn listen_body(ids: &[&str], declares: bool) -> Value {
    let caps = match declares {
        true => json!({"extensions": {"io.modelcontextprotocol/tasks": {}}}),
        false => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": 9, "method": "subscriptions/listen", "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": caps,
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        },
        "notifications": {"taskIds": ids},
    }})
}

async fn task_id(c: &Client<'_>, amount: u64, note: &str) -> String {
    c.create(amount, note).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn listened_tasks_are_pushed_until_they_end() {
    let app = spawn_app().await;
    let c = Client::modern(app.url(), BILLING_TOKEN);
    let other = Client::modern(app.url(), OTHER_TOKEN);
    let approved = task_id(&c, 1100, "to approve").await;
    let denied = task_id(&c, 1200, "to deny").await;
    let theirs = task_id(&other, 1300, "another agent's").await;
    let ids = [approved.as_str(), denied.as_str(), theirs.as_str()];
    let resp = c.raw(&listen_body(&ids, true)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = Events {
        resp,
        buf: Vec::new(),
    };
    let ack = events.next().await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    // Another agent's task is not acknowledged: to this caller it does not exist.
    assert_eq!(
        ack["params"]["notifications"]["taskIds"],
        json!([approved, denied])
    );
    let working = events.until(&approved, "working").await;
    assert!(
        working["statusMessage"]
            .as_str()
            .unwrap()
            .starts_with("waiting for approval"),
        "{working}"
    );
    events.until(&denied, "working").await;

    // Approval requests are enqueued in the order the tasks were made.
    app.approve_next(0).await;
    let done = events.until(&approved, "completed").await;
    let text = done["result"]["content"][0]["text"].as_str().unwrap();
    let result: Value = serde_json::from_str(text).unwrap();
    assert_eq!(result["arguments"]["note"], "to approve", "{done}");
    // What the push said is what a poll says.
    let polled = c.get(&approved).await.body["result"].clone();
    assert_eq!(polled["result"], done["result"]);

    let ticket = wait_for_request(&app.redis, 1).await;
    decide(&app.db, &app.redis, ticket, Decision::Deny, true).await;
    let failed = events.until(&denied, "failed").await;
    assert_eq!(failed["error"]["code"], -32001, "{failed}");

    // Both ended: the listen request is answered, and the stream closes.
    let end = events.next().await.expect("a graceful close");
    assert_eq!(end["id"], 9, "{end}");
    assert_eq!(end["result"]["resultType"], "complete", "{end}");
    assert_eq!(
        end["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    assert_eq!(events.next().await, None);
    assert_eq!(app.upstream.call_count(), 1, "only the approved call ran");
}

#[tokio::test]
async fn listening_to_tasks_needs_the_extension() {
    let app = spawn_app().await;
    let c = Client::modern(app.url(), BILLING_TOKEN);
    let id = task_id(&c, 1400, "listened without the extension").await;
    let a = read_answer(c.raw(&listen_body(&[&id], false)).await).await;
    assert_eq!(a.code(), Some(-32021), "{:?}", a.body);
    assert_eq!(
        a.body["error"]["data"]["requiredCapabilities"]["extensions"]["io.modelcontextprotocol/tasks"],
        json!({})
    );
}
