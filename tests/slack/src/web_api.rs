//! The one fake of the Slack Web API that both the Rust test fake ([`crate::fake`]) and the
//! browser emulator ([`crate::emulator`]) serve: the message store, method dispatch, Block Kit
//! validation, programmable faults and latency, and a record of every call.
//!
//! It answers `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `chat.delete`,
//! `usergroups.users.list` ([`crate::usergroups`]) and `auth.test` the way Slack does: HTTP 200 with `{"ok":true,…}` or `{"ok":false,"error":…}`,
//! 404 for unknown methods, 429 with `Retry-After` when rate limited, bodies as JSON or
//! form-encoded, the token in `Authorization: Bearer` (or a `token` argument).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::blocks;

/// The bot user the app posts as.
pub const BOT_USER: &str = "U0AIRLOCKBOT";
/// The bot id of the app.
pub const BOT_ID: &str = "B0AIRLOCK";

/// A channel the fake workspace has.
#[derive(Clone, Debug)]
pub struct Channel {
    /// The id (`C…`) that Slack answers with.
    pub id: String,
    /// The name, accepted with or without `#`.
    pub name: String,
    /// Whether the bot has joined it (otherwise `not_in_channel`).
    pub bot_is_member: bool,
    /// Users in the channel; ephemeral messages to others fail with `user_not_in_channel`.
    /// Empty means everyone.
    pub members: Vec<String>,
}

impl Channel {
    /// A channel the bot has joined, open to everyone.
    pub fn joined(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            bot_is_member: true,
            members: Vec::new(),
        }
    }

    fn is(&self, wanted: &str) -> bool {
        self.id == wanted || self.name == wanted || wanted.strip_prefix('#') == Some(&self.name)
    }
}

/// The workspace the Web API answers for.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The bot token it accepts.
    pub token: SecretString,
    /// Its channels.
    pub channels: Vec<Channel>,
    /// Its members as (id, name); empty means any user id is taken as a member.
    pub users: Vec<(String, String)>,
    /// The team id (`T…`).
    pub team_id: String,
    /// The app id (`A…`).
    pub app_id: String,
    /// The workspace URL `auth.test` reports.
    pub url: String,
}

impl Workspace {
    /// A channel by id, name or `#name`.
    pub fn channel(&self, wanted: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.is(wanted))
    }

    /// A member's display name.
    pub fn user_name(&self, id: &str) -> Option<&str> {
        self.users
            .iter()
            .find(|(uid, _)| uid == id)
            .map(|(_, n)| n.as_str())
    }
}

/// A fault to inject into one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// HTTP 429 with `Retry-After: secs` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// A bare HTTP error status (500, 502, 503, …) with a non-JSON body, like a load balancer.
    Http(u16),
    /// HTTP 200 with `{"ok":false,"error":<error>}`.
    SlackError(String),
    /// Wait this long, then answer normally (or as the next queued fault says).
    Delay(Duration),
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Call {
    /// Order of arrival, from 0.
    pub seq: u64,
    /// The Web API method, e.g. `chat.postMessage`.
    pub method: String,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// The token sent in `Authorization: Bearer` (or a `token` parameter), if any.
    pub token: Option<String>,
    /// The raw `Authorization` header.
    pub authorization: Option<String>,
    /// The arguments, as JSON (form bodies are converted; `blocks` parsed from its string).
    pub args: Value,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The JSON answer (`Value::Null` when the answer was not JSON).
    pub response: Value,
}

/// A message as it stands in a channel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// The channel id.
    pub channel: String,
    /// Its timestamp id.
    pub ts: String,
    /// The fallback text.
    pub text: String,
    /// Its blocks (empty when none).
    pub blocks: Value,
    /// The user that posted it.
    pub user: String,
    /// The ts of the last edit, like Slack's `edited.ts`.
    pub edited_ts: Option<String>,
    /// How many times it was edited.
    #[serde(rename = "updates")]
    pub edits: u32,
}

/// An ephemeral message shown to one user.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ephemeral {
    /// The channel it appeared in.
    pub channel: String,
    /// The user who saw it.
    pub user: String,
    /// Its ts.
    pub message_ts: String,
    /// Its text.
    pub text: String,
    /// Its blocks.
    pub blocks: Value,
}

#[derive(Default)]
struct Store {
    calls: Vec<Call>,
    /// Calls per method, so that waiting on a count stays cheap with many thousands of calls.
    counts: HashMap<String, usize>,
    faults: HashMap<String, VecDeque<Fault>>,
    any_faults: VecDeque<Fault>,
    latency: Duration,
    messages: Vec<Message>,
    ephemerals: Vec<Ephemeral>,
    last_ts: (u64, u64),
}

