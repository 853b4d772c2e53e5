//! A client of the older revisions in front of an upstream of 2026-07-28 only: the gateway
//! answers `initialize` from `server/discover`, keeps the session itself, and sends each of the
//! session's requests upstream as a stateless one (version header, `_meta` envelope with the
//! client's capabilities, and the `Mcp-Method`/`Mcp-Name`/`Mcp-Param-*` headers of its body).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::SessionId;
use airlock_shared::db::Db;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::rewrite::{self, Mapper};
use crate::answer::Whole;
use crate::era::{MODERN, VERSION_META};
use crate::error::UpstreamError;
use crate::input_schema::{InputSchemas, ParamHeader};
use crate::transport::SUPPORTED_PROTOCOL_VERSIONS;
use crate::upstream::{
    METHOD_HEADER, NAME_HEADER, Outgoing, PARAM_PREFIX, PROTOCOL_HEADER, Upstream,
};

use super::to_legacy::LATEST_LEGACY;

/// What the client of a bridged session said about itself in its `initialize`.
#[derive(Debug)]
pub struct ClientFacts {
    /// Its capabilities, less those that cannot cross the bridge.
    pub capabilities: Value,
    pub info: Option<Value>,
}

/// Client capabilities that would invite an `InputRequiredResult`, which an older client
/// cannot answer: the upstream is told the client lacks them.
const NOT_CROSSING: &[&str] = &["sampling", "elicitation", "roots"];

/// Pages of `tools/list` read at most while looking for one tool's `x-mcp-header` annotations.
const MAX_LIST_PAGES: usize = 20;

impl ClientFacts {
    /// The facts in an `initialize` request's `params`.
    pub fn from_init(params: &Value) -> Self {
        let mut capabilities = params
            .get("capabilities")
            .cloned()
            .unwrap_or_else(|| json!({}));
        if let Some(c) = capabilities.as_object_mut() {
            for k in NOT_CROSSING {
                c.remove(*k);
            }
        }
        Self {
            capabilities,
            info: params.get("clientInfo").cloned(),
        }
    }

    /// The `_meta` envelope of a 2026-07-28 request in this client's name.
    pub fn meta(&self) -> Value {
        let mut m = json!({ VERSION_META: MODERN, "io.modelcontextprotocol/clientCapabilities": self.capabilities });
        if let Some(i) = &self.info {
            m["io.modelcontextprotocol/clientInfo"] = i.clone();
        }
        m
    }
}

/// The bridge's side of sessions in front of a 2026-07-28 upstream.
pub struct ModernUpstream {
    upstream: Upstream,
    schemas: Arc<InputSchemas>,
    pool: Db,
    clients: Mutex<HashMap<SessionId, Arc<ClientFacts>>>,
}

impl ModernUpstream {
    /// On `upstream`; the tools' annotations go to `schemas`, sessions are read from `pool`.
    pub fn new(upstream: Upstream, schemas: Arc<InputSchemas>, pool: Db) -> Self {
        Self {
            upstream,
            schemas,
            pool,
            clients: Mutex::default(),
        }
    }

    /// `initialize` answered from the upstream's `server/discover`: the client's version when
    /// the gateway speaks it, the upstream's capabilities and identity. No upstream session.
    pub async fn initialize(&self, body: &Bytes) -> Result<reqwest::Response, UpstreamError> {
        let init: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = init.get("id").cloned().unwrap_or(Value::Null);
        let params = init.get("params").cloned().unwrap_or(Value::Null);
        let facts = ClientFacts::from_init(&params);
        let probe = json!({"jsonrpc": "2.0", "id": "airlock-bridge-discover", "method": "server/discover", "params": {"_meta": facts.meta()}});
        let resp = self.send_modern(&probe).await?;
        if !resp.status().is_success() {
            return Ok(resp);
        }
        let answer = Whole::read(resp, &probe["id"]).await?;
        let response = answer
            .response
            .ok_or(UpstreamError::NoAnswer("server/discover got no answer"))?;
        let Some(discovered) = response.get("result") else {
            let mut refusal = response.clone();
            refusal["id"] = id;
            return Ok(rewrite::made_json(StatusCode::OK, &refusal));
        };
        let asked = params.get("protocolVersion").and_then(Value::as_str);
        Ok(rewrite::result(&id, initialize_result(asked, discovered)))
    }

