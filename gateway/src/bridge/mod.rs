//! Bridging the eras, so that clients and the upstream can move to 2026-07-28 one side at a
//! time: which revisions the upstream speaks ([`detect`]), a 2026-07-28 client in front of an
//! older upstream ([`to_legacy`]), an older client in front of a 2026-07-28 one ([`to_modern`]),
//! and the server-to-client stream both ways ([`listen`]). Where the upstream speaks the
//! client's revision, nothing here touches the request.

pub mod detect;
pub mod listen;
pub mod rewrite;
pub mod to_legacy;
pub mod to_modern;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_shared::db::Db;
use airlock_shared::{Principal, SessionId};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::{Value, json};

pub use detect::{Speaks, UpstreamEra};

use crate::error::UpstreamError;
use crate::input_schema::InputSchemas;
use crate::mcp::{DISCOVER, LISTEN};
use crate::sse;
use crate::transport::is_event_stream;
use crate::upstream::{Outgoing, Upstream};
use detect::{EraCache, Fresh};
use to_legacy::LegacySessions;
use to_modern::ModernUpstream;

/// How long a probe's answer is trusted before the upstream is asked again.
const ERA_MAX_AGE: Duration = Duration::from_secs(300);
/// After a probe that told nothing (the upstream down), requests go as they came for this long
/// before the next probe, so an outage does not cost every request a probe.
const PROBE_RETRY: Duration = Duration::from_secs(5);
/// The most of a probe's answer read.
const PROBE_LIMIT: usize = 1 << 20;

/// What the bridges need, and what the gateway knows of the upstream's revisions.
pub struct Bridge {
    setting: UpstreamEra,
    cache: EraCache,
    /// Whether the upstream refused an `initialize` lately. `server/discover` cannot tell: a
    /// dual-era server may list only 2026-07-28 there and still open sessions.
    refuses_initialize: Fresh<bool>,
    probing: tokio::sync::Mutex<()>,
    probe_failed: Mutex<Option<Instant>>,
    upstream: Upstream,
    legacy: LegacySessions,
    modern: ModernUpstream,
}

impl Bridge {
    /// Bridges to `upstream` as `setting` says; tools' annotations go to `schemas`, sessions are
    /// read from `pool`.
    pub fn new(
        setting: UpstreamEra,
        upstream: Upstream,
        schemas: Arc<InputSchemas>,
        pool: Db,
    ) -> Self {
        Self {
            setting,
            cache: EraCache::new(ERA_MAX_AGE),
            refuses_initialize: Fresh::new(ERA_MAX_AGE),
            probing: tokio::sync::Mutex::new(()),
            probe_failed: Mutex::new(None),
            legacy: LegacySessions::new(upstream.clone()),
            modern: ModernUpstream::new(upstream.clone(), schemas, pool),
            upstream,
        }
    }

    /// What the setting or a recent probe says, without asking the upstream.
    fn known(&self) -> Option<Speaks> {
        self.setting
            .fixed()
            .or_else(|| self.cache.get(Instant::now()))
    }