impl Store {
    /// A fresh, strictly increasing ts (`seconds.micros`, as Slack's look).
    fn next_ts(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let candidate = (now.as_secs(), u64::from(now.subsec_micros()));
        self.last_ts = if candidate > self.last_ts {
            candidate
        } else if self.last_ts.1 >= 999_999 {
            (self.last_ts.0 + 1, 0)
        } else {
            (self.last_ts.0, self.last_ts.1 + 1)
        };
        format!("{}.{:06}", self.last_ts.0, self.last_ts.1)
    }

    fn message(&mut self, channel: &str, ts: &str) -> Option<&mut Message> {
        self.messages
            .iter_mut()
            .find(|m| m.channel == channel && m.ts == ts)
    }
}

/// One fake Web API: a workspace, what it holds, and a version bumped on every change.
pub struct Core {
    /// The workspace it answers for.
    pub workspace: Workspace,
    /// Its user groups, which tests may change at any time.
    pub usergroups: crate::usergroups::Groups,
    store: Mutex<Store>,
    version: watch::Sender<u64>,
}

impl Core {
    /// An empty workspace.
    pub fn new(workspace: Workspace) -> Arc<Self> {
        Arc::new(Self {
            workspace,
            usergroups: Default::default(),
            store: Mutex::new(Store::default()),
            version: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread must not hide every later assertion behind a poisoned lock;
        // every change is applied in one step, so the data stays consistent.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells waiters (tests, the page) that something changed.
    pub fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The current change version.
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// A fresh message ts.
    pub fn next_ts(&self) -> String {
        self.lock().next_ts()
    }

    /// Queues `fault` for the next call of `method` (`None`: of any method, after specific ones).
    pub fn fail_next(&self, method: Option<&str>, fault: Fault) {
        let mut s = self.lock();
        match method {
            Some(m) => s.faults.entry(m.to_owned()).or_default().push_back(fault),
            None => s.any_faults.push_back(fault),
        }
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Reads the call log.
    pub fn with_calls<T>(&self, f: impl FnOnce(&[Call]) -> T) -> T {
        f(&self.lock().calls)
    }

    /// How many calls of one method arrived so far.
    pub fn count_calls(&self, method: &str) -> usize {
        self.lock().counts.get(method).copied().unwrap_or(0)
    }

    /// Every message (of one channel id, if given), oldest first, deleted ones gone.
    pub fn messages(&self, channel: Option<&str>) -> Vec<Message> {
        let s = self.lock();
        s.messages
            .iter()
            .filter(|m| channel.is_none_or(|c| c == m.channel))
            .cloned()
            .collect()
    }

    /// Every ephemeral message (of one channel id, if given).
    pub fn ephemerals(&self, channel: Option<&str>) -> Vec<Ephemeral> {
        let s = self.lock();
        s.ephemerals
            .iter()
            .filter(|m| channel.is_none_or(|c| c == m.channel))
            .cloned()
            .collect()
    }

    /// Posts a bot message to a channel id.
    pub fn post(&self, channel: &str, text: String, blocks: Value) -> Message {
        let m = {
            let mut s = self.lock();
            let m = Message {
                channel: channel.to_owned(),
                ts: s.next_ts(),
                text,
                blocks,
                user: BOT_USER.into(),
                edited_ts: None,
                edits: 0,
            };
            s.messages.push(m.clone());
            m
        };
        self.changed();
        m
    }

    /// Replaces a message's content; `None` when there is no such message.
    pub fn update(&self, channel: &str, ts: &str, text: String, blocks: Value) -> Option<Message> {
        let m = {
            let mut s = self.lock();
            let edit = s.next_ts();
            let m = s.message(channel, ts)?;
            m.text = text;
            m.blocks = blocks;
            m.edited_ts = Some(edit);
            m.edits += 1;
            m.clone()
        };
        self.changed();
        Some(m)
    }

    /// Deletes a message; whether there was one.
    pub fn delete(&self, channel: &str, ts: &str) -> bool {
        let gone = {
            let mut s = self.lock();
            let before = s.messages.len();
            s.messages.retain(|m| !(m.channel == channel && m.ts == ts));
            s.messages.len() < before
        };
        self.changed();
        gone
    }

    /// Shows an ephemeral message to one user; its ts.
    pub fn post_ephemeral(&self, channel: &str, user: &str, text: String, blocks: Value) -> String {
        let ts = {
            let mut s = self.lock();
            let ts = s.next_ts();
            s.ephemerals.push(Ephemeral {
                channel: channel.to_owned(),
                user: user.to_owned(),
                message_ts: ts.clone(),
                text,
                blocks,
            });
            ts
        };
        self.changed();
        ts
    }

    /// Faults and latency are decided under the lock, then waited out without it.
    fn take_fault(&self, method: &str) -> (Duration, Option<Fault>) {
        let mut s = self.lock();
        let mut delay = s.latency;
        loop {
            let next = s
                .faults
                .get_mut(method)
                .and_then(VecDeque::pop_front)
                .or_else(|| s.any_faults.pop_front());
            match next {
                Some(Fault::Delay(d)) => delay += d,
                other => return (delay, other),
            }
        }
    }

    fn record(&self, mut call: Call) {
        {
            let mut s = self.lock();
            call.seq = s.calls.len() as u64;
            *s.counts.entry(call.method.clone()).or_default() += 1;
            s.calls.push(call);
        }
        self.changed();
    }

    fn authenticate(&self, token: Option<&str>) -> Result<(), SlackError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(SlackError::new("not_authed"));
        };
        let want = self.workspace.token.expose_secret().as_bytes();
        if bool::from(token.as_bytes().ct_eq(want)) {
            Ok(())
        } else {
            Err(SlackError::new("invalid_auth"))
        }
    }
}

/// A Web API failure: `ok:false` with Slack's error string.
struct SlackError {
    error: &'static str,
    /// Extra fields (`errors`, `response_metadata`) for `invalid_blocks`.
    extra: Map<String, Value>,
}

impl SlackError {
    fn new(error: &'static str) -> Self {
        Self {
            error,
            extra: Map::new(),
        }
    }
}

/// What the fake answers, before it is turned into HTTP.
struct Answer {
    status: StatusCode,
    /// `Value::Null` with `raw` for a non-JSON answer.
    body: Value,
    retry_after: Option<u64>,
    raw: Option<&'static str>,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            raw: None,
        }
    }

