//! The upstream session behind a gateway session: sending in it, and opening it again with
//! the client's own `initialize` when the upstream has forgotten it.

use std::sync::Arc;

use airlock_shared::SessionId;
use airlock_shared::db::Db;
use axum::http::HeaderMap;
use bytes::Bytes;
use serde_json::json;

use crate::bridge::Bridge;
use crate::error::UpstreamError;
use crate::session::{SessionInfo, Sessions};
use crate::upstream::{Outgoing, SESSION_HEADER, Upstream};

/// Sends requests in sessions; what it needs of the gateway, and nothing more.
#[derive(Clone)]
pub struct UpstreamSessions {
    /// The upstream MCP server.
    pub upstream: Upstream,
    /// The gateway's session registry.
    pub sessions: Sessions,
    pool: Db,
    /// Re-initialising upstream sessions one at a time keeps two requests from racing to it.
    reinit_lock: Arc<tokio::sync::Mutex<()>>,
    /// Requests of one era to an upstream that speaks only the other.
    pub bridge: Arc<Bridge>,
}

impl UpstreamSessions {
    /// Sessions on `upstream`, recorded in `sessions` (whose rows live in `pool`), bridged by
    /// `bridge` where the upstream does not speak the client's era.
    pub fn new(upstream: Upstream, sessions: Sessions, pool: Db, bridge: Arc<Bridge>) -> Self {
        Self {
            upstream,
            sessions,
            pool,
            reinit_lock: Arc::default(),
            bridge,
        }
    }

    /// Ends a session upstream (`DELETE`); a bridged session has nothing there to end.
    pub async fn end(
        &self,
        info: &SessionInfo,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        if info.upstream_session_id.is_none() && self.bridge.holds_alone().await {
            return Ok(crate::bridge::rewrite::made(
                reqwest::StatusCode::OK,
                "application/json",
                reqwest::Body::from(Bytes::new()),
            ));
        }
        self.upstream
            .send(Outgoing {
                method: reqwest::Method::DELETE,
                body: None,
                headers,
                upstream_session: info.upstream_session_id.as_deref(),
            })
            .await
    }

    /// Sends a request in a session; if the upstream forgot the session (404), or never had one
    /// (it was opened from the cache while the upstream was down), re-initialises once and retries.
    pub async fn send(
        &self,
        sid: &SessionId,
        info: &SessionInfo,
        method: reqwest::Method,
        body: Option<Bytes>,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        if info.upstream_session_id.is_none()
            && let Some(bridged) = self
                .bridge
                .in_session(sid, method.clone(), body.clone())
                .await
        {
            return bridged;
        }
        let first = self
            .upstream
            .send(Outgoing {
                method: method.clone(),
                body: body.clone(),
                headers,
                upstream_session: info.upstream_session_id.as_deref(),
            })
            .await?;
        let forgotten = first.status() == reqwest::StatusCode::NOT_FOUND
            || (first.status() == reqwest::StatusCode::BAD_REQUEST
                && info.upstream_session_id.is_none());
        if !forgotten {
            return Ok(first);
        }
        let Some(fresh) = self
            .reinit(sid, info.upstream_session_id.as_deref(), headers)
            .await
        else {
            return Ok(first);
        };
        self.upstream
            .send(Outgoing {
                method,
                body,
                headers,
                upstream_session: fresh.as_deref(),
            })
            .await
    }

    /// Opens a new upstream session behind `sid` with the client's own `initialize` request.
    /// Returns the new upstream session id, or None (logged) if that failed.
    async fn reinit(
        &self,
        sid: &SessionId,
        failed: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Option<String>> {
        let _one_at_a_time = self.reinit_lock.lock().await;
        let row = match airlock_shared::session::get_live(&self.pool, sid).await {
            Ok(Some(row)) => row,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "cannot read session for re-initialise");
                return None;
            }
        };
        // Another request (or pod) already re-initialised it.
        if row.upstream_session_id.as_deref() != failed && row.upstream_session_id.is_some() {
            self.sessions
                .remember_upstream(sid, row.upstream_session_id.as_deref());
            return Some(row.upstream_session_id);
        }
        let init = row.init_request?;
        let no_headers = HeaderMap::new();
        let resp = self
            .upstream
            .send(Outgoing {
                method: reqwest::Method::POST,
                body: Some(Bytes::from(init.to_string())),
                headers: &no_headers,
                upstream_session: None,
            })
            .await;
        let resp = match resp {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                tracing::warn!(session = %sid, status = r.status().as_u16(), "re-initialise refused upstream");
                return None;
            }
            Err(e) => {
                tracing::warn!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "re-initialise failed");
                return None;
            }
        };
        let fresh = resp
            .headers()
            .get(SESSION_HEADER.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Err(e) = resp.bytes().await {
            tracing::warn!(session = %sid, error = %e, "re-initialise answer broke off");
            return None;
        }
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        if let Err(e) = self
            .upstream
            .send(Outgoing {
                method: reqwest::Method::POST,
                body: Some(Bytes::from(initialized.to_string())),
                headers,
                upstream_session: fresh.as_deref(),
            })
            .await
        {
            tracing::warn!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "initialized notification failed");
            return None;
        }
        if let Err(e) = self.sessions.set_upstream(sid, fresh.as_deref()).await {
            tracing::error!(session = %sid, error = %airlock_shared::telemetry::chain(&e), "cannot record the new upstream session");
            return None;
        }
        tracing::info!(session = %sid, "upstream session re-initialised");
        Some(fresh)
    }
}
