//! A faithful fake upstream MCP server (streamable HTTP).
//!
//! It speaks the transport as the MCP specification gives it: `initialize` mints an
//! `Mcp-Session-Id`, later requests without a known session get 400/404, notifications and
//! responses get 202, and answers come as JSON or as SSE events with ids, as the test chooses.
//! Every `tools/call` is recorded so tests can prove a call ran exactly once.
//!
//! Beyond plain tools it plays the server's side of the rest of the transport: `ask_client`
//! sends a request to the client (sampling, elicitation, roots) inside its SSE answer and
//! waits for the client's response; `flood` streams many notifications (for slow readers and
//! benchmarks); `die` breaks its stream off mid-way; [`FakeUpstream::push`] sends a message on
//! the standalone GET stream, which keeps event ids and replays after `Last-Event-ID`.
//!
//! It speaks MCP 2026-07-28 beside the older revisions, as the official SDKs' servers do: a
//! request whose `MCP-Protocol-Version` is 2026-07-28 needs no session; its `_meta` version,
//! `Mcp-Method`, `Mcp-Name` and `Mcp-Param-*` headers must match the body (else 400 -32020), an
//! unknown version gets 400 -32022, `server/discover` advertises the versions, every result
//! carries `resultType`, and `tools/list` carries `ttlMs` and `cacheScope`.
//! [`FakeUpstream::set_legacy_only`] makes it an older server that knows none of this.
//!
//! Its connections can misbehave as real servers do: [`Serving::close_idle_after`] closes a
//! keep-alive connection that sat idle that long, and `hangup` drops the connection after the
//! call was recorded, before any answer.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How the fake answers requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `application/json`.
    Json,
    /// `text/event-stream`, one event per message, with event ids.
    Sse,
}

/// One recorded `tools/call`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedCall {
    pub session: Option<String>,
    pub tool: String,
    pub arguments: Value,
}

#[derive(Debug)]
struct FakeState {
    mode: Mode,
    down: bool,
    legacy_only: bool,
    sessions: HashSet<String>,
    calls: Vec<RecordedCall>,
    /// The `params` of every `tools/call`, as received (trace context, `requestState`).
    call_params: Vec<Value>,
    requests: Vec<(String, HeaderMap)>,
    /// Requests sent to the client, waiting for its response, by id.
    asked: HashMap<String, tokio::sync::oneshot::Sender<Value>>,
    /// Responses from the client that matched no question.
    stray_responses: Vec<Value>,
    /// Messages for the GET streams: (event id, session, message).
    pushed: Vec<(u64, Option<String>, Value)>,
}

/// Counters the tests read while streams run.
#[derive(Debug, Default)]
struct Counters {
    flood_sent: AtomicU64,
    streams_dropped: AtomicU64,
    next_event: AtomicU64,
    /// POSTs between arrival and their answer's headers, now and at most.
    posts_in_flight: AtomicU64,
    max_posts_in_flight: AtomicU64,
    /// Requests that arrived on a connection already idle past `close_idle_after`.
    stale_closes: AtomicU64,
}

/// Counts a POST as in flight until its answer's headers are handed back.
struct PostInFlight<'a>(&'a Counters);

impl<'a> PostInFlight<'a> {
    fn new(c: &'a Counters) -> Self {
        let now = c.posts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.max_posts_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(c)
    }
}

impl Drop for PostInFlight<'_> {
    fn drop(&mut self) {
        self.0.posts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<FakeState>,
    counters: Counters,
    pushed: tokio::sync::Notify,
}

type St = Arc<Shared>;

/// Counts streams that ended before they were read to the end (a client went away).
struct DropGuard(St, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0
                .counters
                .streams_dropped
                .fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A running fake upstream.
#[derive(Clone, Debug)]
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: St,
}

impl FakeUpstream {
    /// Starts a fake on 127.0.0.1 with an OS-chosen port.
    pub async fn spawn(mode: Mode) -> Self {
        Self::spawn_serving(mode, Serving::default()).await
    }