    /// A request of a bridged session (`GET`: its stream), sent upstream as 2026-07-28.
    pub async fn send(
        &self,
        sid: &SessionId,
        method: reqwest::Method,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let facts = self.facts(sid).await?;
        if method == reqwest::Method::GET {
            return super::listen::serve_get(self, &facts).await;
        }
        let msg: Value = body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        if msg.is_array() {
            // 2026-07-28 has no batches; a batch's calls reach here one by one, the rest not.
            return Ok(rewrite::error(
                StatusCode::BAD_REQUEST,
                &Value::Null,
                -32600,
                "JSON-RPC batches cannot cross the gateway's bridge to MCP 2026-07-28",
            ));
        }
        let Some(req_method) = msg.get("method").and_then(Value::as_str) else {
            // A response from the client: 2026-07-28 servers ask nothing that needs one.
            return Ok(rewrite::accepted());
        };
        let Some(id) = msg.get("id").cloned() else {
            // Notifications (`initialized`, `cancelled`): 2026-07-28 has none over HTTP.
            return Ok(rewrite::accepted());
        };
        match req_method {
            // Gone in 2026-07-28; answered here as the session's server.
            "ping" | "logging/setLevel" => Ok(rewrite::result(&id, json!({}))),
            "resources/subscribe" | "resources/unsubscribe" => Ok(rewrite::error(
                StatusCode::OK,
                &id,
                -32601,
                "resources/subscribe is not available through the gateway's bridge to MCP 2026-07-28",
            )),
            _ => {
                let mut modern = msg.clone();
                let meta = modern_meta(msg.pointer("/params/_meta"), &facts);
                match modern.get_mut("params").and_then(Value::as_object_mut) {
                    Some(p) => {
                        p.insert("_meta".into(), meta);
                    }
                    None => modern["params"] = json!({ "_meta": meta }),
                }
                let resp = self.send_modern(&modern).await?;
                Ok(rewrite::map_answer(resp, legacy_answers()))
            }
        }
    }

    /// Sends a 2026-07-28 request with the headers its body calls for.
    pub async fn send_modern(&self, msg: &Value) -> Result<reqwest::Response, UpstreamError> {
        let mut headers = modern_headers(msg);
        if msg.get("method").and_then(Value::as_str) == Some("tools/call") {
            self.param_headers(msg, &mut headers).await;
        }
        self.post(msg, &headers).await
    }

    async fn post(
        &self,
        msg: &Value,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        self.upstream
            .send(Outgoing {
                method: reqwest::Method::POST,
                body: Some(Bytes::from(msg.to_string())),
                headers,
                upstream_session: None,
            })
            .await
    }

    /// The `Mcp-Param-*` headers of a `tools/call`, from its tool's annotations (the tools are
    /// listed first when the gateway has not seen them yet).
    async fn param_headers(&self, msg: &Value, headers: &mut HeaderMap) {
        let tool = msg
            .pointer("/params/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if self.schemas.param_headers(tool).is_none() {
            let _one = self.schemas.listing.lock().await;
            if self.schemas.param_headers(tool).is_none()
                && let Err(why) = self.list_tools(msg.pointer("/params/_meta")).await
            {
                tracing::warn!(tool, why = %why, "bridge: tools/list failed; Mcp-Param-* headers not sent");
            }
        }
        let args = msg.pointer("/params/arguments").unwrap_or(&Value::Null);
        for a in self
            .schemas
            .param_headers(tool)
            .iter()
            .flat_map(|a| a.iter())
        {
            if let Some((name, value)) = param_header(a, args) {
                headers.insert(name, value);
            }
        }
    }

