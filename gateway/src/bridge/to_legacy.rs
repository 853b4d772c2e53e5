//! A 2026-07-28 client in front of an upstream of the older revisions: the gateway holds one
//! upstream session per principal (opened with its own `initialize`, opened again when the
//! upstream forgets it), sends each request in it, and gives the answers the 2026-07-28 shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::Principal;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::rewrite::{self, Mapper};
use crate::answer::Whole;
use crate::era::{MODERN, VERSION_META};
use crate::error::UpstreamError;
use crate::transport::SUPPORTED_PROTOCOL_VERSIONS;
use crate::upstream::{Outgoing, PROTOCOL_HEADER, SESSION_HEADER, Upstream};

/// The revision the gateway asks an older upstream for (the newest before 2026-07-28).
pub const LATEST_LEGACY: &str = "2025-11-25";

/// How long a 2026-07-28 client may keep a list the bridge relays: an older upstream gives no
/// freshness hint, so none is promised.
pub const BRIDGED_TTL_MS: u64 = 0;

/// The `_meta` keys of the 2026-07-28 envelope: an older upstream has no use for them.
const ENVELOPE: &[&str] = &[
    VERSION_META,
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/logLevel",
];

/// Where 2026-07-28 asks for log messages on a request's stream.
const LOG_LEVEL_META: &str = "io.modelcontextprotocol/logLevel";

/// Results of these methods are cacheable in 2026-07-28 (`ttlMs`, `cacheScope`).
const CACHEABLE: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
];

/// An upstream session the bridge opened.
#[derive(Debug)]
pub struct Opened {
    /// The upstream's `Mcp-Session-Id`, if it gave one.
    pub id: Option<String>,
    /// The protocol version the upstream agreed to.
    pub version: String,
    /// The upstream's `initialize` result.
    pub init: Value,
}

/// The upstream sessions the bridge holds, one per principal.
pub struct LegacySessions {
    upstream: Upstream,
    held: Mutex<HashMap<Principal, Arc<Opened>>>,
    /// Opening one at a time keeps two first requests of a principal from opening two sessions.
    opening: tokio::sync::Mutex<()>,
}

impl LegacySessions {
    /// No sessions yet, on `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            upstream,
            held: Mutex::default(),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    fn held(&self, principal: &Principal) -> Option<Arc<Opened>> {
        self.held.lock().ok()?.get(principal).cloned()
    }

    /// The principal's upstream session, opened if it has none (or only `failed`, forgotten).
    pub async fn session(
        &self,
        principal: &Principal,
        failed: Option<&Arc<Opened>>,
    ) -> Result<Arc<Opened>, UpstreamError> {
        let current = |s: &Self| {
            s.held(principal)
                .filter(|h| failed.is_none_or(|f| !Arc::ptr_eq(h, f)))
        };
        if let Some(s) = current(self) {
            return Ok(s);
        }
        let _one = self.opening.lock().await;
        if let Some(s) = current(self) {
            return Ok(s);
        }
        let opened = Arc::new(open(&self.upstream).await?);
        tracing::info!(principal = %principal, version = %opened.version, "bridge: upstream session opened");
        if let Ok(mut h) = self.held.lock() {
            h.insert(principal.clone(), opened.clone());
        }
        Ok(opened)
    }

