//! A faithful fake upstream MCP server (streamable HTTP).
//!
//! It speaks the transport as the MCP specification gives it: `initialize` mints an
//! `Mcp-Session-Id`, later requests without a known session get 400/404, notifications and
//! responses get 202, and answers come as JSON or as SSE events with ids, as the test chooses.
//! Every `tools/call` is recorded so tests can prove a call ran exactly once.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

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
    sessions: HashSet<String>,
    calls: Vec<RecordedCall>,
    requests: Vec<(String, HeaderMap)>,
}

/// A running fake upstream.
#[derive(Clone, Debug)]
pub struct FakeUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl FakeUpstream {
    /// Starts a fake on 127.0.0.1 with an OS-chosen port.
    pub async fn spawn(mode: Mode) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            mode,
            down: false,
            sessions: HashSet::new(),
            calls: Vec::new(),
            requests: Vec::new(),
        }));
        let app = Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state }
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every `tools/call` received so far.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The method and headers of every POST received so far.
    pub fn requests(&self) -> Vec<(String, HeaderMap)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Switches between JSON and SSE answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// While down, every request gets HTTP 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Forgets every session, as a restarted server would.
    pub fn forget_sessions(&self) {
        self.state.lock().unwrap().sessions.clear();
    }
}

fn sse_event(id: u64, msg: &Value) -> Bytes {
    Bytes::from(format!("event: message\nid: {id}\ndata: {msg}\n\n"))
}

fn answer(mode: Mode, accept_sse: bool, messages: Vec<Value>, delay: Duration) -> Response {
    if mode == Mode::Sse && accept_sse {
        let stream = async_stream::stream! {
            let n = messages.len();
            for (i, m) in messages.into_iter().enumerate() {
                // The final answer comes after the delay; notifications before it go at once.
                if i + 1 == n && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                yield Ok::<_, Infallible>(sse_event(i as u64 + 1, &m));
            }
        };
        let mut r = Response::new(Body::from_stream(stream));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
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

fn tools() -> Value {
    let schema = |props: Value, required: Value| json!({ "type": "object", "properties": props, "required": required });
    json!({ "tools": [
        { "name": "list_charges", "description": "List charges", "inputSchema": schema(json!({"limit": {"type": "integer"}}), json!([])) },
        { "name": "create_refund", "description": "Refund a charge", "inputSchema": schema(json!({"amount": {"type": "number"}, "currency": {"type": "string"}}), json!(["amount"])) },
        { "name": "delete_customer", "description": "Delete a customer", "inputSchema": schema(json!({"id": {"type": "string"}}), json!(["id"])) },
        { "name": "slow", "description": "Answers after ms milliseconds", "inputSchema": schema(json!({"ms": {"type": "integer"}}), json!([])) },
    ]})
}

async fn handle_post(
    State(state): State<Arc<Mutex<FakeState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
        let mut s = state.lock().unwrap();
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
    if method == "initialize" {
        let sid = uuid::Uuid::new_v4().to_string();
        state.lock().unwrap().sessions.insert(sid.clone());
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
        None => return (StatusCode::BAD_REQUEST, "Mcp-Session-Id required").into_response(),
        Some(_) if !known => return (StatusCode::NOT_FOUND, "session not found").into_response(),
        Some(_) => {}
    }
    let Some(id) = id else {
        // Notifications and responses are accepted without a body.
        return StatusCode::ACCEPTED.into_response();
    };
    if msg.get("method").is_none() {
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
            state.lock().unwrap().calls.push(RecordedCall {
                session: session.clone(),
                tool: tool.clone(),
                arguments: arguments.clone(),
            });
            if tool == "explode" {
                return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
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
            messages.push(rpc_result(
                &id,
                json!({ "content": [{ "type": "text", "text": text }], "isError": false }),
            ));
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

async fn handle_get(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap) -> Response {
    let known = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|id| state.lock().unwrap().sessions.contains(id));
    if !known {
        return (StatusCode::NOT_FOUND, "session not found").into_response();
    }
    let stream = async_stream::stream! {
        yield Ok::<_, Infallible>(Bytes::from_static(b": stream open\n\n"));
        futures::future::pending::<()>().await;
    };
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn handle_delete(State(state): State<Arc<Mutex<FakeState>>>, headers: HeaderMap) -> Response {
    let id = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match id {
        Some(id) if state.lock().unwrap().sessions.remove(&id) => StatusCode::OK.into_response(),
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}