    /// Starts a fake that serves its connections as `serving` says.
    pub async fn spawn_serving(mode: Mode, serving: Serving) -> Self {
        let state = Arc::new(Shared {
            state: Mutex::new(FakeState {
                mode,
                down: false,
                legacy_only: false,
                sessions: HashSet::new(),
                calls: Vec::new(),
                call_params: Vec::new(),
                requests: Vec::new(),
                asked: HashMap::new(),
                stray_responses: Vec::new(),
                pushed: Vec::new(),
            }),
            counters: Counters::default(),
            pushed: tokio::sync::Notify::new(),
        });
        let app = Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .with_state(state.clone());
        let bind = serving
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(accept_loop(listener, app, state.clone(), serving));
        Self {
            addr,
            shared: state,
        }
    }

    /// How many requests found their connection idle past `close_idle_after`, and lost it.
    pub fn stale_closes(&self) -> u64 {
        self.shared.counters.stale_closes.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap()
    }

    /// Sends `msg` on the GET stream of every session (and keeps it for `Last-Event-ID`).
    pub fn push(&self, msg: Value) {
        let id = self
            .shared
            .counters
            .next_event
            .fetch_add(1, Ordering::SeqCst)
            + 1;
        self.state().pushed.push((id, None, msg));
        self.shared.pushed.notify_waiters();
    }

    /// How many `flood` events were handed to the network so far.
    pub fn flood_sent(&self) -> u64 {
        self.shared.counters.flood_sent.load(Ordering::SeqCst)
    }

    /// The most POSTs that were ever waiting for their answer's headers at once.
    pub fn max_posts_in_flight(&self) -> u64 {
        self.shared
            .counters
            .max_posts_in_flight
            .load(Ordering::SeqCst)
    }

    /// How many answer streams were dropped before their end (the reader went away).
    pub fn streams_dropped(&self) -> u64 {
        self.shared.counters.streams_dropped.load(Ordering::SeqCst)
    }

    /// Client responses that matched no request of ours.
    pub fn stray_responses(&self) -> Vec<Value> {
        self.state().stray_responses.clone()
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every `tools/call` received so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state().calls.clone()
    }

    /// The `params` of every `tools/call` received, in order.
    pub fn call_params(&self) -> Vec<Value> {
        self.state().call_params.clone()
    }

    /// How many `tools/call` were received so far (cheap enough to poll).
    pub fn call_count(&self) -> usize {
        self.state().calls.len()
    }

    /// The method and headers of every POST received so far.
    pub fn requests(&self) -> Vec<(String, HeaderMap)> {
        self.state().requests.clone()
    }

    /// Switches between JSON and SSE answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state().mode = mode;
    }

    /// While down, every request gets HTTP 503.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    /// An upstream that speaks only the revisions before 2026-07-28.
    pub fn set_legacy_only(&self, legacy_only: bool) {
        self.state().legacy_only = legacy_only;
    }

    /// Forgets every session, as a restarted server would.
    pub fn forget_sessions(&self) {
        self.state().sessions.clear();
    }
}

/// How the fake serves its connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serving {
    /// Where to listen; an OS-chosen port on 127.0.0.1 by default.
    pub addr: Option<SocketAddr>,
    /// A keep-alive connection idle this long is closed. A server's idle timer fires while a
    /// request is on its way, now and then; here the request that comes after the timeout always
    /// loses that race: it is read, dropped unanswered, and the connection closed.
    pub close_idle_after: Option<Duration>,
}

/// Ends the connection a request came on (the `hangup` tool).
#[derive(Clone)]
struct Hangup(Arc<tokio::sync::Notify>);

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, shared: St, serving: Serving) {
    while let Ok((tcp, _)) = listener.accept().await {
        let hangup = Hangup(Arc::new(tokio::sync::Notify::new()));
        let io = IdleClose {
            tcp,
            after: serving.close_idle_after,
            last: Instant::now(),
            closed: false,
            shared: shared.clone(),
        };
        let service = TowerToHyperService::new(app.clone().layer(Extension(hangup.clone())));
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = conn => {}
                _ = hangup.0.notified() => {}
            }
        });
    }
}