    /// Sends a 2026-07-28 request (already checked) in the principal's upstream session, opened
    /// again once if the upstream forgot it (404).
    pub async fn send(
        &self,
        principal: &Principal,
        msg: &Value,
    ) -> Result<reqwest::Response, UpstreamError> {
        let body = Bytes::from(legacy_body(msg).to_string());
        let mut session = self.session(principal, None).await?;
        let mut resp = send_in(&self.upstream, &session, body.clone()).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            tracing::info!(principal = %principal, "bridge: upstream forgot the session; opening another");
            session = self.session(principal, Some(&session)).await?;
            resp = send_in(&self.upstream, &session, body).await?;
        }
        Ok(rewrite::map_answer(resp, self.answers(msg, session)))
    }

    /// What a 2026-07-28 client gets of the upstream's messages: results say they are complete,
    /// lists say how to cache them; log messages only when the request asked for them; requests
    /// to the client (it has no way to answer them here) are refused upstream and not shown.
    fn answers(&self, msg: &Value, session: Arc<Opened>) -> Mapper {
        let cacheable = msg
            .get("method")
            .and_then(Value::as_str)
            .is_some_and(|m| CACHEABLE.contains(&m));
        let wants_log = msg
            .pointer("/params/_meta")
            .and_then(|m| m.get(LOG_LEVEL_META))
            .is_some();
        let upstream = self.upstream.clone();
        Box::new(move |mut m: Value| {
            if rewrite::is_request(&m) {
                refuse_upstream(&upstream, &session, &m);
                return None;
            }
            if m.get("method").and_then(Value::as_str) == Some("notifications/message")
                && !wants_log
            {
                return None;
            }
            if let Some(r) = m.get_mut("result").and_then(Value::as_object_mut) {
                r.entry("resultType").or_insert_with(|| json!("complete"));
                if cacheable {
                    r.entry("ttlMs").or_insert_with(|| json!(BRIDGED_TTL_MS));
                    r.entry("cacheScope").or_insert_with(|| json!("public"));
                }
            }
            Some(m)
        })
    }

    /// Whether the upstream takes an `initialize` (None: it could not be told): the bridge's
    /// own, whose session is ended at once.
    pub async fn accepts_initialize(&self) -> Option<bool> {
        match open(&self.upstream).await {
            Ok(opened) => {
                drop(Closer(self.upstream.clone(), Arc::new(opened)));
                Some(true)
            }
            Err(UpstreamError::Status(s)) if (400..500).contains(&s) => Some(false),
            Err(UpstreamError::NoAnswer(_)) => Some(false),
            Err(_) => None,
        }
    }

    /// A session of its own (a listen stream's), not shared with the principal's requests.
    pub async fn open_own(&self) -> Result<Arc<Opened>, UpstreamError> {
        Ok(Arc::new(open(&self.upstream).await?))
    }

    /// The upstream, for the listen stream's GET.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

/// Ends a session the bridge opened for itself (a stream's, a check's) when dropped.
pub struct Closer(pub Upstream, pub Arc<Opened>);

impl Drop for Closer {
    fn drop(&mut self) {
        let (upstream, session) = (self.0.clone(), self.1.clone());
        tokio::spawn(async move {
            let headers = headers_for(&session);
            let out = Outgoing {
                method: reqwest::Method::DELETE,
                body: None,
                headers: &headers,
                upstream_session: session.id.as_deref(),
            };
            if let Err(e) = upstream.send(out).await {
                tracing::debug!(error = %airlock_shared::telemetry::chain(&e), "bridge: closing its own upstream session failed");
            }
        });
    }
}

/// The headers of a request in `session`: its protocol version.
pub fn headers_for(session: &Opened) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&session.version) {
        h.insert(PROTOCOL_HEADER, v);
    }
    h
}

async fn send_in(
    upstream: &Upstream,
    session: &Opened,
    body: Bytes,
) -> Result<reqwest::Response, UpstreamError> {
    let headers = headers_for(session);
    upstream
        .send(Outgoing {
            method: reqwest::Method::POST,
            body: Some(body),
            headers: &headers,
            upstream_session: session.id.as_deref(),
        })
        .await
}

/// Answers a request the upstream sent to the client: `ping` as the client would, the rest
/// (sampling, elicitation, roots: the bridge declared none of them) with "method not found".
pub fn refuse_upstream(upstream: &Upstream, session: &Arc<Opened>, req: &Value) {
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let reply = match req.get("method").and_then(Value::as_str) {
        Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        _ => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "not available through the gateway's bridge to MCP 2026-07-28"}})
        }
    };
    let (upstream, session) = (upstream.clone(), session.clone());
    tokio::spawn(async move {
        if let Err(e) = send_in(&upstream, &session, Bytes::from(reply.to_string())).await {
            tracing::debug!(error = %airlock_shared::telemetry::chain(&e), "bridge: answering the upstream's request failed");
        }
    });
}

/// The request as the older revisions have it: the 2026-07-28 envelope left out of `_meta`
/// (progress tokens and trace context stay).
pub fn legacy_body(msg: &Value) -> Value {
    let mut m = msg.clone();
    if let Some(meta) = m
        .pointer_mut("/params/_meta")
        .and_then(Value::as_object_mut)
    {
        for k in ENVELOPE {
            meta.remove(*k);
        }
        if meta.is_empty()
            && let Some(p) = m.get_mut("params").and_then(Value::as_object_mut)
        {
            p.remove("_meta");
        }
    }
    m
}

