//! Tasks on the wire, in both dialects: who may take one, what a task looks like at a given
//! moment (derived from its ticket and its stored answer), and the gateway's advertising of
//! task support in `initialize`, `server/discover` and `tools/list`. Pure: it takes `now`.

use std::time::Duration;

use airlock_shared::TicketStatus;
use airlock_shared::ticket::Ticket;
use airlock_shared::ticket::task::TaskRow;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::error::CallError;
use crate::policy::Policy;

/// The extension's identifier (2026-07-28), in capabilities.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";
/// Where a 2026-07-28 request carries its per-request client capabilities.
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key that ties a message to its task.
pub const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
/// What a 2025-11-25 host may hand its model while the task waits.
const IMMEDIATE_RESPONSE: &str = "io.modelcontextprotocol/model-immediate-response";
/// Every task id the gateway issues starts so; other ids are the upstream's own tasks.
pub const ID_PREFIX: &str = "airlock-task-";

/// The protocol revision whose task dialect a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-11-25: `params.task`, `tasks/get` + `tasks/result`, `ttl` and `pollInterval`.
    Classic,
    /// 2026-07-28 with the `io.modelcontextprotocol/tasks` extension: `resultType: "task"`,
    /// the outcome inline in `tasks/get`, `ttlMs` and `pollIntervalMs`.
    Extension,
}

impl Era {
    /// The spelling stored on the task row.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Extension => "extension",
        }
    }

    /// The era a stored task row was made in.
    pub fn of_row(era: &str) -> Self {
        match era {
            "extension" => Self::Extension,
            _ => Self::Classic,
        }
    }
}

/// A fresh task id: unguessable (122 random bits), and marked as the gateway's own.
pub fn new_id() -> String {
    format!("{ID_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// Whether the 2025-11-25 request asks for a task (`params.task`, an object).
pub fn asks_classic(params: &Value) -> bool {
    params.get("task").is_some_and(Value::is_object)
}

/// Whether the 2026-07-28 request's per-request capabilities include the extension.
pub fn declares_extension(params: &Value) -> bool {
    params
        .pointer(&format!(
            "/_meta/{}/extensions",
            CLIENT_CAPABILITIES.replace('/', "~1")
        ))
        .and_then(|e| e.get(EXTENSION))
        .is_some()
}

/// The task the request names, if it is one of the gateway's.
pub fn own_task_id(params: &Value) -> Option<&str> {
    params
        .get("taskId")
        .and_then(Value::as_str)
        .filter(|id| id.starts_with(ID_PREFIX))
}

/// Task settings that show on the wire.
#[derive(Clone, Copy, Debug)]
pub struct Shown {
    /// How long an ended task is kept (added to the ticket's expiry for the TTL).
    pub retention: Duration,
}

/// What a task is at one moment.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Waiting for a person, or approved and running.
    Working(String),
    /// The upstream answered with a result.
    Completed(Value),
    /// The task failed with this JSON-RPC error object (a denial, an expiry, the upstream's).
    Failed { error: Value, message: String },
    /// Cancelled: by the client, or because the caller went away; the error says so.
    Cancelled(Value),
}

impl State {
    /// The status word of both dialects; a 2025-11-25 tool result with `isError` is `failed`
    /// there, `completed` in the extension.
    pub fn status(&self, era: Era) -> &'static str {
        match (self, era) {
            (Self::Working(_), _) => "working",
            (Self::Completed(r), Era::Classic) if is_tool_error(r) => "failed",
            (Self::Completed(_), _) => "completed",
            (Self::Failed { .. }, _) => "failed",
            (Self::Cancelled(_), _) => "cancelled",
        }
    }

    /// Whether the task is over.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Working(_))
    }
}

fn is_tool_error(result: &Value) -> bool {
    result.get("isError").and_then(Value::as_bool) == Some(true)
}

fn hhmm(t: DateTime<Utc>) -> String {
    t.format("%H:%M UTC").to_string()
}

/// Who may decide, as the status message names them.
fn approvers(t: &Ticket) -> String {
    let names: Vec<String> = t.approvers.iter().map(|a| format!("@{a}")).collect();
    let groups = t.approver_groups.iter().map(|g| format!("@{g}"));
    let all: Vec<String> = names.into_iter().chain(groups).collect();
    match all.len() {
        0 => "a person in Slack".to_owned(),
        1 => all[0].clone(),
        n => format!("{} or {}", all[..n - 1].join(", "), all[n - 1]),
    }
}

