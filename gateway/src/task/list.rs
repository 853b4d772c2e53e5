//! `tasks/list` (2025-11-25): the caller's own tasks at the gateway first, then the upstream's
//! tasks, under one cursor, so that every task `tasks/get` finds through the gateway is listed.
//!
//! The gateway's cursors are `airlock.own.<last task id>` while its own tasks are paged, and
//! `airlock.up.<the upstream's cursor>` once the upstream's are; any other cursor is refused.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_shared::ticket::task;
use airlock_shared::ticket::{self as tickets};
use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::Tasks;
use super::wire::{self, Era};
use crate::answer::Whole;
use crate::caller::Caller;
use crate::error::upstream_error;

/// Lists tasks.
pub const LIST: &str = "tasks/list";

const OWN: &str = "airlock.own.";
const UP: &str = "airlock.up.";
/// How many of the gateway's own tasks one page holds.
const PAGE: usize = 50;

/// Where a `tasks/list` page starts.
#[derive(Debug, PartialEq)]
enum Cursor {
    /// The first page.
    Start,
    /// The gateway's own tasks after this task id.
    Own(String),
    /// The upstream's tasks from its cursor.
    Up(String),
}

impl Cursor {
    fn parse(params: &Value) -> Option<Self> {
        match params.get("cursor") {
            None | Some(Value::Null) => Some(Self::Start),
            Some(Value::String(c)) => {
                if let Some(after) = c.strip_prefix(OWN) {
                    Some(Self::Own(after.to_owned()))
                } else {
                    c.strip_prefix(UP).map(|up| Self::Up(up.to_owned()))
                }
            }
            Some(_) => None,
        }
    }
}

/// The upstream's page, as far as the gateway takes it.
enum UpPage {
    /// Its tasks, and the gateway's cursor for its next page.
    Tasks(Vec<Value>, Option<String>),
    /// The upstream lists no tasks (it does not offer `tasks/list`, or could not be asked).
    Nothing,
    /// The upstream refused a page the client asked for by cursor: its error, passed on.
    Refused(Value),
}

impl Tasks {
    /// Answers `tasks/list` in a 2025-11-25 session.
    pub async fn list(self: &Arc<Self>, caller: &Caller, id: &Value, params: &Value) -> Response {
        let body = match self.list_inner(caller, id, params).await {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(error) => json!({ "jsonrpc": "2.0", "id": id, "error": error }),
        };
        Json(body).into_response()
    }

    async fn list_inner(
        self: &Arc<Self>,
        caller: &Caller,
        id: &Value,
        params: &Value,
    ) -> Result<Value, Value> {
        let cursor = Cursor::parse(params).ok_or_else(
            || json!({ "code": -32602, "message": "Invalid params: unknown cursor" }),
        )?;
        let after = match cursor {
            Cursor::Up(up) => {
                return match self.upstream_page(caller, id, Some(up)).await {
                    UpPage::Tasks(tasks, next) => Ok(page(tasks, next)),
                    UpPage::Nothing => Ok(page(Vec::new(), None)),
                    UpPage::Refused(error) => Err(error),
                };
            }
            Cursor::Start => None,
            Cursor::Own(after) => Some(after),
        };
        let mut own = self.own_page(caller, after.as_deref()).await.map_err(|e| {
            tracing::error!(error = %e, "tasks/list: cannot read the caller's tasks");
            json!({ "code": -32603, "message": "internal error" })
        })?;
        if own.len() > PAGE {
            own.truncate(PAGE);
            let last = own
                .last()
                .and_then(|t| t["taskId"].as_str())
                .unwrap_or_default()
                .to_owned();
            return Ok(page(own, Some(format!("{OWN}{last}"))));
        }
        // The gateway's own tasks end on this page: the upstream's first page follows them.
        match self.upstream_page(caller, id, None).await {
            UpPage::Tasks(up, next) => {
                own.extend(up);
                Ok(page(own, next))
            }
            UpPage::Nothing | UpPage::Refused(_) => Ok(page(own, None)),
        }
    }

