//! A faithful fake of the Slack Web API, served over HTTP on 127.0.0.1.
//!
//! It answers `chat.postMessage`, `chat.update`, `chat.postEphemeral` and `chat.delete` the way
//! Slack does: HTTP 200 with `{"ok":true,…}` or `{"ok":false,"error":…}`, 429 with `Retry-After`
//! when rate limited, bodies as JSON or form-encoded, the token in `Authorization: Bearer`. It
//! keeps the messages of each channel, so tests (and the browser-facing [`crate::emulator`]) can look
//! at what a person would see, and records every call so tests can assert on the traffic.
//!
//! Faults are programmable: queue one for the next call of a method ([`FakeSlack::fail_next`]),
//! or slow every answer down ([`FakeSlack::set_latency`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

/// Slack's documented Block Kit limits that the fake enforces (defined once, in `shared`).
pub use airlock_shared::block_kit as limits;

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

/// How to set up a fake workspace.
#[derive(Clone, Debug)]
pub struct FakeSlackConfig {
    /// The bot token the fake accepts.
    pub token: String,
    /// The channels it has.
    pub channels: Vec<Channel>,
}

impl FakeSlackConfig {
    /// A workspace with `token` and one joined channel `C0APPROVALS` named `approvals`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            channels: vec![Channel {
                id: "C0APPROVALS".into(),
                name: "approvals".into(),
                bot_is_member: true,
                members: Vec::new(),
            }],
        }
    }

    /// Adds a channel the bot has joined.
    pub fn with_channel(mut self, id: &str, name: &str) -> Self {
        self.channels.push(Channel {
            id: id.into(),
            name: name.into(),
            bot_is_member: true,
            members: Vec::new(),
        });
        self
    }

    /// Adds a channel the bot has not joined.
    pub fn with_foreign_channel(mut self, id: &str, name: &str) -> Self {
        self.channels.push(Channel {
            id: id.into(),
            name: name.into(),
            bot_is_member: false,
            members: Vec::new(),
        });
        self
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
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Its timestamp id.
    pub ts: String,
    /// The fallback text.
    pub text: String,
    /// Its blocks (empty when none).
    pub blocks: Value,
    /// How many times it was edited.
    pub edits: u32,
}

/// An ephemeral message shown to one user.
#[derive(Clone, Debug, PartialEq)]
pub struct Ephemeral {
    /// The channel it appeared in.
    pub channel: String,
    /// The user who saw it.
    pub user: String,
    /// Its text.
    pub text: String,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Calls per method, so that waiting on a count stays cheap with many thousands of calls.
    counts: HashMap<String, usize>,
    faults: HashMap<String, VecDeque<Fault>>,
    any_faults: VecDeque<Fault>,
    latency: Duration,
    messages: HashMap<String, Vec<Message>>,
    ephemerals: Vec<Ephemeral>,
    next_ts: u64,
}