/// The error of a ticket that ended without running, as today's held call gets it.
fn ticket_error(t: &Ticket) -> Option<CallError> {
    let (rule, ticket) = (t.rule.clone(), t.id);
    match t.status {
        TicketStatus::Denied => Some(CallError::ApprovalDenied {
            rule,
            ticket,
            decided_by: t.decided_by_name.clone().or(t.decided_by_id.clone()),
        }),
        TicketStatus::Expired => Some(CallError::ApprovalTimeout { rule, ticket }),
        TicketStatus::Cancelled => Some(CallError::ApprovalCancelled { rule, ticket }),
        TicketStatus::Pending | TicketStatus::Approved | TicketStatus::Executed => None,
    }
}

/// The JSON-RPC `error` object of a call error.
pub fn error_object(e: &CallError) -> Value {
    e.to_jsonrpc(&Value::Null)["error"].clone()
}

/// What the task is now: its stored answer first (written once), else what its ticket says.
pub fn state(task: &TaskRow, ticket: &Ticket, now: DateTime<Utc>) -> State {
    let stored = task.response.clone().unwrap_or(Value::Null);
    match task.outcome.as_deref() {
        Some("result") => return State::Completed(stored),
        Some("error") => {
            let said = stored.get("message").and_then(Value::as_str);
            let why = stored.pointer("/data/why").and_then(Value::as_str);
            let message = match (said, why) {
                (Some(m), Some(w)) => format!("{m}: {w}"),
                (Some(m), None) => m.to_owned(),
                (None, _) => "the call failed".to_owned(),
            };
            return State::Failed {
                error: stored,
                message,
            };
        }
        Some(_) => {
            let e = CallError::ApprovalCancelled {
                rule: ticket.rule.clone(),
                ticket: ticket.id,
            };
            return State::Cancelled(error_object(&e));
        }
        None => {}
    }
    match ticket_error(ticket) {
        Some(e @ CallError::ApprovalCancelled { .. }) => State::Cancelled(error_object(&e)),
        Some(e) => State::Failed {
            message: format!("{e} (ticket {})", ticket.id),
            error: error_object(&e),
        },
        None if ticket.status == TicketStatus::Pending && ticket.expires_at <= now => {
            // The deadline passed and nobody has closed it yet: it can no longer be approved.
            State::Working(format!("approval expired at {}", hhmm(ticket.expires_at)))
        }
        None if ticket.status == TicketStatus::Pending => State::Working(format!(
            "waiting for approval by {} (expires {})",
            approvers(ticket),
            hhmm(ticket.expires_at)
        )),
        None => {
            let by = ticket
                .decided_by_name
                .as_deref()
                .or(ticket.decided_by_id.as_deref())
                .map(|b| format!(" by @{b}"))
                .unwrap_or_default();
            State::Working(format!("approved{by}; running the call"))
        }
    }
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The task's TTL in milliseconds: it lives until its ticket expires, plus the retention.
fn ttl_ms(task: &TaskRow, ticket: &Ticket, shown: Shown) -> i64 {
    let until_expiry = (ticket.expires_at - task.created_at)
        .num_milliseconds()
        .max(0);
    let retention = i64::try_from(shown.retention.as_millis()).unwrap_or(i64::MAX);
    until_expiry.saturating_add(retention)
}

/// The task object at `now` in `era`'s spelling, with the outcome inline for the extension.
pub fn task_object(
    task: &TaskRow,
    ticket: &Ticket,
    state: &State,
    shown: Shown,
    era: Era,
) -> Value {
    let message = match state {
        State::Working(m) => m.clone(),
        State::Completed(_) => "the approved call completed".to_owned(),
        State::Failed { message, .. } => message.clone(),
        State::Cancelled(_) => "the task was cancelled; the call did not run".to_owned(),
    };
    let mut o = json!({
        "taskId": task.task_id,
        "status": state.status(era),
        "statusMessage": message,
        "createdAt": iso(task.created_at),
        "lastUpdatedAt": iso(task.updated_at.max(ticket.decided_at.unwrap_or(task.updated_at))),
    });
    let (ttl, poll) = (ttl_ms(task, ticket, shown), task.poll_interval_ms);
    match era {
        Era::Classic => {
            o["ttl"] = json!(ttl);
            o["pollInterval"] = json!(poll);
        }
        Era::Extension => {
            o["ttlMs"] = json!(ttl);
            o["pollIntervalMs"] = json!(poll);
            match state {
                State::Completed(r) => o["result"] = r.clone(),
                State::Failed { error, .. } => o["error"] = error.clone(),
                State::Working(_) | State::Cancelled(_) => {}
            }
        }
    }
    o
}

/// The answer to the task-augmented `tools/call` itself (`CreateTaskResult`).
pub fn create_result(task: Value, era: Era) -> Value {
    match era {
        Era::Classic => {
            let note = format!(
                "The call is waiting for a person's approval ({}); poll the task for its result.",
                task["statusMessage"].as_str().unwrap_or_default()
            );
            json!({ "task": task, "_meta": { IMMEDIATE_RESPONSE: note } })
        }
        Era::Extension => {
            let mut t = task;
            t["resultType"] = json!("task");
            t
        }
    }
}

/// The result of a 2025-11-25 `tasks/get` (the task at top level) or a 2026-07-28 one
/// (`resultType: "complete"` beside it).
pub fn get_result(task: Value, era: Era) -> Value {
    let mut t = task;
    if era == Era::Extension {
        t["resultType"] = json!("complete");
    }
    t
}

/// The 2025-11-25 `tasks/result` answer of an ended task: the result with its task named in
/// `_meta`, or the error the call would have got.
pub fn final_answer(id: &Value, state: &State, task_id: &str) -> Value {
    match state {
        State::Completed(r) => {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                let meta = o.entry("_meta").or_insert_with(|| json!({}));
                meta[RELATED_TASK] = json!({ "taskId": task_id });
            }
            json!({ "jsonrpc": "2.0", "id": id, "result": r })
        }
        State::Failed { error, .. } | State::Cancelled(error) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": error })
        }
        State::Working(_) => json!({ "jsonrpc": "2.0", "id": id, "error": {
            "code": -32603, "message": "task has not ended" } }),
    }
}