/// A TCP connection that reads as closed once a request arrives after `after` of silence.
struct IdleClose {
    tcp: TcpStream,
    after: Option<Duration>,
    last: Instant,
    closed: bool,
    shared: St,
}

impl AsyncRead for IdleClose {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.closed {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            if this.after.is_some_and(|a| this.last.elapsed() >= a) {
                // Too late: drop what came and read as end of stream.
                buf.set_filled(before);
                this.closed = true;
                this.shared
                    .counters
                    .stale_closes
                    .fetch_add(1, Ordering::SeqCst);
            } else {
                this.last = Instant::now();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for IdleClose {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, data))?;
        this.last = Instant::now();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

fn sse_event(id: u64, msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\nid: {id}\ndata: {msg}\n\n"))
}

fn sse_response(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The answer; for 2026-07-28 every result says it is complete.
fn answer_as(
    modern: bool,
    mode: Mode,
    accept_sse: bool,
    mut messages: Vec<Value>,
    delay: Duration,
) -> Response {
    if modern {
        for m in &mut messages {
            if let Some(r) = m.get_mut("result").and_then(Value::as_object_mut) {
                r.entry("resultType").or_insert(json!("complete"));
            }
        }
    }
    if mode == Mode::Sse && accept_sse {
        let stream = async_stream::stream! {
            let n = messages.len();
            for (i, m) in messages.into_iter().enumerate() {
                // The final answer comes after the delay; notifications before it go at once.
                if i + 1 == n && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                yield Ok::<_, std::io::Error>(sse_event(i as u64 + 1, &m));
            }
        };
        sse_response(stream)
    } else {
        let last = messages.into_iter().last().unwrap_or(Value::Null);
        let body = last.to_string();
        let fut = async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(Bytes::from(body))
        };
        let mut r = Response::new(Body::from_stream(futures::stream::once(fut)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn text_result(id: &Value, text: String) -> Value {
    rpc_result(
        id,
        json!({ "content": [{ "type": "text", "text": text }], "isError": false }),
    )
}

fn tools() -> Value {
    let schema = |props: Value, required: Value| json!({ "type": "object", "properties": props, "required": required });
    json!({ "tools": [
        { "name": "list_charges", "description": "List charges", "inputSchema": schema(json!({"limit": {"type": "integer"}}), json!([])) },
        { "name": "create_refund", "description": "Refund a charge", "inputSchema": schema(json!({"amount": {"type": "number"}, "currency": {"type": "string"}}), json!(["amount"])) },
        { "name": "delete_customer", "description": "Delete a customer", "inputSchema": schema(json!({"id": {"type": "string"}}), json!(["id"])) },
        { "name": "stall", "description": "Sends nothing, not even headers, for ms milliseconds", "inputSchema": schema(json!({"ms": {"type": "integer"}}), json!([])) },
        { "name": "slow", "description": "Answers after ms milliseconds", "inputSchema": schema(json!({"ms": {"type": "integer"}}), json!([])) },
        { "name": "ask_client", "description": "Sends a request to the client and returns its response", "inputSchema": schema(json!({"method": {"type": "string"}}), json!(["method"])) },
        { "name": "flood", "description": "Streams n notifications of size bytes", "inputSchema": schema(json!({"n": {"type": "integer"}, "size": {"type": "integer"}}), json!([])) },
        { "name": "die", "description": "Breaks its stream off", "inputSchema": schema(json!({}), json!([])) },
        { "name": "explode", "description": "Answers HTTP 500", "inputSchema": schema(json!({}), json!([])) },
        { "name": "hangup", "description": "Drops the connection after recording the call", "inputSchema": schema(json!({}), json!([])) },
        { "name": "wizard", "description": "Asks the client to confirm (InputRequiredResult, with requestState unless no_state), then completes on the retry", "inputSchema": schema(json!({"amount": {"type": "number"}, "no_state": {"type": "boolean"}}), json!(["amount"])) },
        { "name": "routed", "description": "Echoes; its region is mirrored as Mcp-Param-Region (2026-07-28)", "inputSchema": schema(json!({"region": {"type": "string", "x-mcp-header": "Region"}, "n": {"type": "integer"}}), json!(["region"])) },
    ]})
}

/// The upstream's own tasks (2025-11-25 `tasks/list`), two pages of one task each.
fn upstream_tasks(id: &Value, cursor: Option<&str>) -> Value {
    let task = |n: u32| {
        json!({ "taskId": format!("upstream-task-{n}"), "status": "completed",
            "createdAt": "2026-12-01T00:00:00.000Z", "lastUpdatedAt": "2026-12-01T00:00:01.000Z",
            "ttl": 60_000 })
    };
    match cursor {
        None => rpc_result(id, json!({ "tasks": [task(1)], "nextCursor": "page-2" })),
        Some("page-2") => rpc_result(id, json!({ "tasks": [task(2)] })),
        Some(_) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32602, "message": "Invalid cursor" } })
        }
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn handle_post(
    State(shared): State<St>,
    Extension(hangup): Extension<Hangup>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let counted = shared.clone();
    let _in_flight = PostInFlight::new(&counted.counters);
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error"}}))).into_response();
        }
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "client must accept application/json and text/event-stream",
        )
            .into_response();
    }
    let accept_sse = true;
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (mode, known) = {
        let mut s = shared.state.lock().unwrap();
        s.requests.push((method.clone(), headers.clone()));
        if s.down {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        (
            s.mode,
            session.as_ref().is_some_and(|id| s.sessions.contains(id)),
        )
    };
    let id = msg.get("id").cloned();
    let legacy_only = shared.state.lock().unwrap().legacy_only;
    let modern = !legacy_only
        && headers
            .get("mcp-protocol-version")
            .and_then(|v| v.to_str().ok())
            == Some(MODERN);
    let answer =
        |mode, accept_sse, messages, delay| answer_as(modern, mode, accept_sse, messages, delay);
    if modern {
        if let Some(refusal) = modern_checks(&headers, &msg) {
            return refusal;
        }
        let id = id.clone().unwrap_or(Value::Null);
        match method.as_str() {
            "server/discover" => {
                return answer(
                    mode,
                    accept_sse,
                    vec![rpc_result(&id, discover_result())],
                    Duration::ZERO,
                );
            }
            "tools/list" => {
                let mut t = tools();
                t["ttlMs"] = json!(60_000);
                t["cacheScope"] = json!("public");
                return answer(mode, accept_sse, vec![rpc_result(&id, t)], Duration::ZERO);
            }
            _ => {}
        }
    }
    if method == "initialize" {
        let sid = uuid::Uuid::new_v4().to_string();
        shared.state.lock().unwrap().sessions.insert(sid.clone());
        let version = msg
            .pointer("/params/protocolVersion")
            .cloned()
            .unwrap_or(json!("2025-06-18"));
        let result = json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": true } },
            "serverInfo": { "name": "fake-upstream", "version": "1.0.0" },
        });
        let mut r = answer(
            mode,
            accept_sse,
            vec![rpc_result(id.as_ref().unwrap_or(&Value::Null), result)],
            Duration::ZERO,
        );
        r.headers_mut()
            .insert("mcp-session-id", HeaderValue::from_str(&sid).unwrap());
        return r;
    }
    match &session {
        // 2026-07-28 has no sessions: an Mcp-Session-Id is ignored.
        _ if modern => {}
        None => return (StatusCode::BAD_REQUEST, "Mcp-Session-Id required").into_response(),
        Some(_) if !known => return (StatusCode::NOT_FOUND, "session not found").into_response(),
        Some(_) => {}
    }
    if msg.is_array() {
        // A batch (2025-03-26): notifications only are accepted; requests get their answers.
        let answers: Vec<Value> = msg
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                let id = m.get("id")?;
                m.get("method")?;
                Some(rpc_result(id, json!({})))
            })
            .collect();
        if answers.is_empty() {
            return StatusCode::ACCEPTED.into_response();
        }
        return (
            [(header::CONTENT_TYPE, "application/json")],
            Value::Array(answers).to_string(),
        )
            .into_response();
    }
    let Some(id) = id else {
        // Notifications and responses are accepted without a body.
        return StatusCode::ACCEPTED.into_response();
    };
    if msg.get("method").is_none() {
        // A response from the client to a request of ours.
        let waiter = shared.state.lock().unwrap().asked.remove(&id.to_string());
        match waiter {
            Some(tx) => {
                let _ = tx.send(msg);
            }
            None => shared.state.lock().unwrap().stray_responses.push(msg),
        }
        return StatusCode::ACCEPTED.into_response();
    }
    match method.as_str() {
        "ping" => answer(
            mode,
            accept_sse,
            vec![rpc_result(&id, json!({}))],
            Duration::ZERO,
        ),
        "tools/list" => answer(
            mode,
            accept_sse,
            vec![rpc_result(&id, tools())],
            Duration::ZERO,
        ),
        "tasks/list" => {
            let cursor = msg.pointer("/params/cursor").and_then(Value::as_str);
            answer(
                mode,
                accept_sse,
                vec![upstream_tasks(&id, cursor)],
                Duration::ZERO,
            )
        }
        "tools/call" => {
            let tool = msg
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let arguments = msg
                .pointer("/params/arguments")
                .cloned()
                .unwrap_or(json!({}));
            {
                let mut s = shared.state.lock().unwrap();
                s.calls.push(RecordedCall {
                    session: session.clone(),
                    tool: tool.clone(),
                    arguments: arguments.clone(),
                });
                s.call_params
                    .push(msg.get("params").cloned().unwrap_or(Value::Null));
            }
            if tool == "stall" {
                // A server slow to answer at all: nothing, not even headers, for `ms`.
                let ms = arguments.get("ms").and_then(Value::as_u64).unwrap_or(100);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match tool.as_str() {
                "explode" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                "hangup" => {
                    // The call ran; the connection goes before any answer does.
                    hangup.0.notify_one();
                    return futures::future::pending().await;
                }
                "ask_client" => return ask_client(shared, id, &arguments),
                "flood" => return flood(shared, id, &arguments),
                "die" => return die(shared, id),
                "wizard" => {
                    return answer(mode, accept_sse, vec![wizard(&id, &msg)], Duration::ZERO);
                }
                _ => {}
            }
            let delay = if tool == "slow" {
                Duration::from_millis(arguments.get("ms").and_then(Value::as_u64).unwrap_or(100))
            } else {
                Duration::ZERO
            };
            let mut messages = Vec::new();
            if let Some(token) = msg.pointer("/params/_meta/progressToken") {
                messages.push(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1, "total": 2}}));
            }
            let text = json!({ "tool": tool, "arguments": arguments }).to_string();
            messages.push(text_result(&id, text));
            answer(mode, accept_sse, messages, delay)
        }
        _ => answer(
            mode,
            accept_sse,
            vec![
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}}),
            ],
            Duration::ZERO,
        ),
    }
}

