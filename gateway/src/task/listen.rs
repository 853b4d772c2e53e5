//! Task status pushed on a 2026-07-28 `subscriptions/listen` stream: a listen that names the
//! gateway's own task ids (`notifications.taskIds`) gets `notifications/tasks` for them.
//!
//! A listen for the gateway's tasks alone is served by the gateway: the acknowledgement names
//! the tasks it found for the caller, each status change is pushed as the full task (what
//! `tasks/get` would say), and once every one of them has ended the subscription closes
//! gracefully. A listen that also asks for anything else goes upstream without the gateway's
//! task ids, so the upstream's acknowledgement leaves them out and the client polls them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Tasks;
use super::methods::TaskError;
use super::wire::{self, Era};
use crate::call::Caller;
use crate::mcp::LISTEN;
use crate::sse;
use crate::transport::sse_response;

/// Where every message of a subscription names the `subscriptions/listen` request it belongs to.
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// How often a listened task is looked at, at most (its poll interval, if shorter).
const RECHECK: Duration = Duration::from_millis(500);

/// A listen request that names some of the gateway's own tasks.
#[derive(Debug, PartialEq)]
pub enum Listen {
    /// Only the gateway's tasks: the gateway serves the stream.
    Own(Vec<String>),
    /// Something else too: these params (without the gateway's task ids) go upstream.
    Upstream(Value),
}

/// What a `subscriptions/listen` asks of the gateway's tasks; `None` if it names none of them.
pub fn split(params: &Value) -> Option<Listen> {
    let notifications = params.get("notifications")?.as_object()?;
    let ids = notifications.get("taskIds")?.as_array()?;
    let is_own = |v: &Value| v.as_str().is_some_and(|s| s.starts_with(wire::ID_PREFIX));
    let own: Vec<String> = ids
        .iter()
        .filter(|v| is_own(v))
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if own.is_empty() {
        return None;
    }
    let others: Vec<Value> = ids.iter().filter(|v| !is_own(v)).cloned().collect();
    let mut rest = notifications.clone();
    match others.is_empty() {
        true => rest.remove("taskIds"),
        false => rest.insert("taskIds".into(), Value::Array(others)),
    };
    if rest.is_empty() {
        return Some(Listen::Own(own));
    }
    let mut params = params.clone();
    params["notifications"] = Value::Object(rest);
    Some(Listen::Upstream(params))
}

/// The answer to a listen for the gateway's tasks from a client that does not declare the
/// extension: -32021, as the extension requires.
pub fn missing_capability(id: &Value) -> Response {
    Json(TaskError::MissingCapability.to_jsonrpc(id)).into_response()
}

/// The listen request that goes upstream, with `params` in place of the client's.
pub fn upstream_body(id: &Value, params: Value) -> Bytes {
    let req = json!({ "jsonrpc": "2.0", "id": id, "method": LISTEN, "params": params });
    Bytes::from(req.to_string())
}

/// A notification of subscription `sub` (the listen request's id).
fn notification(sub: &Value, method: &str, mut params: Value) -> Bytes {
    params["_meta"] = json!({ SUBSCRIPTION_ID: sub });
    sse::message(&json!({ "jsonrpc": "2.0", "method": method, "params": params }))
}

impl Tasks {
    /// Serves a listen for the gateway's own tasks `ids` (the client declared the extension).
    pub fn listen(self: &Arc<Self>, caller: &Caller, id: Value, ids: Vec<String>) -> Response {
        let (me, c) = (self.clone(), caller.clone());
        let recheck = self.settings.poll_interval.min(RECHECK);
        let keepalive = self.keepalive;
        sse_response(async_stream::stream! {
            // Another principal's task, or one gone, is simply not acknowledged.
            let mut accepted = Vec::new();
            for t in &ids {
                match me.load(&c, t).await {
                    Ok(_) => accepted.push(t.clone()),
                    Err(TaskError::Store(e)) => {
                        tracing::error!(task = %t, error = %e, "could not load a listened task");
                    }
                    Err(_) => {}
                }
            }
            let ack = json!({ "notifications": { "taskIds": accepted } });
            yield Ok::<Bytes, std::io::Error>(notification(&id, "notifications/subscriptions/acknowledged", ack));
            let mut last: HashMap<String, Value> = HashMap::new();
            let mut quiet_since = Instant::now();
            while !accepted.is_empty() {
                let mut ended = Vec::new();
                for t in &accepted {
                    let (row, ticket, state) = match me.load(&c, t).await {
                        Ok(loaded) => loaded,
                        // Past its retention: nothing more will change.
                        Err(TaskError::NotFound) => { ended.push(t.clone()); continue; }
                        Err(e) => {
                            tracing::warn!(task = %t, error = %e, "could not look at a listened task; trying again");
                            continue;
                        }
                    };
                    let object = wire::task_object(&row, &ticket, &state, me.shown(), Era::Extension);
                    if last.get(t) != Some(&object) {
                        yield Ok(notification(&id, "notifications/tasks", object.clone()));
                        quiet_since = Instant::now();
                        last.insert(t.clone(), object);
                    }
                    if state.is_terminal() {
                        ended.push(t.clone());
                    }
                }
                accepted.retain(|t| !ended.contains(t));
                if accepted.is_empty() {
                    break;
                }
                if quiet_since.elapsed() >= keepalive {
                    yield Ok(sse::comment("keepalive"));
                    quiet_since = Instant::now();
                }
                tokio::time::sleep(recheck).await;
            }
            // Every listened task has ended: the subscription closes gracefully.
            let done = json!({ "jsonrpc": "2.0", "id": id, "result": {
                "resultType": "complete", "_meta": { SUBSCRIPTION_ID: id }
            }});
            yield Ok(sse::message(&done));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_for_own_tasks_alone_is_the_gateways() {
        let p = json!({ "notifications": { "taskIds": ["airlock-task-a", "airlock-task-b"] } });
        assert_eq!(
            split(&p),
            Some(Listen::Own(vec![
                "airlock-task-a".into(),
                "airlock-task-b".into()
            ]))
        );
    }

    #[test]
    fn a_listen_that_asks_more_goes_upstream_without_the_gateways_tasks() {
        let p = json!({ "_meta": { "x": 1 }, "notifications": {
            "taskIds": ["airlock-task-a", "up-1"], "toolsListChanged": true
        }});
        let Some(Listen::Upstream(rest)) = split(&p) else {
            panic!("expected an upstream listen");
        };
        assert_eq!(rest["notifications"]["taskIds"], json!(["up-1"]));
        assert_eq!(rest["notifications"]["toolsListChanged"], json!(true));
        assert_eq!(rest["_meta"], json!({ "x": 1 }));
        let only_own_and_flag = json!({ "notifications": {
            "taskIds": ["airlock-task-a"], "toolsListChanged": true
        }});
        let Some(Listen::Upstream(rest)) = split(&only_own_and_flag) else {
            panic!("expected an upstream listen");
        };
        assert_eq!(rest["notifications"], json!({ "toolsListChanged": true }));
    }

    #[test]
    fn a_listen_without_own_tasks_is_relayed_untouched() {
        assert_eq!(
            split(&json!({ "notifications": { "taskIds": ["up-1"] } })),
            None
        );
        assert_eq!(
            split(&json!({ "notifications": { "toolsListChanged": true } })),
            None
        );
        assert_eq!(split(&json!({})), None);
    }
}