/// Adds the gateway's task support to an `initialize` result (2025-11-25): task-augmented
/// `tools/call`, `tasks/list` and `tasks/cancel`, beside whatever the upstream declares.
pub fn advertise_initialize(result: &mut Value) {
    let Some(caps) = result
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let tasks = caps.entry("tasks").or_insert_with(|| json!({}));
    if let Some(t) = tasks.as_object_mut() {
        // `tasks/list` lists the gateway's tasks, then the upstream's (`task::list`).
        t.entry("list").or_insert_with(|| json!({}));
        t.entry("cancel").or_insert_with(|| json!({}));
        let requests = t.entry("requests").or_insert_with(|| json!({}));
        if let Some(r) = requests.as_object_mut() {
            let tools = r.entry("tools").or_insert_with(|| json!({}));
            if let Some(tools) = tools.as_object_mut() {
                tools.entry("call").or_insert_with(|| json!({}));
            }
        }
    }
}

/// Adds the extension to a `server/discover` result's capabilities (2026-07-28).
pub fn advertise_discover(result: &mut Value) {
    let Some(caps) = result
        .get_mut("capabilities")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let ext = caps.entry("extensions").or_insert_with(|| json!({}));
    if let Some(e) = ext.as_object_mut() {
        e.entry(EXTENSION).or_insert_with(|| json!({}));
    }
}

