//! Fake upstream MCP servers that speak one era only, as real single-era servers do.
//!
//! - [`Era::Legacy`]: revisions 2025-03-26 to 2025-11-25. `initialize` mints an
//!   `Mcp-Session-Id`; every later request needs it (missing: 400, unknown: 404); an
//!   `MCP-Protocol-Version` it does not speak gets 400; `server/discover` and other unknown
//!   methods get -32601; results carry no `resultType`; the GET stream (one per session, as the
//!   TypeScript SDK allows) carries [`SingleEra::push`]ed messages with event ids; DELETE ends
//!   the session.
//! - [`Era::Modern`]: 2026-07-28 only. GET and DELETE get 405; `initialize` gets 400 -32022
//!   naming the versions it speaks; every request needs `MCP-Protocol-Version: 2026-07-28`, the
//!   `_meta` envelope (version and client capabilities), and `Mcp-Method` / `Mcp-Name` /
//!   `Mcp-Param-Region` matching the body (else 400 -32020); results carry `resultType`, lists
//!   `ttlMs` and `cacheScope`; `subscriptions/listen` acknowledges and then streams pushed
//!   notifications of the kinds asked for, tagged with the subscription id.
//!
//! Both record every request (method, headers, body) and every `tools/call`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Which era the fake speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// 2025-03-26, 2025-06-18 and 2025-11-25, with sessions.
    Legacy,
    /// 2026-07-28 only, stateless.
    Modern,
}

const MODERN: &str = "2026-07-28";
const LEGACY: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];

#[derive(Debug, Default)]
struct FakeState {
    sessions: HashSet<String>,
    /// Sessions whose GET stream is open.
    streaming: HashSet<String>,
    initializes: usize,
    deletes: usize,
    requests: Vec<(String, HeaderMap, Value)>,
    calls: Vec<(Option<String>, String, Value)>,
}

#[derive(Debug)]
struct Shared {
    era: Era,
    state: Mutex<FakeState>,
    pushed: broadcast::Sender<Value>,
}

type St = Arc<Shared>;

/// A running single-era fake upstream.
#[derive(Clone, Debug)]
pub struct SingleEra {
    pub addr: SocketAddr,
    shared: St,
}

impl SingleEra {
    /// Starts a fake of `era` on 127.0.0.1.
    pub async fn spawn(era: Era) -> Self {
        let (pushed, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            era,
            state: Mutex::default(),
            pushed,
        });
        let app = Router::new()
            .route(
                "/mcp",
                post(handle_post).get(handle_get).delete(handle_delete),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.shared.state.lock().unwrap()
    }

    /// The MCP endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Every request so far: method (`GET`/`DELETE` for those), headers, body.
    pub fn requests(&self) -> Vec<(String, HeaderMap, Value)> {
        self.state().requests.clone()
    }

    /// Every `tools/call` so far: session, tool, arguments.
    pub fn calls(&self) -> Vec<(Option<String>, String, Value)> {
        self.state().calls.clone()
    }

    /// How many `initialize` requests opened a session.
    pub fn initializes(&self) -> usize {
        self.state().initializes
    }

    /// How many sessions were ended by DELETE.
    pub fn deletes(&self) -> usize {
        self.state().deletes
    }

    /// How many GET streams are open now.
    pub fn open_streams(&self) -> usize {
        self.state().streaming.len()
    }

    /// Forgets every session, as a restarted server would.
    pub fn forget_sessions(&self) {
        self.state().sessions.clear();
    }

    /// Sends `msg` on every open stream (GET streams, or listen streams that asked for it).
    pub fn push(&self, msg: Value) {
        let _ = self.shared.pushed.send(msg);
    }
}

fn rpc(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(status: StatusCode, id: &Value, code: i64, message: &str, data: Value) -> Response {
    let mut error = json!({"code": code, "message": message});
    if !data.is_null() {
        error["data"] = data;
    }
    (
        status,
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": error})),
    )
        .into_response()
}

fn tools(era: Era) -> Value {
    let mut t = json!({"tools": [
        {"name": "list_charges", "description": "List charges", "inputSchema": {"type": "object", "properties": {"limit": {"type": "integer"}}}},
        {"name": "create_refund", "description": "Refund a charge", "inputSchema": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}},
        {"name": "delete_customer", "description": "Delete a customer", "inputSchema": {"type": "object", "properties": {"id": {"type": "string"}}}},
        {"name": "routed", "description": "Echoes; region is mirrored as Mcp-Param-Region", "inputSchema": {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}, "required": ["region"]}},
        {"name": "wizard", "description": "Asks for input (2026-07-28 only)", "inputSchema": {"type": "object", "properties": {}}},
    ]});
    if era == Era::Modern {
        t["ttlMs"] = json!(60_000);
        t["cacheScope"] = json!("public");
    }
    t
}

fn sse_event(id: Option<u64>, msg: &Value) -> Bytes {
    match id {
        Some(i) => Bytes::from(format!("event: message\nid: {i}\ndata: {msg}\n\n")),
        None => Bytes::from(format!("event: message\ndata: {msg}\n\n")),
    }
}