/// Opens an upstream session: `initialize` in the gateway's name (no client capabilities: the
/// bridge can answer no request from the server), then `notifications/initialized`.
async fn open(upstream: &Upstream) -> Result<Opened, UpstreamError> {
    let id = json!("airlock-bridge-initialize");
    let init = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": LATEST_LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "airlock-gateway", "version": env!("CARGO_PKG_VERSION")},
    }});
    let none = HeaderMap::new();
    let resp = upstream
        .send(Outgoing {
            method: reqwest::Method::POST,
            body: Some(Bytes::from(init.to_string())),
            headers: &none,
            upstream_session: None,
        })
        .await?;
    if !resp.status().is_success() {
        return Err(UpstreamError::Status(resp.status().as_u16()));
    }
    let sid = resp
        .headers()
        .get(SESSION_HEADER.as_str())
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let answer = Whole::read(resp, &id).await?;
    let result = answer
        .response
        .and_then(|r| r.get("result").cloned())
        .ok_or(UpstreamError::NoAnswer(
            "the upstream refused the bridge's initialize",
        ))?;
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v) && *v != MODERN)
        .ok_or(UpstreamError::NoAnswer(
            "the upstream agreed to no protocol version the gateway speaks",
        ))?
        .to_owned();
    let opened = Opened {
        id: sid,
        version,
        init: result,
    };
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let resp = send_in(upstream, &opened, Bytes::from(initialized.to_string())).await?;
    if !resp.status().is_success() {
        return Err(UpstreamError::Status(resp.status().as_u16()));
    }
    Ok(opened)
}

/// A `server/discover` result made from the upstream's `initialize` result: the version it
/// agreed to and 2026-07-28 (which the gateway speaks for it), its capabilities less what does
/// not cross the bridge, its identity and instructions.
pub fn discover_result(session: &Opened) -> Value {
    let init = &session.init;
    let mut caps = init
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(c) = caps.as_object_mut() {
        // Subscriptions to single resources, per-session log levels and 2025-11-25 tasks have
        // no 2026-07-28 counterpart the bridge maps.
        if let Some(r) = c.get_mut("resources").and_then(Value::as_object_mut) {
            r.remove("subscribe");
        }
        c.remove("logging");
        c.remove("tasks");
    }
    let mut out = Map::new();
    out.insert("resultType".into(), json!("complete"));
    out.insert("supportedVersions".into(), json!([session.version, MODERN]));
    out.insert("capabilities".into(), caps);
    if let Some(i) = init.get("instructions") {
        out.insert("instructions".into(), i.clone());
    }
    if let Some(info) = init.get("serverInfo") {
        out.insert(
            "_meta".into(),
            json!({"io.modelcontextprotocol/serverInfo": info}),
        );
    }
    out.insert("ttlMs".into(), json!(BRIDGED_TTL_MS));
    out.insert("cacheScope".into(), json!("public"));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_left_out_and_the_rest_of_meta_kept() {
        let m = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x", "_meta": {
            VERSION_META: MODERN, "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "p"}}});
        assert_eq!(
            legacy_body(&m)["params"],
            json!({"name": "x", "_meta": {"progressToken": "p"}})
        );
        let bare =
            json!({"id": 1, "method": "tools/list", "params": {"_meta": {VERSION_META: MODERN}}});
        assert_eq!(legacy_body(&bare)["params"], json!({}));
    }

    #[test]
    fn discover_is_made_from_initialize() {
        let s = Opened {
            id: Some("u1".into()),
            version: "2025-06-18".into(),
            init: json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {"listChanged": true},
                "resources": {"subscribe": true, "listChanged": true}, "logging": {}},
                "serverInfo": {"name": "old", "version": "1"}, "instructions": "be nice"}),
        };
        let d = discover_result(&s);
        assert_eq!(d["supportedVersions"], json!(["2025-06-18", MODERN]));
        assert_eq!(
            d["capabilities"],
            json!({"tools": {"listChanged": true}, "resources": {"listChanged": true}})
        );
        assert_eq!(
            d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "old"
        );
        assert_eq!(d["instructions"], "be nice");
        assert_eq!(d["resultType"], "complete");
        assert_eq!(d["cacheScope"], "public");
    }
}
