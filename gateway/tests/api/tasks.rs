//! Held calls served as MCP tasks: 2025-11-25 (`params.task`, `tasks/get`, `tasks/result`,
//! `tasks/cancel`) and the 2026-07-28 extension (`resultType: "task"`, outcome inline in
//! `tasks/get`), each approved, denied, expired and cancelled; polls bound to the principal;
//! an oversized result; and any replica answering.

use std::time::Duration;

use airlock_shared::ticket::Decision;
use airlock_shared::{NotifyJob, TicketId, TicketStatus};
use serde_json::{Value, json};

use super::helpers::*;

const CLASSIC: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

/// A client of one dialect, as one agent.
pub struct Client<'a> {
    pub url: String,
    pub token: &'a str,
    /// The 2025-11-25 session; `None`: a 2026-07-28 client.
    pub session: Option<String>,
    /// A 2026-07-28 client that declares the extension on its requests.
    pub declares: bool,
}

impl<'a> Client<'a> {
    /// A 2025-11-25 client with a session of its own.
    pub async fn classic(url: String, token: &'a str) -> Self {
        let mut c = Self {
            url,
            token,
            session: None,
            declares: false,
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": CLASSIC, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let resp = c.raw(&init).await;
        assert_eq!(resp.status(), 200);
        c.session = Some(
            resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let caps = read_answer(resp).await.body["result"]["capabilities"].clone();
        assert_eq!(
            caps["tasks"]["requests"]["tools"]["call"],
            json!({}),
            "{caps}"
        );
        assert_eq!(caps["tasks"]["cancel"], json!({}), "{caps}");
        assert_eq!(caps["tasks"]["list"], json!({}), "{caps}");
        c
    }

    /// A 2026-07-28 client that declares the extension.
    pub fn modern(url: String, token: &'a str) -> Self {
        Self {
            url,
            token,
            session: None,
            declares: true,
        }
    }

    pub async fn raw(&self, body: &Value) -> reqwest::Response {
        let mut r = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(self.token)
            .header("content-type", "application/json")
            .header("accept", BOTH);
        match &self.session {
            Some(s) => {
                r = r
                    .header("mcp-session-id", s)
                    .header("mcp-protocol-version", CLASSIC)
            }
            None if body["method"] == "initialize" => {}
            None => {
                r = r.header("mcp-protocol-version", MODERN);
                if let Some(m) = body["method"].as_str() {
                    r = r.header("mcp-method", m);
                }
                let name = body
                    .pointer("/params/name")
                    .or(body.pointer("/params/taskId"));
                if let Some(n) = name.and_then(Value::as_str) {
                    r = r.header("mcp-name", n);
                }
            }
        }
        r.body(body.to_string()).send().await.unwrap()
    }

    /// Sends `method` with `params` (the 2026-07-28 `_meta` envelope added) and reads the answer.
    pub async fn rpc(&self, id: i64, method: &str, mut params: Value) -> Answer {
        if self.session.is_none() {
            let caps = match self.declares {
                true => json!({"extensions": {"io.modelcontextprotocol/tasks": {}}}),
                false => json!({}),
            };
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": caps,
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
            });
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        read_answer(self.raw(&body).await).await
    }

    /// A held refund asked as a task; returns the task object of the answer.
    pub async fn create(&self, amount: u64, note: &str) -> Value {
        let mut params =
            json!({"name": "create_refund", "arguments": {"amount": amount, "note": note}});
        if self.session.is_some() {
            params["task"] = json!({"ttl": 60_000});
        }
        let a = self.rpc(1, "tools/call", params).await;
        let r = a.body["result"].clone();
        assert!(r.is_object(), "no task: {:?}", a.body);
        match self.session {
            Some(_) => r["task"].clone(),
            None => {
                assert_eq!(r["resultType"], "task", "{:?}", a.body);
                r
            }
        }
    }

    pub async fn get(&self, task: &str) -> Answer {
        self.rpc(2, "tasks/get", json!({"taskId": task})).await
    }

    /// Polls until the task's status is `status`; the last `tasks/get` result.
    pub async fn until(&self, task: &str, status: &str) -> Value {
        let seen = eventually(Duration::from_secs(15), || async {
            let r = self.get(task).await.body["result"].clone();
            (r["status"] == status).then_some(r)
        })
        .await;
        match seen {
            Some(r) => r,
            None => panic!(
                "task {task} never {status}: {:?}",
                self.get(task).await.body
            ),
        }
    }
}

fn ttl_field(c: &Client) -> &'static str {
    if c.session.is_some() { "ttl" } else { "ttlMs" }
}