    async fn list_tools(&self, meta: Option<&Value>) -> Result<(), String> {
        let mut cursor: Option<String> = None;
        for page in 0..MAX_LIST_PAGES {
            let mut params = json!({ "_meta": meta.cloned().unwrap_or_else(crate::era::own_meta) });
            if let Some(c) = &cursor {
                params["cursor"] = json!(c);
            }
            let id = json!(format!("airlock-bridge-tools-{page}"));
            let list =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
            let resp = self
                .post(&list, &modern_headers(&list))
                .await
                .map_err(|e| e.to_string())?;
            let answer = Whole::read(resp, &id).await.map_err(|e| e.to_string())?;
            let result = answer
                .response
                .and_then(|r| r.get("result").cloned())
                .ok_or("the upstream gave no tools/list result")?;
            self.schemas
                .put_page(cursor.as_deref().unwrap_or_default(), &result);
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The client facts of a bridged session: remembered, else from its `initialize` request.
    pub async fn facts(&self, sid: &SessionId) -> Result<Arc<ClientFacts>, UpstreamError> {
        if let Some(f) = self.clients.lock().ok().and_then(|c| c.get(sid).cloned()) {
            return Ok(f);
        }
        let row = airlock_shared::session::get_live(&self.pool, sid)
            .await
            .map_err(|e| UpstreamError::Unreadable(format!("cannot read the session: {e}")))?;
        let params = row
            .and_then(|r| r.init_request)
            .and_then(|i| i.get("params").cloned())
            .unwrap_or(Value::Null);
        let facts = Arc::new(ClientFacts::from_init(&params));
        if let Ok(mut c) = self.clients.lock() {
            // Facts never change; the map is only a cache of the rows.
            if c.len() >= 100_000 {
                c.clear();
            }
            c.insert(sid.clone(), facts.clone());
        }
        Ok(facts)
    }
}

/// The client's own `_meta` (progress token, trace context) with the envelope added.
fn modern_meta(client: Option<&Value>, facts: &ClientFacts) -> Value {
    let mut meta = client.cloned().unwrap_or_else(|| json!({}));
    if let (Some(m), Value::Object(env)) = (meta.as_object_mut(), facts.meta()) {
        m.extend(env);
    }
    meta
}

/// An `initialize` result made from a `server/discover` result.
pub fn initialize_result(asked: Option<&str>, discovered: &Value) -> Value {
    let version = asked
        .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v) && *v != MODERN)
        .unwrap_or(LATEST_LEGACY);
    let mut caps = discovered
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(c) = caps.as_object_mut() {
        // `resources/subscribe` and `logging/setLevel` have no 2026-07-28 counterpart here.
        if let Some(r) = c.get_mut("resources").and_then(Value::as_object_mut) {
            r.remove("subscribe");
        }
        c.remove("logging");
    }
    let info = discovered
        .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
        .cloned()
        .unwrap_or_else(|| json!({"name": "upstream", "version": "unknown"}));
    let mut out = Map::new();
    out.insert("protocolVersion".into(), json!(version));
    out.insert("capabilities".into(), caps);
    out.insert("serverInfo".into(), info);
    if let Some(i) = discovered.get("instructions") {
        out.insert("instructions".into(), i.clone());
    }
    Value::Object(out)
}

/// What an older client gets of the upstream's messages: results without the 2026-07-28
/// fields, and an `InputRequiredResult` (which it could not answer) as an error.
pub fn legacy_answers() -> Mapper {
    Box::new(|mut m: Value| {
        let input_required = m.pointer("/result/resultType").and_then(Value::as_str)
            == Some(crate::continuation::INPUT_REQUIRED);
        if input_required {
            let requests = m
                .pointer("/result/inputRequests")
                .cloned()
                .unwrap_or(Value::Null);
            return Some(
                json!({"jsonrpc": "2.0", "id": m.get("id").cloned().unwrap_or(Value::Null), "error": {
                    "code": -32603,
                    "message": "the upstream asks for input, which cannot cross the gateway's bridge from MCP 2026-07-28",
                    "data": {"inputRequests": requests},
                }}),
            );
        }
        if let Some(r) = m.get_mut("result").and_then(Value::as_object_mut) {
            for k in ["resultType", "ttlMs", "cacheScope"] {
                r.remove(k);
            }
        }
        Some(m)
    })
}