    fn from_result(result: Result<Value, SlackError>) -> Self {
        match result {
            Ok(mut v) => {
                v["ok"] = Value::Bool(true);
                Self::json(StatusCode::OK, v)
            }
            Err(e) => {
                let mut v = json!({"ok": false, "error": e.error});
                for (k, x) in e.extra {
                    v[k] = x;
                }
                // Slack answers unknown methods with 404; everything else is 200 + ok:false.
                let status = if e.error == "unknown_method" {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::OK
                };
                Self::json(status, v)
            }
        }
    }

    fn fault(fault: &Fault) -> Self {
        match fault {
            Fault::RateLimited { retry_after_secs } => Self {
                retry_after: Some(*retry_after_secs),
                ..Self::json(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"ok": false, "error": "ratelimited"}),
                )
            },
            // Slack's edge answers 5xx with an HTML page, not JSON.
            Fault::Http(code) => Self {
                raw: Some("<html><body><h1>Service Unavailable</h1></body></html>"),
                ..Self::json(
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    Value::Null,
                )
            },
            Fault::SlackError(e) => Self::json(StatusCode::OK, json!({"ok": false, "error": e})),
            Fault::Delay(_) => Self::json(StatusCode::OK, json!({"ok": true})),
        }
    }

    fn into_response(self) -> Response {
        let mut resp = match self.raw {
            Some(raw) => (self.status, [(header::CONTENT_TYPE, "text/html")], raw).into_response(),
            None => (self.status, axum::Json(self.body)).into_response(),
        };
        if let Some(v) = self
            .retry_after
            .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// `POST /api/{method}`.
pub async fn handle(
    State(core): State<Arc<Core>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = tracing::debug_span!("slack_api", method = %method);
    let _g = span.enter();
    let received_at = SystemTime::now();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let args = arguments(&headers, &body);
    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| {
            let args = args.as_ref().ok()?;
            args.get("token").and_then(Value::as_str).map(str::to_owned)
        });
    let (latency, fault) = core.take_fault(&method);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let answer = match &fault {
        Some(f) => Answer::fault(f),
        None => Answer::from_result(
            args.as_ref()
                .map_err(|e| SlackError::new(e))
                .and_then(|a| dispatch(&core, &method, token.as_deref(), a)),
        ),
    };
    if let Some(e) = answer.body.get("error").and_then(Value::as_str) {
        tracing::debug!(error = %e, "ok:false");
    }
    let response = answer.body.clone();
    let status = answer.status.as_u16();
    let resp = answer.into_response();
    core.record(Call {
        seq: 0,
        method,
        received_at,
        token,
        authorization,
        args: args.map(Value::Object).unwrap_or(Value::Null),
        status,
        response,
    });
    resp
}