async fn tool_list_marks_held_tools(app: &TestApp, c: &Client<'_>) {
    let list = c.rpc(9, "tools/list", json!({})).await;
    let tools = list.body["result"]["tools"].as_array().unwrap().clone();
    let support = |n: &str| {
        tools.iter().find(|t| t["name"] == n).unwrap()["execution"]["taskSupport"].clone()
    };
    assert_eq!(support("create_refund"), "optional", "{tools:?}");
    assert_eq!(
        support("list_charges"),
        Value::Null,
        "never held: untouched"
    );
    assert_eq!(app.upstream.call_count(), 0);
}

/// Approved: the answer comes at once (working, who may decide, the expiry, TTL, poll
/// interval), the upstream runs once after approval, and every poll gets the same result.
async fn approved(app: &TestApp, c: &Client<'_>) {
    let t = c.create(500, "approved").await;
    let id = t["taskId"].as_str().unwrap().to_owned();
    assert_eq!(t["status"], "working", "{t}");
    let msg = t["statusMessage"].as_str().unwrap();
    assert!(
        msg.starts_with("waiting for approval by @U0123ABCD (expires "),
        "{msg}"
    );
    assert!(t[ttl_field(c)].as_i64().unwrap() > 30_000, "{t}");
    assert!(
        t.get("pollInterval").or(t.get("pollIntervalMs")).is_some(),
        "{t}"
    );
    assert_eq!(c.get(&id).await.body["result"]["status"], "working");
    assert_eq!(app.upstream.call_count(), 0, "nothing runs before approval");
    app.approve_next(0).await;
    let done = c.until(&id, "completed").await;
    let result = match &c.session {
        Some(_) => {
            let r = c.rpc(3, "tasks/result", json!({"taskId": id})).await;
            let meta = &r.body["result"]["_meta"]["io.modelcontextprotocol/related-task"];
            assert_eq!(meta["taskId"], json!(id), "{:?}", r.body);
            r.tool_text()
        }
        None => {
            assert_eq!(done["resultType"], "complete");
            let text = done["result"]["content"][0]["text"].as_str().unwrap();
            serde_json::from_str(text).unwrap()
        }
    };
    assert_eq!(result["arguments"]["note"], "approved", "{result}");
    // Every later poll: the same stored answer, and still one upstream call.
    let again = c.until(&id, "completed").await;
    assert_eq!(again.get("result"), done.get("result"));
    assert_eq!(app.upstream.call_count(), 1);
}

async fn fails_with(c: &Client<'_>, id: &str, status: &str, message: &str) {
    let r = c.until(id, status).await;
    let error = match &c.session {
        Some(_) => c.rpc(4, "tasks/result", json!({"taskId": id})).await.body["error"].clone(),
        None if status == "failed" => r["error"].clone(),
        None => return,
    };
    assert_eq!(error["code"], -32001, "{error}");
    assert_eq!(error["message"], message, "{error}");
}

async fn denied(app: &TestApp, c: &Client<'_>) {
    let id = c.create(600, "denied").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let ticket = wait_for_request(&app.redis, 1).await;
    decide(&app.db, &app.redis, ticket, Decision::Deny, true).await;
    fails_with(c, &id, "failed", "approval denied").await;
    assert_eq!(app.upstream.call_count(), 1, "the denied call never ran");
}

async fn cancelled(app: &TestApp, c: &Client<'_>) {
    let id = c.create(700, "cancelled").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let ticket = wait_for_request(&app.redis, 2).await;
    let a = c.rpc(5, "tasks/cancel", json!({"taskId": id})).await;
    match &c.session {
        Some(_) => assert_eq!(a.body["result"]["status"], "cancelled", "{:?}", a.body),
        None => assert_eq!(
            a.body["result"],
            json!({"resultType": "complete"}),
            "{:?}",
            a.body
        ),
    }
    assert_eq!(app.ticket(ticket).await.status, TicketStatus::Cancelled);
    let closed = eventually(Duration::from_secs(5), || async {
        app.jobs()
            .await
            .contains(&NotifyJob::TicketClosed { ticket_id: ticket })
            .then_some(())
    })
    .await;
    assert!(closed.is_some(), "the Slack message is updated");
    fails_with(c, &id, "cancelled", "approval cancelled").await;
    if c.session.is_some() {
        let again = c.rpc(6, "tasks/cancel", json!({"taskId": id})).await;
        assert_eq!(again.code(), Some(-32602), "{:?}", again.body);
    }
    // An approval after the cancel decides nothing.
    let late = decide(&app.db, &app.redis, ticket, Decision::Approve, true).await;
    assert!(!matches!(late, airlock_shared::ticket::Decided::Changed(_)));
    assert_eq!(app.upstream.call_count(), 1);
}