/// A multi round-trip tool (2026-07-28): the first call gets an `InputRequiredResult` asking
/// to confirm, with `requestState` `wizard:<amount>` (none with `no_state`); a retry carrying
/// `inputResponses.confirm` completes only if it brings exactly that state back (or none).
fn wizard(id: &Value, msg: &Value) -> Value {
    let params = &msg["params"];
    let amount = params
        .pointer("/arguments/amount")
        .cloned()
        .unwrap_or(Value::Null);
    let no_state = params
        .pointer("/arguments/no_state")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let expected = (!no_state).then(|| format!("wizard:{amount}"));
    let state = params.get("requestState").and_then(Value::as_str);
    match params
        .pointer("/inputResponses/confirm/action")
        .and_then(Value::as_str)
    {
        None => {
            let mut r = json!({
                "resultType": "input_required",
                "inputRequests": {"confirm": {"method": "elicitation/create", "params": {
                    "message": "Confirm the refund?",
                    "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
                }}}
            });
            if let Some(s) = &expected {
                r["requestState"] = json!(s);
            }
            rpc_result(id, r)
        }
        Some(action) if state == expected.as_deref() => text_result(
            id,
            json!({"tool": "wizard", "amount": amount, "confirmed": action}).to_string(),
        ),
        Some(_) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "bad requestState", "data": {"got": state}}})
        }
    }
}