/// Arguments from a JSON body or a form body (where `blocks` is a JSON string).
fn arguments(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/x-www-form-urlencoded") {
        let mut m = Map::new();
        for (k, v) in form_urlencoded::parse(body) {
            let value = if k == "blocks" || k == "attachments" {
                serde_json::from_str(&v).map_err(|_| "invalid_blocks_format")?
            } else {
                Value::String(v.into_owned())
            };
            m.insert(k.into_owned(), value);
        }
        return Ok(m);
    }
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("invalid_json"),
    }
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `text` and `blocks` checked as Slack checks them.
fn content(args: &Map<String, Value>) -> Result<(String, Value), SlackError> {
    let text = str_arg(args, "text").unwrap_or_default().to_owned();
    let blocks = args.get("blocks").cloned().unwrap_or(Value::Array(vec![]));
    if text.is_empty() && blocks.as_array().is_none_or(Vec::is_empty) {
        return Err(SlackError::new("no_text"));
    }
    if text.chars().count() > blocks::MAX_TEXT {
        return Err(SlackError::new("msg_too_long"));
    }
    let errors = blocks::validate(&blocks);
    if !errors.is_empty() {
        let mut e = SlackError::new("invalid_blocks");
        let messages: Vec<String> = errors.iter().map(|e| format!("[ERROR] {e}")).collect();
        e.extra.insert("errors".into(), json!(errors));
        e.extra
            .insert("response_metadata".into(), json!({ "messages": messages }));
        return Err(e);
    }
    Ok((text, blocks))
}

/// A message as the Web API shows it.
pub fn message_json(m: &Message, workspace: &Workspace) -> Value {
    let mut v = json!({
        "type": "message",
        "subtype": "bot_message",
        "user": m.user,
        "bot_id": BOT_ID,
        "app_id": workspace.app_id,
        "team": workspace.team_id,
        "text": m.text,
        "ts": m.ts,
        "blocks": m.blocks,
    });
    if let Some(edited) = &m.edited_ts {
        v["edited"] = json!({"user": m.user, "ts": edited});
    }
    v
}

fn dispatch(
    core: &Core,
    method: &str,
    token: Option<&str>,
    args: &Map<String, Value>,
) -> Result<Value, SlackError> {
    let known = [
        "auth.test",
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "chat.delete",
        "usergroups.users.list",
    ];
    if !known.contains(&method) {
        return Err(SlackError::new("unknown_method"));
    }
    core.authenticate(token)?;
    let ws = &core.workspace;
    if method == "auth.test" {
        return Ok(json!({
            "url": ws.url, "team": "Airlock", "user": "airlock", "team_id": ws.team_id,
            "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false,
        }));
    }
    if method == "usergroups.users.list" {
        return crate::usergroups::users_list(&core.usergroups, args).map_err(SlackError::new);
    }
    let channel = str_arg(args, "channel")
        .and_then(|c| ws.channel(c))
        .ok_or(SlackError::new("channel_not_found"))?;
    match method {
        "chat.postMessage" => {
            if !channel.bot_is_member {
                return Err(SlackError::new("not_in_channel"));
            }
            let (text, blocks) = content(args)?;
            let m = core.post(&channel.id, text, blocks);
            Ok(json!({"channel": m.channel, "ts": m.ts, "message": message_json(&m, ws)}))
        }
        "chat.update" => {
            let ts = str_arg(args, "ts").ok_or(SlackError::new("message_not_found"))?;
            let (text, blocks) = content(args)?;
            let m = core
                .update(&channel.id, ts, text, blocks)
                .ok_or(SlackError::new("message_not_found"))?;
            Ok(json!({
                "channel": m.channel, "ts": m.ts, "text": m.text,
                "message": message_json(&m, ws),
            }))
        }
        "chat.postEphemeral" => {
            let user = str_arg(args, "user").ok_or(SlackError::new("user_not_found"))?;
            if !channel.bot_is_member {
                return Err(SlackError::new("not_in_channel"));
            }
            let known_user = ws.users.is_empty() || ws.user_name(user).is_some();
            let in_channel =
                channel.members.is_empty() || channel.members.iter().any(|m| m == user);
            if !known_user || !in_channel {
                return Err(SlackError::new("user_not_in_channel"));
            }
            let (text, blocks) = content(args)?;
            let ts = core.post_ephemeral(&channel.id, user, text, blocks);
            Ok(json!({ "message_ts": ts }))
        }
        "chat.delete" => {
            let ts = str_arg(args, "ts").ok_or(SlackError::new("message_not_found"))?;
            if !core.delete(&channel.id, ts) {
                return Err(SlackError::new("message_not_found"));
            }
            Ok(json!({ "channel": channel.id, "ts": ts }))
        }
        _ => Err(SlackError::new("unknown_method")),
    }
}