async fn other_principal_sees_nothing(app: &TestApp, c: &Client<'_>) {
    let id = c.create(800, "mine").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = match &c.session {
        Some(_) => Client::classic(app.url(), OTHER_TOKEN).await,
        None => Client::modern(app.url(), OTHER_TOKEN),
    };
    for method in ["tasks/get", "tasks/cancel"] {
        let a = other.rpc(7, method, json!({"taskId": id})).await;
        assert_eq!(a.code(), Some(-32602), "{method}: {:?}", a.body);
        assert!(a.message().contains("not found"), "{:?}", a.body);
    }
    assert_eq!(c.get(&id).await.body["result"]["status"], "working");
}

async fn tasks_app(timeout: Duration, max_result: usize) -> TestApp {
    let mut opts = Opts {
        approval_timeout: timeout,
        ..Opts::default()
    };
    opts.tasks.max_result_bytes = max_result;
    spawn_with(opts).await
}

#[tokio::test]
async fn classic_tasks_approved_denied_cancelled_and_bound_to_their_principal() {
    let app = tasks_app(Duration::from_secs(30), 1 << 20).await;
    let c = Client::classic(app.url(), BILLING_TOKEN).await;
    tool_list_marks_held_tools(&app, &c).await;
    approved(&app, &c).await;
    denied(&app, &c).await;
    cancelled(&app, &c).await;
    other_principal_sees_nothing(&app, &c).await;
    let m = app.metrics().await;
    for line in [
        "airlock_tasks_created_total 4",
        "airlock_tasks_ended_total{status=\"completed\"} 1",
        "airlock_tasks_ended_total{status=\"failed\"} 1",
        "airlock_tasks_ended_total{status=\"cancelled\"} 1",
        "airlock_task_decision_seconds_count 3",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
    let rows = eventually(Duration::from_secs(5), || async {
        let r = airlock_shared::audit::tasks_for_principal(&app.db.pool, "billing-bot")
            .await
            .unwrap();
        (r.len() == 5).then_some(r)
    })
    .await
    .expect("an audit row per task made, and one for the approved run");
    let outcomes: Vec<&str> = rows.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "task").count(),
        4,
        "{rows:?}"
    );
    assert!(outcomes.contains(&"approved"), "{rows:?}");
}

#[tokio::test]
async fn extension_tasks_approved_denied_cancelled_and_bound_to_their_principal() {
    let app = tasks_app(Duration::from_secs(30), 1 << 20).await;
    let c = Client::modern(app.url(), BILLING_TOKEN);
    approved(&app, &c).await;
    denied(&app, &c).await;
    cancelled(&app, &c).await;
    other_principal_sees_nothing(&app, &c).await;
    // Without the extension in its capabilities a client may not poll (-32021).
    let id = c.create(900, "undeclared").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let plain = Client {
        declares: false,
        ..Client::modern(app.url(), BILLING_TOKEN)
    };
    assert_eq!(plain.get(&id).await.code(), Some(-32021));
}

#[tokio::test]
async fn extension_is_advertised_on_discover() {
    let app = spawn_app().await;
    let c = Client::modern(app.url(), BILLING_TOKEN);
    let d = c.rpc(1, "server/discover", json!({})).await;
    let ext = &d.body["result"]["capabilities"]["extensions"]["io.modelcontextprotocol/tasks"];
    assert_eq!(*ext, json!({}), "{:?}", d.body);
}

#[tokio::test]
async fn tasks_expire_as_holds_do() {
    let app = tasks_app(Duration::from_secs(1), 1 << 20).await;
    for c in [
        Client::classic(app.url(), BILLING_TOKEN).await,
        Client::modern(app.url(), BILLING_TOKEN),
    ] {
        let id = c.create(500, "expires").await["taskId"]
            .as_str()
            .unwrap()
            .to_owned();
        fails_with(&c, &id, "failed", "approval timeout").await;
    }
    assert_eq!(app.upstream.call_count(), 0);
}

#[tokio::test]
async fn an_oversized_result_fails_the_task_clearly() {
    let app = tasks_app(Duration::from_secs(30), 2048).await;
    let c = Client::classic(app.url(), BILLING_TOKEN).await;
    let id = c.create(500, &"x".repeat(4096)).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.approve_next(0).await;
    let r = c.until(&id, "failed").await;
    assert!(
        r["statusMessage"]
            .as_str()
            .unwrap()
            .contains("over the limit of 2048"),
        "{r}"
    );
    let e = c.rpc(3, "tasks/result", json!({"taskId": id})).await;
    assert_eq!(e.code(), Some(-32603), "{:?}", e.body);
    assert_eq!(e.message(), "result too large");
    assert_eq!(
        app.upstream.call_count(),
        1,
        "it ran once; the answer was too big to keep"
    );
}