/// Marks every listed tool that policy may hold with `execution.taskSupport: "optional"`
/// (2025-11-25), whatever the upstream says: the gateway serves those holds as tasks itself.
pub fn mark_tools(policy: &Policy, result: &mut Value) {
    let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
        return;
    };
    for t in tools.iter_mut() {
        let held = t
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| policy.may_need_approval(n));
        if held && let Some(obj) = t.as_object_mut() {
            let exec = obj.entry("execution").or_insert_with(|| json!({}));
            if let Some(e) = exec.as_object_mut() {
                e.insert("taskSupport".into(), json!("optional"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_shared::TicketId;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, h, m, 0).unwrap()
    }

    fn ticket(status: TicketStatus) -> Ticket {
        serde_json::from_value(json!({
            "id": TicketId::new(), "status": status, "principal": "bot", "session_id": "s",
            "tool": "create_refund", "arguments": {}, "rule": "big refunds", "reason": null,
            "approvers": ["alice", "bob"], "slack_channel": null, "request_hash": "h",
            "created_at": at(14, 22), "expires_at": at(14, 32), "decided_at": null,
            "decided_by_id": "U1", "decided_by_name": "carol", "message_channel": null,
            "message_ts": null, "executed_at": null, "notify_error": null, "message_status": null,
            "approvals_needed": 1, "approved_by_ids": [], "approved_by_names": [], "owner": null,
            "fingerprint": null, "policy_revision": null, "approver_groups": [],
            "grant_for_secs": null, "grant_scope": null, "grant_rule_hash": null,
        }))
        .unwrap()
    }

    fn row(t: &Ticket, outcome: Option<&str>, response: Option<Value>) -> TaskRow {
        TaskRow {
            task_id: new_id(),
            ticket_id: t.id,
            principal: "bot".into(),
            era: "classic".into(),
            session_id: None,
            request: json!({}),
            headers: json!({}),
            poll_interval_ms: 2000,
            created_at: at(14, 22),
            updated_at: at(14, 22),
            outcome: outcome.map(str::to_owned),
            response,
            ended_at: None,
        }
    }

    #[test]
    fn a_pending_task_names_who_may_decide_and_the_expiry() {
        let t = ticket(TicketStatus::Pending);
        let s = state(&row(&t, None, None), &t, at(14, 23));
        assert_eq!(
            s,
            State::Working("waiting for approval by @alice or @bob (expires 14:32 UTC)".into())
        );
        let shown = Shown {
            retention: Duration::from_secs(60),
        };
        let o = task_object(&row(&t, None, None), &t, &s, shown, Era::Classic);
        assert_eq!(
            o["ttl"], 660_000,
            "ten minutes to expiry plus the retention"
        );
        assert_eq!(o["pollInterval"], 2000);
        let e = task_object(&row(&t, None, None), &t, &s, shown, Era::Extension);
        assert_eq!((e["ttlMs"].clone(), e.get("ttl")), (json!(660_000), None));
    }

    #[test]
    fn ended_tickets_fail_with_the_errors_held_calls_get() {
        let denied = ticket(TicketStatus::Denied);
        match state(&row(&denied, None, None), &denied, at(14, 23)) {
            State::Failed { error, .. } => {
                assert_eq!(error["code"], -32001);
                assert_eq!(error["message"], "approval denied");
                assert_eq!(error["data"]["decided_by"], "carol");
            }
            other => panic!("{other:?}"),
        }
        let cancelled = ticket(TicketStatus::Cancelled);
        let s = state(&row(&cancelled, None, None), &cancelled, at(14, 23));
        assert_eq!(s.status(Era::Classic), "cancelled");
        // A stored cancel wins over what the ticket says (it stays cancelled).
        let executed = ticket(TicketStatus::Executed);
        let s = state(
            &row(&executed, Some("cancelled"), None),
            &executed,
            at(14, 23),
        );
        assert_eq!(s.status(Era::Extension), "cancelled");
    }

    #[test]
    fn a_tool_error_is_failed_in_2025_11_25_and_completed_in_the_extension() {
        let t = ticket(TicketStatus::Executed);
        let r = json!({"content": [], "isError": true});
        let s = state(&row(&t, Some("result"), Some(r.clone())), &t, at(14, 23));
        assert_eq!(
            (s.status(Era::Classic), s.status(Era::Extension)),
            ("failed", "completed")
        );
        let answer = final_answer(&json!(4), &s, "airlock-task-x");
        assert_eq!(answer["result"]["isError"], true);
        assert_eq!(
            answer["result"]["_meta"][RELATED_TASK]["taskId"],
            "airlock-task-x"
        );
    }

    #[test]
    fn who_asks_for_a_task() {
        assert!(asks_classic(&json!({"task": {"ttl": 1000}})));
        assert!(!asks_classic(&json!({"task": true})));
        let caps = json!({"_meta": {CLIENT_CAPABILITIES: {"extensions": {EXTENSION: {}}}}});
        assert!(declares_extension(&caps));
        assert!(!declares_extension(
            &json!({"_meta": {CLIENT_CAPABILITIES: {}}})
        ));
        assert_eq!(
            own_task_id(&json!({"taskId": "up-1"})),
            None,
            "the upstream's own task"
        );
        let id = new_id();
        assert_eq!(own_task_id(&json!({ "taskId": id })), Some(id.as_str()));
    }

    #[test]
    fn held_tools_are_marked_optional_whatever_the_upstream_says() {
        let p = Policy::parse(
            "version: 1\ndefault: allow\nrules:\n  - { name: r, tools: [\"pay\"], action: approve }\n",
        )
        .unwrap();
        let mut listed = json!({"tools": [
            {"name": "pay", "execution": {"taskSupport": "forbidden"}},
            {"name": "read"},
        ]});
        mark_tools(&p, &mut listed);
        assert_eq!(listed["tools"][0]["execution"]["taskSupport"], "optional");
        assert_eq!(listed["tools"][1].get("execution"), None);
        let mut init = json!({"capabilities": {"tools": {}}});
        advertise_initialize(&mut init);
        assert_eq!(
            init["capabilities"]["tasks"],
            json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
        );
    }
}
