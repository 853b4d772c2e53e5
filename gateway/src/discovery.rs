//! Discovery that survives upstream trouble: the last good `initialize` and `tools/list`
//! answers are kept, and `tools/list` shows the tools as policy sees them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::{Principal, SessionId};
use axum::Json;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::answer::Whole;
use crate::call::Caller;
use crate::error::{RequestError, UpstreamError, upstream_error};
use crate::input_schema::InputSchemas;
use crate::policy::Policy;
use crate::relay::{Relay, relay};
use crate::rules::Rules;
use crate::task;
use crate::transport::SUPPORTED_PROTOCOL_VERSIONS;
use crate::upstream::SESSION_HEADER;
use crate::upstream_session::UpstreamSessions;

/// Appended to the description of a tool whose calls may wait for a person.
pub const APPROVAL_NOTE: &str =
    "[Airlock] Calls to this tool may need a person's approval: the answer can take minutes.";

/// The last good answers, for when the upstream is down.
#[derive(Default)]
pub struct Cache {
    /// `initialize` results by the protocol version the client asked for.
    init: Mutex<HashMap<String, Value>>,
    /// `tools/list` results by cursor ("" for the first page).
    tools: Mutex<HashMap<String, Value>>,
    /// The last good `server/discover` result (2026-07-28).
    discover: Mutex<Option<Value>>,
}

/// How long a client may keep a list the gateway served from its cache (the upstream is down:
/// ask again soon).
pub const CACHED_TTL_MS: u64 = 5_000;

/// What discovery uses: the cache, policy for the tools' view, and the upstream sessions.
pub struct Discovery {
    pub cache: Cache,
    pub rules: Rules,
    pub link: UpstreamSessions,
    /// Compiled from each fresh `tools/list` answer, for the calls' argument check.
    pub schemas: Arc<InputSchemas>,
}

impl Cache {
    fn put_init(&self, version: &str, result: &Value) {
        if let Ok(mut c) = self.init.lock() {
            c.insert(version.to_owned(), result.clone());
        }
    }

    /// The result the upstream gave for `version`, else for any version.
    fn init_for(&self, version: &str) -> Option<Value> {
        let c = self.init.lock().ok()?;
        c.get(version).or_else(|| c.values().next()).cloned()
    }

    fn put_tools(&self, cursor: &str, result: &Value) {
        if let Ok(mut c) = self.tools.lock() {
            c.insert(cursor.to_owned(), result.clone());
        }
    }

    fn tools(&self, cursor: &str) -> Option<Value> {
        self.tools.lock().ok()?.get(cursor).cloned()
    }

    fn put_discover(&self, result: &Value) {
        if let Ok(mut c) = self.discover.lock() {
            *c = Some(result.clone());
        }
    }

    fn discover(&self) -> Option<Value> {
        self.discover.lock().ok()?.clone()
    }
}

fn is_outage(r: &Result<reqwest::Response, UpstreamError>) -> bool {
    match r {
        Ok(resp) => resp.status().is_server_error(),
        Err(_) => true,
    }
}