#[tokio::test]
async fn clients_that_ask_no_task_are_held_as_before() {
    let app = spawn_app().await;
    let c = Client::classic(app.url(), BILLING_TOKEN).await;
    let params = json!({"name": "create_refund", "arguments": {"amount": 500}});
    let (url, sid) = (app.url(), c.session.clone().unwrap());
    let held = tokio::spawn(async move {
        let c = Client {
            url,
            token: BILLING_TOKEN,
            session: Some(sid),
            declares: false,
        };
        c.rpc(1, "tools/call", params).await
    });
    app.approve_next(0).await;
    let a = held.await.unwrap();
    assert_eq!(a.tool_text()["tool"], "create_refund", "{:?}", a.body);
}

#[tokio::test]
async fn another_replica_answers_and_runs_an_approved_task_once() {
    let app = spawn_app().await;
    let (b_addr, b_stop, _b) = start_gateway(&app.second_config()).await;
    let c = Client::classic(app.url(), BILLING_TOKEN).await;
    let id = c.create(500, "replica").await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The same session, polled through the other replica.
    let on_b = Client {
        url: format!("http://{b_addr}/mcp"),
        ..Client::classic(app.url(), BILLING_TOKEN).await
    };
    let on_b = Client {
        session: c.session.clone(),
        ..on_b
    };
    assert_eq!(on_b.get(&id).await.body["result"]["status"], "working");
    let ticket: TicketId = app.approve_next(0).await;
    on_b.until(&id, "completed").await;
    let r = on_b.rpc(3, "tasks/result", json!({"taskId": id})).await;
    assert_eq!(
        r.tool_text()["arguments"]["note"],
        "replica",
        "{:?}",
        r.body
    );
    assert_eq!(app.upstream.call_count(), 1);
    assert_eq!(app.ticket(ticket).await.status, TicketStatus::Executed);
    b_stop.cancel();
}

/// Every page of `tasks/list`, following `nextCursor`; the task ids page by page.
async fn list_pages(c: &Client<'_>) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut params = json!({});
    loop {
        let a = c.rpc(11, "tasks/list", params.clone()).await;
        let r = &a.body["result"];
        let ids = r["tasks"]
            .as_array()
            .unwrap_or_else(|| panic!("no tasks: {:?}", a.body))
            .iter()
            .map(|t| t["taskId"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        match r["nextCursor"].as_str() {
            Some(next) => params = json!({"cursor": next}),
            None => return pages,
        }
        assert!(pages.len() < 10, "tasks/list never ends: {pages:?}");
    }
}

#[tokio::test]
async fn tasks_list_pages_the_callers_tasks_then_the_upstreams() {
    // More tasks than one page of the list, and than the usual session budget.
    let app = spawn_with(Opts {
        policy: POLICY.replace(
            "max_tool_calls_per_session: 50",
            "max_tool_calls_per_session: 500",
        ),
        approval_timeout: Duration::from_secs(30),
        ..Opts::default()
    })
    .await;
    let c = Client::classic(app.url(), BILLING_TOKEN).await;
    let mut mine = Vec::new();
    for n in 0..52 {
        let t = c.create(200 + n, &format!("list-{n}")).await;
        let id = t["taskId"]
            .as_str()
            .unwrap_or_else(|| panic!("task {n}: {t}"));
        mine.push(id.to_owned());
    }
    mine.sort();
    let pages = list_pages(&c).await;
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages[0].len(), 50, "a page holds 50 of the gateway's tasks");
    let listed: Vec<String> = pages.concat();
    let mut expected = mine.clone();
    expected.extend(["upstream-task-1".to_owned(), "upstream-task-2".to_owned()]);
    assert_eq!(
        listed, expected,
        "the gateway's tasks, then the upstream's two pages"
    );
    let first = c.rpc(12, "tasks/list", json!({})).await.body["result"]["tasks"][0].clone();
    assert_eq!(first["status"], "working", "{first}");
    assert!(first["pollInterval"].is_number(), "{first}");

    // Another agent lists none of these (only what its own upstream session has).
    let other = Client::classic(app.url(), OTHER_TOKEN).await;
    assert_eq!(
        list_pages(&other).await.concat(),
        vec!["upstream-task-1".to_owned(), "upstream-task-2".to_owned()]
    );
    // A cursor the gateway never gave is refused, and so is the upstream's own refusal.
    for cursor in ["page-2", "airlock.up.nonsense"] {
        let a = c.rpc(13, "tasks/list", json!({"cursor": cursor})).await;
        assert_eq!(a.code(), Some(-32602), "{cursor}: {:?}", a.body);
    }
}