struct Shared {
    config: FakeSlackConfig,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide every later assertion behind a poisoned lock.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running fake Slack; it stops when dropped.
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FakeSlack {
    /// Starts a fake workspace on 127.0.0.1 with a free port.
    pub async fn spawn(config: FakeSlackConfig) -> FakeSlack {
        let shared = Arc::new(Shared {
            config,
            inner: Mutex::new(Inner {
                next_ts: 100,
                ..Inner::default()
            }),
            changed: Notify::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fake Slack cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake Slack has no address: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeSlack {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    /// The axum router, for embedding the fake in a larger server.
    pub fn router(&self) -> axum::Router {
        router(self.shared.clone())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL to give a client, like `https://slack.com/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The token it accepts.
    pub fn token(&self) -> &str {
        &self.shared.config.token
    }

    /// Makes the next call of `method` fail (or stall) as `fault` says. Faults queue up in order.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.shared
            .lock()
            .faults
            .entry(method.to_owned())
            .or_default()
            .push_back(fault);
    }

    /// Makes the next call of any method fail as `fault` says (after method-specific faults).
    pub fn fail_next_any(&self, fault: Fault) {
        self.shared.lock().any_faults.push_back(fault);
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Every call so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many calls of one method arrived so far.
    pub fn count_calls(&self, method: &str) -> usize {
        self.shared.lock().counts.get(method).copied().unwrap_or(0)
    }

    /// The messages of a channel (by id or name), oldest first, deleted ones gone.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        let id = self
            .shared
            .config
            .channels
            .iter()
            .find(|c| matches_channel(c, channel))
            .map(|c| c.id.clone())
            .unwrap_or_else(|| channel.to_owned());
        self.shared
            .lock()
            .messages
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every ephemeral message shown so far.
    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.shared.lock().ephemerals.clone()
    }

    /// Waits until `n` calls of `method` have been answered, or `timeout` passes; returns them.
    pub async fn wait_for_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            // Count under the lock; cloning every call on each wake-up is quadratic.
            if self.count_calls(method) >= n {
                return self.calls_to(method);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.calls_to(method);
            }
        }
    }

    /// Waits until `pred` holds for the call log, or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if pred(&self.shared.lock().calls) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return pred(&self.shared.lock().calls);
            }
        }
    }
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/api/{method}", post(handle))
        .with_state(shared)
}

fn matches_channel(c: &Channel, wanted: &str) -> bool {
    c.id == wanted || c.name == wanted || wanted.strip_prefix('#') == Some(c.name.as_str())
}

/// What the fake answers, before it is turned into HTTP.
struct Answer {
    status: StatusCode,
    body: Value,
    retry_after: Option<u64>,
    raw: Option<&'static str>,
}

impl Answer {
    fn ok(body: Value) -> Self {
        let mut body = body;
        body["ok"] = json!(true);
        Self {
            status: StatusCode::OK,
            body,
            retry_after: None,
            raw: None,
        }
    }

    fn err(error: &str) -> Self {
        Self {
            status: StatusCode::OK,
            body: json!({"ok": false, "error": error}),
            retry_after: None,
            raw: None,
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = SystemTime::now();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let args = parse_args(&headers, &body);
    let token = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| args.get("token").and_then(Value::as_str).map(str::to_owned));

    // Faults and latency are decided under the lock, then waited out without it.
    let (latency, fault) = {
        let mut inner = shared.lock();
        let mut delay = inner.latency;
        let mut fault = None;
        loop {
            let next = inner
                .faults
                .get_mut(&method)
                .and_then(VecDeque::pop_front)
                .or_else(|| inner.any_faults.pop_front());
            match next {
                Some(Fault::Delay(d)) => delay += d,
                other => {
                    fault = other.or(fault);
                    break;
                }
            }
        }
        (delay, fault)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let answer = match (&fault, &args) {
        (Some(Fault::RateLimited { retry_after_secs }), _) => Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({"ok": false, "error": "ratelimited"}),
            retry_after: Some(*retry_after_secs),
            raw: None,
        },
        (Some(Fault::Http(code)), _) => Answer {
            status: StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: Value::Null,
            retry_after: None,
            raw: Some("<html><body><h1>Service Unavailable</h1></body></html>"),
        },
        (Some(Fault::SlackError(e)), _) => Answer::err(e),
        (Some(Fault::Delay(_)) | None, Value::Object(_)) => {
            match check_auth(&shared.config, token.as_deref()) {
                Err(e) => Answer::err(e),
                Ok(()) => {
                    let mut inner = shared.lock();
                    run_method(&shared.config, &mut inner, &method, &args)
                }
            }
        }
        (Some(Fault::Delay(_)) | None, _) => Answer::err("invalid_json"),
    };

    {
        let mut inner = shared.lock();
        let seq = inner.calls.len() as u64;
        *inner.counts.entry(method.clone()).or_default() += 1;
        inner.calls.push(Call {
            seq,
            method: method.clone(),
            received_at,
            token,
            authorization,
            args,
            status: answer.status.as_u16(),
            response: answer.body.clone(),
        });
    }
    shared.changed.notify_waiters();

    let mut resp = match answer.raw {
        Some(raw) => (answer.status, [(header::CONTENT_TYPE, "text/html")], raw).into_response(),
        None => (answer.status, axum::Json(answer.body)).into_response(),
    };
    if let Some(v) = answer
        .retry_after
        .and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn check_auth(config: &FakeSlackConfig, token: Option<&str>) -> Result<(), &'static str> {
    match token {
        None | Some("") => Err("not_authed"),
        Some(t) if t == config.token => Ok(()),
        Some(_) => Err("invalid_auth"),
    }
}

/// Reads the arguments from a JSON or form body; `Value::Null` when the body is unreadable.
fn parse_args(headers: &HeaderMap, body: &[u8]) -> Value {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let mut map = serde_json::Map::new();
        for (k, v) in form_urlencoded::parse(body) {
            let value = match k.as_ref() {
                // Slack takes these as JSON-encoded strings in forms.
                "blocks" | "attachments" => {
                    serde_json::from_str(&v).unwrap_or(Value::String(v.into_owned()))
                }
                _ => Value::String(v.into_owned()),
            };
            map.insert(k.into_owned(), value);
        }
        return Value::Object(map);
    }
    if body.is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Null,
    }
}

fn run_method(config: &FakeSlackConfig, inner: &mut Inner, method: &str, args: &Value) -> Answer {
    match method {
        "chat.postMessage" => post_message(config, inner, args),
        "chat.update" => update(config, inner, args),
        "chat.postEphemeral" => post_ephemeral(config, inner, args),
        "chat.delete" => delete(config, inner, args),
        "auth.test" => Answer::ok(json!({
            "url": "https://airlock-test.slack.com/", "team": "Airlock Test", "user": "airlock",
            "team_id": "T0AIRLOCK", "user_id": "U0AIRLOCKBOT", "bot_id": "B0AIRLOCK",
        })),
        _ => Answer {
            status: StatusCode::NOT_FOUND,
            body: json!({"ok": false, "error": "unknown_method", "req_method": method}),
            retry_after: None,
            raw: None,
        },
    }
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Resolves a channel argument, or the Slack error for it.
fn resolve_channel<'a>(
    config: &'a FakeSlackConfig,
    args: &Value,
) -> Result<&'a Channel, &'static str> {
    let wanted = str_arg(args, "channel").ok_or("channel_not_found")?;
    config
        .channels
        .iter()
        .find(|c| matches_channel(c, wanted))
        .ok_or("channel_not_found")
}

/// Checks `text` and `blocks` the way Slack does for a message.
fn check_content(args: &Value) -> Result<(String, Value), Answer> {
    let text = args.get("text").and_then(Value::as_str).unwrap_or("");
    let blocks = args.get("blocks").cloned().unwrap_or(Value::Null);
    if text.is_empty() && blocks.as_array().is_none_or(Vec::is_empty) {
        return Err(Answer::err("no_text"));
    }
    if text.chars().count() > limits::MESSAGE_TEXT {
        return Err(Answer::err("msg_too_long"));
    }
    if !blocks.is_null() {
        let problems = validate_blocks(&blocks);
        if !problems.is_empty() {
            return Err(Answer {
                status: StatusCode::OK,
                body: json!({
                    "ok": false,
                    "error": "invalid_blocks",
                    "errors": problems,
                    "response_metadata": {
                        "messages": problems.iter().map(|p| format!("[ERROR] {p}")).collect::<Vec<_>>(),
                    },
                }),
                retry_after: None,
                raw: None,
            });
        }
    }
    Ok((
        text.to_owned(),
        if blocks.is_null() { json!([]) } else { blocks },
    ))
}

fn next_ts(inner: &mut Inner) -> String {
    let n = inner.next_ts;
    inner.next_ts += 100;
    format!("{}.{:06}", 1_700_000_000 + n / 1_000_000, n % 1_000_000)
}

fn post_message(config: &FakeSlackConfig, inner: &mut Inner, args: &Value) -> Answer {
    let channel = match resolve_channel(config, args) {
        Ok(c) => c,
        Err(e) => return Answer::err(e),
    };
    if !channel.bot_is_member {
        return Answer::err("not_in_channel");
    }
    let (text, blocks) = match check_content(args) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let ts = next_ts(inner);
    inner
        .messages
        .entry(channel.id.clone())
        .or_default()
        .push(Message {
            ts: ts.clone(),
            text: text.clone(),
            blocks: blocks.clone(),
            edits: 0,
        });
    Answer::ok(json!({
        "channel": channel.id,
        "ts": ts,
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "user": "U0AIRLOCKBOT",
            "bot_id": "B0AIRLOCK",
            "team": "T0AIRLOCK",
            "app_id": "A0AIRLOCK",
            "text": text,
            "blocks": blocks,
            "ts": ts,
        },
    }))
}

fn update(config: &FakeSlackConfig, inner: &mut Inner, args: &Value) -> Answer {
    let channel = match resolve_channel(config, args) {
        Ok(c) => c,
        Err(e) => return Answer::err(e),
    };
    let Some(ts) = str_arg(args, "ts") else {
        return Answer::err("message_not_found");
    };
    let (text, blocks) = match check_content(args) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let Some(msg) = inner
        .messages
        .get_mut(&channel.id)
        .and_then(|ms| ms.iter_mut().find(|m| m.ts == ts))
    else {
        return Answer::err("message_not_found");
    };
    msg.text = text.clone();
    msg.blocks = blocks.clone();
    msg.edits += 1;
    Answer::ok(json!({
        "channel": channel.id,
        "ts": ts,
        "text": text,
        "message": {
            "type": "message",
            "user": "U0AIRLOCKBOT",
            "bot_id": "B0AIRLOCK",
            "text": text,
            "blocks": blocks,
            "edited": {"user": "U0AIRLOCKBOT", "ts": next_ts(inner)},
        },
    }))
}

fn post_ephemeral(config: &FakeSlackConfig, inner: &mut Inner, args: &Value) -> Answer {
    let channel = match resolve_channel(config, args) {
        Ok(c) => c,
        Err(e) => return Answer::err(e),
    };
    let Some(user) = str_arg(args, "user") else {
        return Answer::err("user_not_found");
    };
    if !channel.bot_is_member {
        return Answer::err("not_in_channel");
    }
    if !channel.members.is_empty() && !channel.members.iter().any(|m| m == user) {
        return Answer::err("user_not_in_channel");
    }
    let (text, _blocks) = match check_content(args) {
        Ok(c) => c,
        Err(a) => return a,
    };
    inner.ephemerals.push(Ephemeral {
        channel: channel.id.clone(),
        user: user.to_owned(),
        text,
    });
    Answer::ok(json!({ "message_ts": next_ts(inner) }))
}

fn delete(config: &FakeSlackConfig, inner: &mut Inner, args: &Value) -> Answer {
    let channel = match resolve_channel(config, args) {
        Ok(c) => c,
        Err(e) => return Answer::err(e),
    };
    let Some(ts) = str_arg(args, "ts") else {
        return Answer::err("message_not_found");
    };
    let Some(messages) = inner.messages.get_mut(&channel.id) else {
        return Answer::err("message_not_found");
    };
    let before = messages.len();
    messages.retain(|m| m.ts != ts);
    if messages.len() == before {
        return Answer::err("message_not_found");
    }
    Answer::ok(json!({ "channel": channel.id, "ts": ts }))
}

/// Every way `blocks` breaks Slack's rules, as Slack words them with a JSON pointer.
pub fn validate_blocks(blocks: &Value) -> Vec<String> {
    let mut p = Problems::default();
    let Some(list) = blocks.as_array() else {
        p.add("/blocks", "must be an array");
        return p.0;
    };
    if list.len() > limits::MAX_BLOCKS {
        p.add(
            "/blocks",
            &format!("no more than {} items allowed", limits::MAX_BLOCKS),
        );
    }
    let mut ids = HashSet::new();
    for (i, block) in list.iter().enumerate() {
        let at = format!("/blocks/{i}");
        if let Some(id) = block.get("block_id").and_then(Value::as_str) {
            p.max_len(&format!("{at}/block_id"), id, limits::ID);
            if !ids.insert(format!("block:{id}")) {
                p.add(&format!("{at}/block_id"), "duplicate block_id");
            }
        }
        match block.get("type").and_then(Value::as_str) {
            Some("section") => section(&mut p, &at, block),
            Some("header") => match block.get("text") {
                Some(t) => p.text(&format!("{at}/text"), t, limits::HEADER_TEXT, true),
                None => p.add(&at, "missing required field: text"),
            },
            Some("divider") => {}
            Some("context") => context(&mut p, &at, block),
            Some("actions") => actions(&mut p, &at, block, &mut ids),
            Some(other) => p.add(&format!("{at}/type"), &format!("unsupported type: {other}")),
            None => p.add(&at, "missing required field: type"),
        }
    }
    p.0
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, at: &str, what: &str) {
        self.0.push(format!("{what} [json-pointer:{at}]"));
    }

    fn max_len(&mut self, at: &str, s: &str, max: usize) {
        if s.chars().count() > max {
            self.add(at, &format!("must be less than {} characters", max + 1));
        }
    }

    /// A text object; `plain_only` for places that take only `plain_text`.
    fn text(&mut self, at: &str, t: &Value, max: usize, plain_only: bool) {
        let kind = t.get("type").and_then(Value::as_str);
        match kind {
            Some("plain_text") => {}
            Some("mrkdwn") if !plain_only => {}
            Some(other) => self.add(
                &format!("{at}/type"),
                &format!(
                    "must be one of plain_text{}, got {other}",
                    if plain_only { "" } else { ", mrkdwn" }
                ),
            ),
            None => self.add(at, "missing required field: type"),
        }
        match t.get("text").and_then(Value::as_str) {
            Some("") => self.add(&format!("{at}/text"), "must be more than 0 characters"),
            Some(s) => self.max_len(&format!("{at}/text"), s, max),
            None => self.add(at, "missing required field: text"),
        }
    }
}

fn section(p: &mut Problems, at: &str, block: &Value) {
    let text = block.get("text");
    let fields = block.get("fields").and_then(Value::as_array);
    if text.is_none() && fields.is_none() {
        p.add(at, "must provide either text or fields");
    }
    if let Some(t) = text {
        p.text(&format!("{at}/text"), t, limits::SECTION_TEXT, false);
    }
    if let Some(fields) = fields {
        if fields.len() > limits::SECTION_FIELDS {
            p.add(
                &format!("{at}/fields"),
                &format!("no more than {} items allowed", limits::SECTION_FIELDS),
            );
        }
        for (j, f) in fields.iter().enumerate() {
            p.text(&format!("{at}/fields/{j}"), f, limits::SECTION_FIELD, false);
        }
    }
}

fn context(p: &mut Problems, at: &str, block: &Value) {
    let Some(elements) = block.get("elements").and_then(Value::as_array) else {
        p.add(at, "missing required field: elements");
        return;
    };
    if elements.is_empty() || elements.len() > limits::CONTEXT_ELEMENTS {
        p.add(
            &format!("{at}/elements"),
            &format!("must have 1 to {} items", limits::CONTEXT_ELEMENTS),
        );
    }
    for (j, e) in elements.iter().enumerate() {
        p.text(
            &format!("{at}/elements/{j}"),
            e,
            limits::SECTION_TEXT,
            false,
        );
    }
}

fn actions(p: &mut Problems, at: &str, block: &Value, ids: &mut HashSet<String>) {
    let Some(elements) = block.get("elements").and_then(Value::as_array) else {
        p.add(at, "missing required field: elements");
        return;
    };
    if elements.is_empty() || elements.len() > limits::ACTIONS_ELEMENTS {
        p.add(
            &format!("{at}/elements"),
            &format!("must have 1 to {} items", limits::ACTIONS_ELEMENTS),
        );
    }
    for (j, e) in elements.iter().enumerate() {
        let at = format!("{at}/elements/{j}");
        if e.get("type").and_then(Value::as_str) != Some("button") {
            p.add(&format!("{at}/type"), "unsupported element type");
            continue;
        }
        match e.get("text") {
            Some(t) => p.text(&format!("{at}/text"), t, limits::BUTTON_TEXT, true),
            None => p.add(&at, "missing required field: text"),
        }
        if let Some(id) = e.get("action_id").and_then(Value::as_str) {
            p.max_len(&format!("{at}/action_id"), id, limits::ID);
            if !ids.insert(format!("action:{id}")) {
                p.add(&format!("{at}/action_id"), "duplicate action_id");
            }
        }
        if let Some(v) = e.get("value").and_then(Value::as_str) {
            p.max_len(&format!("{at}/value"), v, limits::BUTTON_VALUE);
        }
        if let Some(style) = e.get("style").and_then(Value::as_str)
            && style != "primary"
            && style != "danger"
        {
            p.add(&format!("{at}/style"), "must be one of primary, danger");
        }
        if let Some(c) = e.get("confirm") {
            confirm(p, &format!("{at}/confirm"), c);
        }
    }
}

fn confirm(p: &mut Problems, at: &str, c: &Value) {
    for (field, max, plain_only, required) in [
        ("title", limits::CONFIRM_TITLE, true, true),
        ("text", limits::CONFIRM_TEXT, false, true),
        ("confirm", limits::CONFIRM_BUTTON, true, true),
        ("deny", limits::CONFIRM_BUTTON, true, true),
    ] {
        match c.get(field) {
            Some(t) => p.text(&format!("{at}/{field}"), t, max, plain_only),
            None if required => p.add(at, &format!("missing required field: {field}")),
            None => {}
        }
    }
    if let Some(style) = c.get("style").and_then(Value::as_str)
        && style != "primary"
        && style != "danger"
    {
        p.add(&format!("{at}/style"), "must be one of primary, danger");
    }
}