    /// Up to one more than a page of the caller's tasks after `after`, as task objects.
    async fn own_page(
        self: &Arc<Self>,
        caller: &Caller,
        after: Option<&str>,
    ) -> Result<Vec<Value>, sqlx::Error> {
        let limit = i64::try_from(PAGE + 1).unwrap_or(i64::MAX);
        let rows = task::list_for(&self.pool, &caller.principal().0, after, limit).await?;
        // Their tickets in one statement, not one per task.
        let ids: Vec<_> = rows.iter().map(|r| r.ticket_id).collect();
        let tickets: HashMap<_, _> = tickets::get_many(&self.pool, &ids)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect();
        let now = chrono::Utc::now();
        Ok(rows
            .iter()
            .filter_map(|row| {
                let ticket = tickets.get(&row.ticket_id)?;
                let state = wire::state(row, ticket, now);
                Some(wire::task_object(
                    row,
                    ticket,
                    &state,
                    self.shown(),
                    Era::Classic,
                ))
            })
            .collect())
    }

    /// The upstream's `tasks/list` page at `cursor`, in the caller's upstream session.
    async fn upstream_page(&self, caller: &Caller, id: &Value, cursor: Option<String>) -> UpPage {
        let asked_by_cursor = cursor.is_some();
        let params = match cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": LIST, "params": params });
        let sent = caller
            .send(&self.link, Bytes::from(body.to_string()), &caller.headers)
            .await;
        let why = match sent {
            Ok(resp) if resp.status().is_success() => match Whole::read(resp, id).await {
                Ok(Whole {
                    response: Some(r), ..
                }) => return upstream_tasks(r, asked_by_cursor),
                Ok(_) => "the upstream gave no answer to tasks/list".to_owned(),
                Err(e) => e.to_string(),
            },
            Ok(resp) => format!("upstream answered HTTP {}", resp.status().as_u16()),
            Err(e) => airlock_shared::telemetry::chain(&e),
        };
        tracing::warn!(why = %why, "tasks/list: the upstream's tasks could not be listed");
        match asked_by_cursor {
            true => UpPage::Refused(upstream_error(id, &why)["error"].clone()),
            false => UpPage::Nothing,
        }
    }
}

/// The upstream's answer to `tasks/list` as a page; its error only matters when the client
/// asked for an upstream page (an upstream without `tasks/list` simply lists nothing).
fn upstream_tasks(response: Value, asked_by_cursor: bool) -> UpPage {
    if let Some(error) = response.get("error") {
        return match asked_by_cursor {
            true => UpPage::Refused(error.clone()),
            false => UpPage::Nothing,
        };
    }
    let result = response.get("result").cloned().unwrap_or(Value::Null);
    let tasks = result
        .get("tasks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let next = result
        .get("nextCursor")
        .and_then(Value::as_str)
        .map(|c| format!("{UP}{c}"));
    UpPage::Tasks(tasks, next)
}

fn page(tasks: Vec<Value>, next: Option<String>) -> Value {
    let mut r = json!({ "tasks": tasks });
    if let Some(n) = next {
        r["nextCursor"] = json!(n);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_say_whose_page_comes_next() {
        assert_eq!(Cursor::parse(&json!({})), Some(Cursor::Start));
        assert_eq!(
            Cursor::parse(&json!({"cursor": "airlock.own.abc"})),
            Some(Cursor::Own("abc".into()))
        );
        assert_eq!(
            Cursor::parse(&json!({"cursor": "airlock.up.p2"})),
            Some(Cursor::Up("p2".into()))
        );
        assert_eq!(Cursor::parse(&json!({"cursor": "p2"})), None);
        assert_eq!(Cursor::parse(&json!({"cursor": 3})), None);
    }

    #[test]
    fn the_upstreams_page_is_prefixed_and_its_refusal_kept_only_when_asked() {
        let r = json!({"jsonrpc": "2.0", "id": 1, "result": {
            "tasks": [{"taskId": "u1"}], "nextCursor": "p2"}});
        let UpPage::Tasks(tasks, next) = upstream_tasks(r, false) else {
            panic!("expected tasks");
        };
        assert_eq!(tasks, vec![json!({"taskId": "u1"})]);
        assert_eq!(next.as_deref(), Some("airlock.up.p2"));
        let e = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "nope"}});
        assert!(matches!(upstream_tasks(e.clone(), false), UpPage::Nothing));
        assert!(matches!(upstream_tasks(e, true), UpPage::Refused(_)));
    }
}