impl Discovery {
    /// `initialize`: opens a gateway session in front of a new upstream session. While the
    /// upstream is down, the last good answer opens a session that is initialised upstream
    /// later.
    pub async fn initialize(
        &self,
        principal: &Principal,
        headers: &HeaderMap,
        body: Bytes,
        id: &Value,
        params: &Value,
    ) -> Result<Response, RequestError> {
        let version = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let sent = self.link.bridge.open(headers, body.clone()).await;
        let init: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if is_outage(&sent)
            && let Some(result) = self.cache.init_for(version)
        {
            match &sent {
                Ok(r) => tracing::warn!(
                    status = r.status().as_u16(),
                    "upstream down; initialize answered from cache"
                ),
                Err(e) => {
                    tracing::warn!(error = %airlock_shared::telemetry::chain(e), "upstream down; initialize answered from cache")
                }
            }
            return self
                .open_from_cache(principal, id, version, &init, result)
                .await;
        }
        let resp = sent?;
        if !resp.status().is_success() {
            return Ok(relay_as_is(resp));
        }
        let upstream_sid = resp
            .headers()
            .get(SESSION_HEADER.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = Whole::read(resp, id).await?;
        let Some(mut response) = answer.response.clone() else {
            return Err(UpstreamError::NoAnswer("initialize got no answer").into());
        };
        if let Some(result) = response.get("result") {
            self.cache.put_init(version, result);
        }
        if version == task::CLASSIC_VERSION
            && let Some(r) = response.get_mut("result")
        {
            task::wire::advertise_initialize(r);
        }
        let sid = SessionId::new();
        self.link
            .sessions
            .create(
                &sid,
                principal,
                upstream_sid.as_deref(),
                Some(version),
                Some(&init),
            )
            .await?;
        tracing::info!(session = %sid, principal = %principal, "session opened");
        Ok(answer.rebuild(id, &response, Some(&sid)))
    }

    /// A session opened on the cached `initialize` result; it gets an upstream session later.
    async fn open_from_cache(
        &self,
        principal: &Principal,
        id: &Value,
        version: &str,
        init: &Value,
        result: Value,
    ) -> Result<Response, RequestError> {
        let sid = SessionId::new();
        self.link
            .sessions
            .create(&sid, principal, None, Some(version), Some(init))
            .await?;
        let mut result = result;
        if version == task::CLASSIC_VERSION {
            task::wire::advertise_initialize(&mut result);
        }
        let mut r = Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response();
        if let Ok(v) = HeaderValue::from_str(&sid.0) {
            r.headers_mut().insert(SESSION_HEADER, v);
        }
        Ok(r)
    }

    /// `tools/list`: the upstream's tools as policy sees them; the last good list while the
    /// upstream is down.
    pub async fn tools_list(
        &self,
        caller: &Caller,
        body: Bytes,
        id: &Value,
        params: &Value,
    ) -> Result<Response, RequestError> {
        let cursor = params
            .get("cursor")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let modern = caller.session.is_none();
        let policy = self.rules.policy();
        let filtered = policy.hide_denied_tools;
        let sent = caller.send(&self.link, body, &caller.headers).await;
        if is_outage(&sent) {
            let why = match &sent {
                Ok(r) => format!("upstream answered HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            return Ok(match self.cache.tools(cursor) {
                Some(result) => {
                    tracing::warn!(why = %why, "upstream down; tools/list answered from cache");
                    let mut view = policy_view(&policy, &result);
                    if task::speaks_classic(&caller.headers) && !modern {
                        task::wire::mark_tools(&policy, &mut view);
                    }
                    if modern {
                        view = cacheable(view, true, filtered);
                    }
                    Json(json!({ "jsonrpc": "2.0", "id": id, "result": view })).into_response()
                }
                None => {
                    tracing::warn!(why = %why, "upstream down and no tools/list cached");
                    Json(upstream_error(id, &why)).into_response()
                }
            });
        }
        let resp = sent?;
        if !resp.status().is_success() {
            return Ok(relay_as_is(resp));
        }
        let answer = match Whole::read(resp, id).await {
            Ok(a) => a,
            Err(e) => return Ok(Json(upstream_error(id, &e.to_string())).into_response()),
        };
        let Some(mut response) = answer.response.clone() else {
            let why = "upstream gave no answer to tools/list";
            return Ok(Json(upstream_error(id, why)).into_response());
        };
        if let Some(result) = response.get("result") {
            self.cache.put_tools(cursor, result);
            self.schemas.put_page(cursor, result);
            let mut view = policy_view(&policy, result);
            if task::speaks_classic(&caller.headers) && !modern {
                task::wire::mark_tools(&policy, &mut view);
            }
            response["result"] = match modern {
                true => cacheable(view, false, filtered),
                false => view,
            };
        }
        Ok(answer.rebuild(id, &response, None))
    }

    /// `server/discover` (2026-07-28): the upstream's answer, listing only the versions the
    /// gateway speaks too; the last good answer while the upstream is down. An upstream that
    /// does not speak 2026-07-28 refuses it, and the client falls back to `initialize`.
    pub async fn discover(
        &self,
        caller: &Caller,
        body: Bytes,
        id: &Value,
    ) -> Result<Response, RequestError> {
        let sent = caller.send(&self.link, body, &caller.headers).await;
        if is_outage(&sent) {
            let why = match &sent {
                Ok(r) => format!("upstream answered HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(why = %why, "upstream down; server/discover answered from cache");
            return Ok(match self.cache.discover() {
                Some(result) => {
                    let result = cacheable(result, true, false);
                    Json(json!({ "jsonrpc": "2.0", "id": id, "result": result })).into_response()
                }
                None => Json(upstream_error(id, &why)).into_response(),
            });
        }
        let resp = sent?;
        if !resp.status().is_success() {
            return Ok(relay_as_is(resp));
        }
        let answer = Whole::read(resp, id).await?;
        let Some(mut response) = answer.response.clone() else {
            return Err(UpstreamError::NoAnswer("server/discover got no answer").into());
        };
        if let Some(versions) = response
            .pointer_mut("/result/supportedVersions")
            .and_then(Value::as_array_mut)
        {
            versions.retain(|v| {
                v.as_str()
                    .is_some_and(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(&v))
            });
        }
        if let Some(r) = response.get_mut("result") {
            task::wire::advertise_discover(r);
        }
        if let Some(result) = response.get("result") {
            self.cache.put_discover(result);
        }
        Ok(answer.rebuild(id, &response, None))
    }
}

/// A result as 2026-07-28 wants one the gateway serves: `resultType`, and caching hints. Served
/// from the cache, it may be kept only briefly; filtered per principal, only privately.
fn cacheable(mut result: Value, from_cache: bool, filtered: bool) -> Value {
    if let Some(o) = result.as_object_mut() {
        o.entry("resultType").or_insert_with(|| json!("complete"));
        if from_cache {
            o.insert("ttlMs".into(), json!(CACHED_TTL_MS));
            o.entry("cacheScope").or_insert_with(|| json!("public"));
        }
        if filtered {
            o.insert("cacheScope".into(), json!("private"));
        }
    }
    result
}

/// A refusal passed on as the upstream gave it.
fn relay_as_is(resp: reqwest::Response) -> Response {
    relay(
        resp,
        Relay {
            client_session: None,
            keep: (),
            answers: None,
            keepalive: None,
        },
    )
}

/// A `tools/list` result as policy sees it: with `hide_denied_tools`, tools that are always
/// denied are left out, and tools that may need approval say so in their description.
pub fn policy_view(policy: &Policy, result: &Value) -> Value {
    if !policy.hide_denied_tools {
        return result.clone();
    }
    let mut out = result.clone();
    if let Some(tools) = out.get_mut("tools").and_then(Value::as_array_mut) {
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| !policy.always_denies(n))
        });
        for t in tools.iter_mut() {
            let needs = t
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| policy.may_need_approval(n));
            if needs && let Some(obj) = t.as_object_mut() {
                let desc = match obj.get("description").and_then(Value::as_str) {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{APPROVAL_NOTE}"),
                    _ => APPROVAL_NOTE.to_owned(),
                };
                obj.insert("description".into(), Value::String(desc));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_hides_denied_tools_and_flags_approvals() {
        let p = Policy::parse(
            r#"
version: 1
default: deny
hide_denied_tools: true
rules:
  - { name: reads, tools: ["list_*"], action: allow }
  - name: big refunds
    tools: ["create_refund"]
    when: [{ arg: /amount, gt: 100 }]
    action: approve
  - { name: small refunds, tools: ["create_refund"], action: allow }
  - { name: wipes, tools: ["wipe"], action: approve }
"#,
        )
        .unwrap();
        let listed = json!({"tools": [
            {"name": "list_charges", "description": "List"},
            {"name": "create_refund", "description": "Refund"},
            {"name": "wipe"},
            {"name": "delete_customer", "description": "Delete"},
        ], "nextCursor": "c2"});
        let v = policy_view(&p, &listed);
        let names: Vec<&str> = v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["list_charges", "create_refund", "wipe"]);
        assert_eq!(v["tools"][0]["description"], "List");
        assert_eq!(
            v["tools"][1]["description"],
            format!("Refund\n\n{APPROVAL_NOTE}")
        );
        assert_eq!(v["tools"][2]["description"], APPROVAL_NOTE);
        assert_eq!(v["nextCursor"], "c2");
    }

    #[test]
    fn without_the_flag_the_list_is_untouched() {
        let p = Policy::parse("version: 1\ndefault: deny\n").unwrap();
        let listed = json!({"tools": [{"name": "x"}]});
        assert_eq!(policy_view(&p, &listed), listed);
    }
}