    /// What the upstream speaks, probed when not known (None: it could not be told).
    async fn speaks(&self) -> Option<Speaks> {
        if let Some(s) = self.known() {
            return Some(s);
        }
        let recently_failed = self
            .probe_failed
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|at| at.elapsed() < PROBE_RETRY);
        if recently_failed {
            return None;
        }
        let _one = self.probing.lock().await;
        if let Some(s) = self.known() {
            return Some(s);
        }
        let found = self.probe().await;
        match found {
            Some(s) => {
                tracing::info!(
                    modern = s.modern,
                    legacy = s.legacy,
                    "upstream revisions probed"
                );
                self.cache.put(s, Instant::now());
            }
            None => {
                tracing::warn!(
                    "upstream revisions unknown (probe failed); requests go as they came"
                );
                if let Ok(mut f) = self.probe_failed.lock() {
                    *f = Some(Instant::now());
                }
            }
        }
        found
    }

    /// `server/discover` in the gateway's name, and what its answer says.
    async fn probe(&self) -> Option<Speaks> {
        let msg = json!({"jsonrpc": "2.0", "id": "airlock-era-probe", "method": DISCOVER,
            "params": {"_meta": crate::era::own_meta()}});
        let headers = to_modern::modern_headers(&msg);
        let resp = self
            .upstream
            .send(Outgoing {
                method: reqwest::Method::POST,
                body: Some(Bytes::from(msg.to_string())),
                headers: &headers,
                upstream_session: None,
            })
            .await
            .ok()?;
        let status = resp.status().as_u16();
        let sse = is_event_stream(resp.headers());
        let body = read_limited(resp).await?;
        detect::classify(status, first_answer(&body, sse).as_ref())
    }

    /// A 2026-07-28 request (no session): relayed as it is, or across the bridge when the
    /// upstream speaks only the older revisions.
    pub async fn stateless(
        &self,
        principal: &Principal,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        if !self.to_legacy().await {
            return self
                .upstream
                .send(Outgoing {
                    method: reqwest::Method::POST,
                    body: Some(body),
                    headers,
                    upstream_session: None,
                })
                .await;
        }
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let params = msg.get("params").cloned().unwrap_or(Value::Null);
        match msg.get("method").and_then(Value::as_str) {
            Some(DISCOVER) => {
                let session = self.legacy.session(principal, None).await?;
                Ok(rewrite::result(&id, to_legacy::discover_result(&session)))
            }
            Some(LISTEN) => listen::serve_listen(&self.legacy, &id, &params).await,
            _ => self.legacy.send(principal, &msg).await,
        }
    }

    /// Whether 2026-07-28 requests go across the bridge: the upstream does not speak it.
    async fn to_legacy(&self) -> bool {
        self.speaks().await.is_some_and(|s| !s.modern)
    }

    /// Whether sessions go across the bridge: the upstream speaks 2026-07-28 and refuses
    /// `initialize` (asked with the bridge's own when it has not refused a client's lately).
    async fn to_modern(&self) -> bool {
        match self.setting {
            UpstreamEra::Modern => return true,
            UpstreamEra::Legacy | UpstreamEra::Both => return false,
            UpstreamEra::Auto => {}
        }
        if !self.speaks().await.is_some_and(|s| s.modern) {
            return false;
        }
        if let Some(refuses) = self.refuses_initialize.get(Instant::now()) {
            return refuses;
        }
        let _one = self.probing.lock().await;
        if let Some(refuses) = self.refuses_initialize.get(Instant::now()) {
            return refuses;
        }
        match self.legacy.accepts_initialize().await {
            Some(accepts) => {
                self.refuses_initialize.put(!accepts, Instant::now());
                !accepts
            }
            None => false,
        }
    }

    /// An `initialize`: relayed as it is; answered from `server/discover` when the upstream
    /// refuses it (4xx) and speaks 2026-07-28 (then, for a while, without asking it first).
    pub async fn open(
        &self,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, UpstreamError> {
        let known_refusal = self.refuses_initialize.get(Instant::now()) == Some(true);
        if self.setting == UpstreamEra::Modern
            || (self.setting == UpstreamEra::Auto && known_refusal)
        {
            return self.modern.initialize(&body).await;
        }
        let sent = self
            .upstream
            .send(Outgoing {
                method: reqwest::Method::POST,
                body: Some(body.clone()),
                headers,
                upstream_session: None,
            })
            .await;
        if self.setting != UpstreamEra::Auto {
            return sent;
        }
        match &sent {
            Ok(r) if r.status().is_success() => self.refuses_initialize.put(false, Instant::now()),
            Ok(r) if r.status().is_client_error() => {
                self.cache.forget();
                if self.speaks().await.is_some_and(|s| s.modern) {
                    tracing::info!(
                        "initialize refused by a 2026-07-28 upstream; bridging the session"
                    );
                    self.refuses_initialize.put(true, Instant::now());
                    return self.modern.initialize(&body).await;
                }
            }
            Ok(_) | Err(_) => {}
        }
        sent
    }

    /// A request in a session that has no upstream session: across the bridge when the upstream
    /// takes no sessions (Some), else None and it goes as before.
    pub async fn in_session(
        &self,
        sid: &SessionId,
        method: reqwest::Method,
        body: Option<Bytes>,
    ) -> Option<Result<reqwest::Response, UpstreamError>> {
        if !self.to_modern().await {
            return None;
        }
        Some(self.modern.send(sid, method, body).await)
    }

    /// Whether a session without an upstream session lives only here (bridged): ending it
    /// asks nothing of the upstream.
    pub async fn holds_alone(&self) -> bool {
        self.to_modern().await
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > PROBE_LIMIT {
            return None;
        }
    }
    Some(body)
}

/// The first JSON-RPC answer (result or error, whatever its id: refusals often carry none) in
/// a body, JSON or SSE.
fn first_answer(body: &[u8], sse: bool) -> Option<Value> {
    let is_answer = |m: &Value| m.get("result").is_some() || m.get("error").is_some();
    if !sse {
        return serde_json::from_slice::<Value>(body).ok().filter(is_answer);
    }
    let mut parser = sse::Parser::default();
    let mut events = parser.feed(body);
    events.extend(parser.feed(b"\n\n"));
    events.iter().filter_map(sse::Event::json).find(is_answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_is_found_in_json_and_sse() {
        let e = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32022}}"#;
        assert_eq!(first_answer(e, false).unwrap()["error"]["code"], -32022);
        let s = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n\ndata: {\"id\":1,\"result\":{}}";
        assert_eq!(first_answer(s, true).unwrap()["id"], 1);
        assert!(first_answer(b"Mcp-Session-Id required", false).is_none());
    }
}