fn sse(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Response {
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r
}

async fn handle_post(State(shared): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            -32700,
            "Parse error",
            Value::Null,
        );
    };
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    shared
        .state
        .lock()
        .unwrap()
        .requests
        .push((method.clone(), headers.clone(), msg.clone()));
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    }
    match shared.era {
        Era::Legacy => legacy_post(&shared, &headers, &msg, &method),
        Era::Modern => modern_post(&shared, &headers, &msg, &method),
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn legacy_post(shared: &St, headers: &HeaderMap, msg: &Value, method: &str) -> Response {
    let id = msg.get("id").cloned();
    if method == "initialize" {
        let asked = msg
            .pointer("/params/protocolVersion")
            .and_then(Value::as_str);
        let version = asked.filter(|v| LEGACY.contains(v)).unwrap_or("2025-11-25");
        let sid = uuid::Uuid::new_v4().to_string();
        {
            let mut s = shared.state.lock().unwrap();
            s.sessions.insert(sid.clone());
            s.initializes += 1;
        }
        let result = json!({"protocolVersion": version,
            "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true, "listChanged": true}, "logging": {}},
            "serverInfo": {"name": "legacy-upstream", "version": "1.0.0"}, "instructions": "An older server."});
        let mut r = axum::Json(rpc(id.as_ref().unwrap_or(&Value::Null), result)).into_response();
        r.headers_mut()
            .insert("mcp-session-id", HeaderValue::from_str(&sid).unwrap());
        return r;
    }
    let session = header_str(headers, "mcp-session-id").map(str::to_owned);
    let Some(session) = session else {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            -32000,
            "Bad Request: No valid session ID provided",
            Value::Null,
        );
    };
    if !shared.state.lock().unwrap().sessions.contains(&session) {
        return rpc_error(
            StatusCode::NOT_FOUND,
            &Value::Null,
            -32001,
            "Session not found",
            Value::Null,
        );
    }
    if let Some(v) = header_str(headers, "mcp-protocol-version")
        && !LEGACY.contains(&v)
    {
        let why = format!("Bad Request: Unsupported protocol version: {v}");
        return rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            -32000,
            &why,
            Value::Null,
        );
    }
    let Some(id) = id else {
        return StatusCode::ACCEPTED.into_response();
    };
    if msg.get("method").is_none() {
        return StatusCode::ACCEPTED.into_response();
    }
    match method {
        "ping" => axum::Json(rpc(&id, json!({}))).into_response(),
        "tools/list" => axum::Json(rpc(&id, tools(Era::Legacy))).into_response(),
        "tools/call" => {
            let (tool, args) = record_call(shared, Some(session), msg);
            // Answered over SSE with event ids, a log message and progress first.
            let mut out = vec![json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}})];
            if let Some(token) = msg.pointer("/params/_meta/progressToken") {
                out.push(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}}));
            }
            out.push(rpc(&id, text_result(&tool, &args)));
            let stream = futures::stream::iter(
                out.into_iter()
                    .enumerate()
                    .map(|(i, m)| Ok(sse_event(Some(i as u64 + 1), &m))),
            );
            sse(stream)
        }
        _ => axum::Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "Method not found"}})).into_response(),
    }
}