/// Asks the client (`arguments.method`, e.g. `sampling/createMessage`) inside the SSE answer,
/// then answers the call with the client's response.
fn ask_client(shared: St, id: Value, arguments: &Value) -> Response {
    let method = arguments
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("roots/list")
        .to_owned();
    let ask_id = format!("srv-{}", uuid::Uuid::new_v4().simple());
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared
        .state
        .lock()
        .unwrap()
        .asked
        .insert(json!(ask_id).to_string(), tx);
    let params = match method.as_str() {
        "sampling/createMessage" => {
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": "say hi"}}], "maxTokens": 10})
        }
        "elicitation/create" => {
            json!({"message": "Your name?", "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}})
        }
        _ => json!({}),
    };
    let question = json!({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params});
    let stream = async_stream::stream! {
        let mut guard = DropGuard(shared, false);
        yield Ok::<_, std::io::Error>(sse_event(1, &question));
        let reply = tokio::time::timeout(Duration::from_secs(10), rx).await;
        let text = match reply {
            Ok(Ok(r)) => json!({ "client_said": r }).to_string(),
            _ => json!({ "client_said": null }).to_string(),
        };
        yield Ok(sse_event(2, &text_result(&id, text)));
        guard.1 = true;
    };
    sse_response(stream)
}

/// `n` notifications of about `size` bytes each (one every `every_ms`, if given), stamped with
/// the time they were sent, then the answer. Counts every event as it is handed to the network.
fn flood(shared: St, id: Value, arguments: &Value) -> Response {
    let n = arguments.get("n").and_then(Value::as_u64).unwrap_or(100);
    let size = arguments.get("size").and_then(Value::as_u64).unwrap_or(100) as usize;
    let every = Duration::from_millis(
        arguments
            .get("every_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    );
    let pad = "x".repeat(size);
    let stream = async_stream::stream! {
        let mut guard = DropGuard(shared.clone(), false);
        for i in 0..n {
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
            let m = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": {"i": i, "t": now_ns().to_string(), "pad": pad}}});
            yield Ok::<_, std::io::Error>(sse_event(i + 1, &m));
            shared.counters.flood_sent.fetch_add(1, Ordering::SeqCst);
        }
        yield Ok(sse_event(n + 1, &text_result(&id, format!("{n} events sent"))));
        guard.1 = true;
    };
    sse_response(stream)
}

/// One notification, then the stream breaks off without an answer.
fn die(shared: St, id: Value) -> Response {
    let stream = async_stream::stream! {
        let _guard = DropGuard(shared, true);
        let m = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": format!("about to die answering {id}")}});
        yield Ok::<_, std::io::Error>(Bytes::from(format!("event: message\ndata: {m}\n\n")));
        tokio::time::sleep(Duration::from_millis(50)).await;
        yield Err(std::io::Error::other("upstream crashed"));
    };
    sse_response(stream)
}

/// The revision without sessions.
const MODERN: &str = "2026-07-28";

fn discover_result() -> Value {
    json!({
        "supportedVersions": ["2025-03-26", "2025-06-18", "2025-11-25", MODERN],
        "capabilities": { "tools": { "listChanged": true } },
        "_meta": { "io.modelcontextprotocol/serverInfo": { "name": "fake-upstream", "version": "1.0.0" } },
        "ttlMs": 60_000,
        "cacheScope": "public",
    })
}

fn modern_refusal(code: i64, message: String, data: Value) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if !data.is_null() {
        error["data"] = data;
    }
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": error });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn decode_header(v: &str) -> Option<String> {
    use base64::Engine;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(p) => base64::engine::general_purpose::STANDARD
            .decode(p)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

/// The 2026-07-28 server's checks of a request, in the SDK's order: the envelope, the headers
/// against the body, then the version. Some refusal, or None when the request passes.
fn modern_checks(headers: &HeaderMap, msg: &Value) -> Option<Response> {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    // Notifications are not checked.
    msg.get("id")?;
    let meta = msg.pointer("/params/_meta");
    let version = meta.and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"));
    if version.is_none()
        || meta
            .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
            .is_none()
    {
        return Some(modern_refusal(
            -32602,
            "params._meta is missing the envelope keys".into(),
            Value::Null,
        ));
    }
    if version.and_then(Value::as_str) != h("mcp-protocol-version") {
        return Some(modern_refusal(
            -32020,
            "MCP-Protocol-Version header does not match _meta".into(),
            Value::Null,
        ));
    }
    let method = msg.get("method").and_then(Value::as_str);
    if h("mcp-method") != method {
        return Some(modern_refusal(
            -32020,
            "Mcp-Method header does not match the body".into(),
            Value::Null,
        ));
    }
    let name = match method {
        Some("tools/call" | "prompts/get") => msg.pointer("/params/name"),
        Some("resources/read") => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(name) = name.and_then(Value::as_str)
        && h("mcp-name").and_then(decode_header).as_deref() != Some(name)
    {
        return Some(modern_refusal(
            -32020,
            "Mcp-Name header does not match the body".into(),
            Value::Null,
        ));
    }
    if method == Some("tools/call") && msg.pointer("/params/name") == Some(&json!("routed")) {
        let region = msg
            .pointer("/params/arguments/region")
            .and_then(Value::as_str);
        if h("mcp-param-region").and_then(decode_header).as_deref() != region {
            return Some(modern_refusal(
                -32020,
                "Mcp-Param-Region header does not match the body".into(),
                Value::Null,
            ));
        }
    }
    if version.and_then(Value::as_str) != Some(MODERN) {
        let data = json!({ "supported": [MODERN], "requested": version });
        return Some(modern_refusal(
            -32022,
            "Unsupported protocol version".into(),
            data,
        ));
    }
    None
}

async fn handle_get(State(shared): State<St>, headers: HeaderMap) -> Response {
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let known = {
        let mut s = shared.state.lock().unwrap();
        s.requests.push(("GET".to_owned(), headers.clone()));
        session.as_ref().is_some_and(|id| s.sessions.contains(id))
    };
    if !known {
        return (StatusCode::NOT_FOUND, "session not found").into_response();
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.contains("text/event-stream") {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    let mut after: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stream = async_stream::stream! {
        let _guard = DropGuard(shared.clone(), true);
        yield Ok::<_, std::io::Error>(Bytes::from_static(b": stream open\n\n"));
        loop {
            let notified = shared.pushed.notified();
            let fresh: Vec<(u64, Value)> = shared
                .state
                .lock()
                .unwrap()
                .pushed
                .iter()
                .filter(|(id, s, _)| *id > after && s.as_ref().is_none_or(|s| Some(s) == session.as_ref()))
                .map(|(id, _, m)| (*id, m.clone()))
                .collect();
            for (id, m) in fresh {
                after = id;
                yield Ok(sse_event(id, &m));
            }
            notified.await;
        }
    };
    sse_response(stream)
}

async fn handle_delete(State(shared): State<St>, headers: HeaderMap) -> Response {
    let id = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match id {
        Some(id) if shared.state.lock().unwrap().sessions.remove(&id) => {
            StatusCode::OK.into_response()
        }
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}
