//! Who makes a call: the principal, the session if there is one, and what the call's lock,
//! budget and ticket are scoped by.

use std::sync::Arc;

use airlock_shared::{Principal, SessionId};
use axum::http::HeaderMap;
use bytes::Bytes;

use crate::error::UpstreamError;
use crate::identity::Identity;
use crate::lock::{Budget, Window};
use crate::policy::Policy;
use crate::session::SessionInfo;
use crate::upstream_session::UpstreamSessions;

/// Who makes a call, and in which session.
#[derive(Clone)]
pub struct Caller {
    /// Who calls, as policy sees it: the principal, and an access token's claims and scopes.
    pub identity: Identity,
    /// What the lock, held calls and ticket reattachment are keyed by: the session, or
    /// without one (2026-07-28) [`SessionId::of_principal`].
    pub sid: SessionId,
    /// The session, if the call is made in one; 2026-07-28 calls are not.
    pub session: Option<Arc<SessionInfo>>,
    /// The client's request headers.
    pub headers: HeaderMap,
}

impl Caller {
    /// A caller without a session (2026-07-28): scoped by its principal.
    pub fn stateless(identity: Identity, headers: HeaderMap) -> Self {
        Self {
            sid: SessionId::of_principal(&identity.principal),
            identity,
            session: None,
            headers,
        }
    }

    /// The authenticated agent.
    pub fn principal(&self) -> &Principal {
        &self.identity.principal
    }

    /// Sends `body` upstream in the caller's name: in its upstream session, or without one.
    pub async fn send(
        &self,
        link: &UpstreamSessions,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Result<reqwest::Response, UpstreamError> {
        let method = reqwest::Method::POST;
        match &self.session {
            Some(info) => {
                link.send(&self.sid, info, method, Some(body), headers)
                    .await
            }
            None => link.bridge.stateless(self.principal(), body, headers).await,
        }
    }

    /// The budget this call counts against at `now`: its session's, or its principal's window.
    pub fn budget(&self, policy: &Policy, now: chrono::DateTime<chrono::Utc>) -> Option<Budget> {
        match &self.session {
            Some(_) => policy.max_tool_calls_per_session.map(|limit| Budget {
                limit,
                window: None,
            }),
            None => policy.principal_budget.map(|b| {
                let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
                Budget {
                    limit: b.max_tool_calls,
                    window: Some(Window::at(now_ms, b.per)),
                }
            }),
        }
    }
}