fn record_call(shared: &St, session: Option<String>, msg: &Value) -> (String, Value) {
    let tool = msg
        .pointer("/params/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let args = msg
        .pointer("/params/arguments")
        .cloned()
        .unwrap_or(json!({}));
    shared
        .state
        .lock()
        .unwrap()
        .calls
        .push((session, tool.clone(), args.clone()));
    (tool, args)
}

fn text_result(tool: &str, args: &Value) -> Value {
    let text = json!({"tool": tool, "arguments": args}).to_string();
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

fn decode(v: &str) -> Option<String> {
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

/// The 2026-07-28 checks of a request: Some refusal, or None when it passes.
fn modern_refusal(headers: &HeaderMap, msg: &Value, method: &str) -> Option<Response> {
    let bad = |code: i64, why: &str| {
        Some(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            code,
            why,
            Value::Null,
        ))
    };
    let version = header_str(headers, "mcp-protocol-version");
    if method == "initialize" || version != Some(MODERN) {
        let data = json!({"supported": [MODERN], "requested": version});
        return Some(rpc_error(
            StatusCode::BAD_REQUEST,
            &Value::Null,
            -32022,
            "Unsupported protocol version (this server speaks only 2026-07-28)",
            data,
        ));
    }
    let meta = msg.pointer("/params/_meta");
    if meta
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str)
        != Some(MODERN)
    {
        return bad(-32020, "_meta protocol version missing or not the header's");
    }
    if meta
        .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"))
        .is_none()
    {
        return bad(-32602, "_meta client capabilities missing");
    }
    if header_str(headers, "mcp-method") != Some(method) {
        return bad(-32020, "Mcp-Method does not match the body");
    }
    let name = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name"),
        "resources/read" => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(n) = name.and_then(Value::as_str)
        && header_str(headers, "mcp-name").and_then(decode).as_deref() != Some(n)
    {
        return bad(-32020, "Mcp-Name does not match the body");
    }
    if method == "tools/call" && msg.pointer("/params/name") == Some(&json!("routed")) {
        let region = msg
            .pointer("/params/arguments/region")
            .and_then(Value::as_str);
        if header_str(headers, "mcp-param-region")
            .and_then(decode)
            .as_deref()
            != region
        {
            return bad(-32020, "Mcp-Param-Region does not match the body");
        }
    }
    None
}

fn complete(id: &Value, mut result: Value) -> Response {
    result["resultType"] = json!("complete");
    axum::Json(rpc(id, result)).into_response()
}

fn modern_post(shared: &St, headers: &HeaderMap, msg: &Value, method: &str) -> Response {
    let Some(id) = msg.get("id").cloned() else {
        return StatusCode::ACCEPTED.into_response();
    };
    if let Some(refusal) = modern_refusal(headers, msg, method) {
        return refusal;
    }
    match method {
        "server/discover" => complete(
            &id,
            json!({"supportedVersions": [MODERN],
            "capabilities": {"tools": {"listChanged": true}, "resources": {"listChanged": true}, "logging": {}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-upstream", "version": "2.0.0"}},
            "instructions": "A 2026-07-28 server.", "ttlMs": 60_000, "cacheScope": "public"}),
        ),
        "tools/list" => complete(&id, tools(Era::Modern)),
        "tools/call" => {
            let (tool, args) = record_call(
                shared,
                header_str(headers, "mcp-session-id").map(str::to_owned),
                msg,
            );
            if tool == "wizard" {
                return axum::Json(rpc(&id, json!({"resultType": "input_required", "inputRequests": {"confirm": {"method": "elicitation/create", "params": {"message": "Sure?"}}}}))).into_response();
            }
            complete(&id, text_result(&tool, &args))
        }
        "subscriptions/listen" => listen(shared, id, msg),
        _ => rpc_error(
            StatusCode::NOT_FOUND,
            &id,
            -32601,
            "Method not found",
            Value::Null,
        ),
    }
}

/// The filter key of a change notification.
fn filter_key(method: &str) -> Option<&'static str> {
    match method {
        "notifications/tools/list_changed" => Some("toolsListChanged"),
        "notifications/prompts/list_changed" => Some("promptsListChanged"),
        "notifications/resources/list_changed" => Some("resourcesListChanged"),
        _ => None,
    }
}

fn listen(shared: &St, id: Value, msg: &Value) -> Response {
    let filter = msg
        .pointer("/params/notifications")
        .cloned()
        .unwrap_or(json!({}));
    let mut rx = shared.pushed.subscribe();
    let tag = |mut m: Value, id: &Value| {
        m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] = id.clone();
        m
    };
    let stream = async_stream::stream! {
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {"notifications": filter.clone()}});
        yield Ok::<_, std::io::Error>(sse_event(None, &tag(ack, &id)));
        while let Ok(m) = rx.recv().await {
            let asked = m.get("method").and_then(Value::as_str).and_then(filter_key)
                .is_some_and(|k| filter.get(k).and_then(Value::as_bool) == Some(true));
            if asked {
                yield Ok(sse_event(None, &tag(m, &id)));
            }
        }
    };
    sse(stream)
}

/// Removes a session from the streaming set when its GET stream goes away.
struct Streaming(St, String);

impl Drop for Streaming {
    fn drop(&mut self) {
        self.0.state.lock().unwrap().streaming.remove(&self.1);
    }
}

async fn handle_get(State(shared): State<St>, headers: HeaderMap) -> Response {
    shared
        .state
        .lock()
        .unwrap()
        .requests
        .push(("GET".to_owned(), headers.clone(), Value::Null));
    if shared.era == Era::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(session) = header_str(&headers, "mcp-session-id").map(str::to_owned) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    {
        let mut s = shared.state.lock().unwrap();
        if !s.sessions.contains(&session) {
            return StatusCode::NOT_FOUND.into_response();
        }
        // One standalone stream per session, as the TypeScript SDK's servers allow.
        if !s.streaming.insert(session.clone()) {
            return StatusCode::CONFLICT.into_response();
        }
    }
    let mut rx = shared.pushed.subscribe();
    let guard = Streaming(shared.clone(), session);
    let stream = async_stream::stream! {
        let _guard = guard;
        yield Ok::<_, std::io::Error>(Bytes::from_static(b": stream open\n\n"));
        let mut n = 0;
        while let Ok(m) = rx.recv().await {
            n += 1;
            yield Ok(sse_event(Some(n), &m));
        }
    };
    sse(stream)
}

async fn handle_delete(State(shared): State<St>, headers: HeaderMap) -> Response {
    let mut s = shared.state.lock().unwrap();
    s.requests
        .push(("DELETE".to_owned(), headers.clone(), Value::Null));
    if shared.era == Era::Modern {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    match header_str(&headers, "mcp-session-id") {
        Some(id) if s.sessions.remove(id) => {
            s.deletes += 1;
            StatusCode::OK.into_response()
        }
        Some(_) => StatusCode::NOT_FOUND.into_response(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}