/// A header value as MCP carries it: as it is when it is plain visible ASCII, else (and when it
/// looks like the sentinel itself) as `=?base64?…?=`.
pub fn header_value(s: &str) -> Option<HeaderValue> {
    let plain = !s.is_empty()
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        && s.trim() == s
        && !(s.starts_with("=?base64?") && s.ends_with("?="));
    if plain {
        return HeaderValue::from_str(s).ok();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    HeaderValue::from_str(&format!("=?base64?{b64}?=")).ok()
}

/// `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` for a 2026-07-28 request's body.
pub fn modern_headers(msg: &Value) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(MODERN));
    let method = msg
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(method) {
        h.insert(METHOD_HEADER, v);
    }
    let name = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name"),
        "resources/read" => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(v) = name.and_then(Value::as_str).and_then(header_value) {
        h.insert(NAME_HEADER, v);
    }
    h
}

/// The `Mcp-Param-{name}` header of one annotated argument, if the arguments give it.
fn param_header(a: &ParamHeader, args: &Value) -> Option<(HeaderName, HeaderValue)> {
    let v = a.path.iter().try_fold(args, |v, k| v.get(k))?;
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => return None,
    };
    let name = HeaderName::from_bytes(format!("{PARAM_PREFIX}{}", a.token).as_bytes()).ok()?;
    Some((name, header_value(&text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_mirror_the_body_and_encode_what_is_not_plain() {
        let m = json!({"method": "tools/call", "params": {"name": "get_weather"}});
        let h = modern_headers(&m);
        assert_eq!(h["mcp-protocol-version"], MODERN);
        assert_eq!(h["mcp-method"], "tools/call");
        assert_eq!(h["mcp-name"], "get_weather");
        let r = json!({"method": "resources/read", "params": {"uri": "file:///größe"}});
        let v = modern_headers(&r)["mcp-name"].to_str().unwrap().to_owned();
        assert_eq!(crate::era::decode_value(&v).unwrap(), "file:///größe");
        assert!(
            header_value(" padded")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("=?base64?")
        );
        assert!(header_value("=?base64?x?=").unwrap().to_str().unwrap() != "=?base64?x?=");
        let a = ParamHeader {
            token: "region".into(),
            path: vec!["region".into()],
            kind: None,
        };
        let (n, v) = param_header(&a, &json!({"region": "us-west1"})).unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("mcp-param-region", "us-west1")
        );
        assert!(param_header(&a, &json!({})).is_none());
    }

    #[test]
    fn initialize_is_made_from_discover_and_capabilities_that_cannot_cross_are_left_out() {
        let d = json!({"resultType": "complete", "supportedVersions": [MODERN],
            "capabilities": {"tools": {"listChanged": true}, "logging": {}, "resources": {"subscribe": true}},
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "new", "version": "2"}},
            "instructions": "hi", "ttlMs": 10, "cacheScope": "public"});
        let r = initialize_result(Some("2025-06-18"), &d);
        assert_eq!(
            r,
            json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {"listChanged": true}, "resources": {}},
            "serverInfo": {"name": "new", "version": "2"}, "instructions": "hi"})
        );
        assert_eq!(
            initialize_result(Some("2099-01-01"), &d)["protocolVersion"],
            LATEST_LEGACY
        );
        assert_eq!(
            initialize_result(Some(MODERN), &d)["protocolVersion"],
            LATEST_LEGACY
        );
        let f = ClientFacts::from_init(
            &json!({"capabilities": {"sampling": {}, "roots": {}, "experimental": {}},
            "clientInfo": {"name": "c", "version": "1"}}),
        );
        assert_eq!(
            f.meta()["io.modelcontextprotocol/clientCapabilities"],
            json!({"experimental": {}})
        );
        assert_eq!(f.meta()["io.modelcontextprotocol/clientInfo"]["name"], "c");
    }

    #[test]
    fn an_older_client_gets_plain_results_and_an_error_for_input_required() {
        let mut map = legacy_answers();
        let plain = map(
            json!({"id": 1, "result": {"resultType": "complete", "tools": [], "ttlMs": 5, "cacheScope": "public"}}),
        );
        assert_eq!(plain, Some(json!({"id": 1, "result": {"tools": []}})));
        let asks = map(json!({"id": 2, "result": {"resultType": "input_required", "inputRequests": {"a": {}}}})).unwrap();
        assert_eq!(asks["error"]["code"], -32603);
        assert_eq!(asks["error"]["data"]["inputRequests"], json!({"a": {}}));
    }
}
