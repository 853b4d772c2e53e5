//! The gateway's error boundaries and their one mapping each to the wire.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use airlock_shared::TicketId;

use crate::input_schema::ArgumentsError;
use crate::oauth::Challenge;
use crate::request_state::RequestStateError;

/// Why a `tools/call` (or another forwarded request) did not get the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("denied by policy rule {rule:?}")]
    DeniedByPolicy {
        rule: String,
        reason: Option<String>,
    },
    #[error("approval denied by {decided_by:?}")]
    ApprovalDenied {
        rule: String,
        ticket: TicketId,
        decided_by: Option<String>,
    },
    #[error("approval timed out")]
    ApprovalTimeout { rule: String, ticket: TicketId },
    #[error("approval was cancelled")]
    ApprovalCancelled { rule: String, ticket: TicketId },
    #[error("approval wait interrupted by shutdown")]
    ApprovalInterrupted { rule: String, ticket: TicketId },
    #[error("approval was already used by another call")]
    ApprovalAlreadyUsed { rule: String, ticket: TicketId },
    #[error("the approved call is not this call (fingerprints differ)")]
    ApprovalMismatch { rule: String, ticket: TicketId },
    #[error("could not notify approvers")]
    NotifyFailed {
        rule: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("tool-call budget of {limit} exceeded")]
    BudgetExceeded { limit: u64 },
    #[error("session busy")]
    SessionBusy {
        /// How long the lock's holder has left on it.
        retry_after_ms: u64,
    },
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error(transparent)]
    Arguments(#[from] ArgumentsError),
    /// A retry's `requestState` does not verify (forged, tampered, expired, another call).
    #[error(transparent)]
    RequestState(#[from] RequestStateError),
    #[error("{}", UPSTREAM_ERROR)]
    Upstream(#[from] UpstreamError),
    #[error("storage error")]
    Store(#[from] sqlx::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

/// Trouble reaching or reading the upstream MCP server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream unreachable")]
    Unreachable(#[source] reqwest::Error),
    #[error("upstream did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    #[error("upstream answer broke off")]
    Body(#[source] reqwest::Error),
    #[error("{0}")]
    NoAnswer(&'static str),
    #[error("{0}")]
    Unreadable(String),
}

/// The message of every JSON-RPC error that stands for the upstream's trouble.
const UPSTREAM_ERROR: &str = "upstream error";

/// The JSON-RPC answer to `id` when the upstream failed it (`why` says how).
pub fn upstream_error(id: &Value, why: &str) -> Value {
    jsonrpc_error(id, -32603, UPSTREAM_ERROR, json!({ "why": why }))
}

impl CallError {
    /// The JSON-RPC error response to `id` for this failure.
    pub fn to_jsonrpc(&self, id: &Value) -> Value {
        let (code, message, data) = self.wire();
        jsonrpc_error(id, code, message, data)
    }

    /// Who decided, for a denied approval.
    pub fn decided_by(&self) -> Option<&str> {
        match self {
            Self::ApprovalDenied { decided_by, .. } => decided_by.as_deref(),
            Self::DeniedByPolicy { .. }
            | Self::ApprovalTimeout { .. }
            | Self::ApprovalCancelled { .. }
            | Self::ApprovalInterrupted { .. }
            | Self::ApprovalAlreadyUsed { .. }
            | Self::ApprovalMismatch { .. }
            | Self::NotifyFailed { .. }
            | Self::BudgetExceeded { .. }
            | Self::SessionBusy { .. }
            | Self::InvalidParams(_)
            | Self::Arguments(_)
            | Self::RequestState(_)
            | Self::Upstream(_)
            | Self::Store(_)
            | Self::Redis(_) => None,
        }
    }

    fn wire(&self) -> (i64, &'static str, Value) {
        match self {
            Self::DeniedByPolicy { rule, reason } => (
                -32001,
                "denied by policy",
                json!({ "rule": rule, "reason": reason }),
            ),
            Self::ApprovalDenied {
                rule,
                ticket,
                decided_by,
            } => (
                -32001,
                "approval denied",
                json!({ "rule": rule, "ticket": ticket, "decided_by": decided_by }),
            ),
            Self::ApprovalTimeout { rule, ticket } => (
                -32001,
                "approval timeout",
                json!({ "rule": rule, "ticket": ticket }),
            ),
            Self::ApprovalCancelled { rule, ticket } => (
                -32001,
                "approval cancelled",
                json!({ "rule": rule, "ticket": ticket }),
            ),
            Self::ApprovalInterrupted { rule, ticket } => (
                -32001,
                "approval interrupted",
                json!({ "rule": rule, "ticket": ticket, "retry": true }),
            ),
            Self::ApprovalAlreadyUsed { rule, ticket } => (
                -32001,
                "approval already used",
                json!({ "rule": rule, "ticket": ticket }),
            ),
            Self::ApprovalMismatch { rule, ticket } => (
                -32001,
                "approval does not match this call",
                json!({ "rule": rule, "ticket": ticket }),
            ),
            Self::NotifyFailed { rule, .. } => (
                -32603,
                "could not notify approvers",
                json!({ "rule": rule }),
            ),
            Self::BudgetExceeded { limit } => (
                -32001,
                "tool-call budget exceeded",
                json!({ "limit": limit }),
            ),
            Self::SessionBusy { retry_after_ms } => (
                -32002,
                "session busy",
                json!({ "retry_after_ms": retry_after_ms }),
            ),
            Self::InvalidParams(why) => (-32602, "invalid params", json!({ "why": why })),
            Self::Arguments(ArgumentsError::Invalid { violations, more }) => (
                -32602,
                "invalid params",
                json!({ "why": self.to_string(), "errors": violations, "more": more }),
            ),
            Self::Arguments(ArgumentsError::UnknownTool(tool)) => (
                -32602,
                "unknown tool",
                json!({ "why": self.to_string(), "tool": tool }),
            ),
            Self::Arguments(ArgumentsError::BadSchema(_) | ArgumentsError::Unlisted(_)) => {
                (-32603, UPSTREAM_ERROR, json!({ "why": self.to_string() }))
            }
            Self::RequestState(e) => (
                -32602,
                "invalid request state",
                json!({ "why": e.to_string() }),
            ),
            Self::Upstream(e) => (-32603, UPSTREAM_ERROR, json!({ "why": e.to_string() })),
            Self::Store(_) | Self::Redis(_) => (-32603, "internal error", Value::Null),
        }
    }

    /// The outcome label for audit rows and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::DeniedByPolicy { .. } => "denied",
            Self::ApprovalDenied { .. } => "approval_denied",
            Self::ApprovalTimeout { .. } => "timeout",
            Self::ApprovalCancelled { .. } => "cancelled",
            Self::ApprovalInterrupted { .. } => "interrupted",
            Self::ApprovalAlreadyUsed { .. } => "already_used",
            Self::ApprovalMismatch { .. } => "approval_mismatch",
            Self::NotifyFailed { .. } => "notify_failed",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::SessionBusy { .. } => "session_busy",
            Self::InvalidParams(_) => "invalid_params",
            Self::Arguments(ArgumentsError::Invalid { .. } | ArgumentsError::UnknownTool(_)) => {
                "invalid_arguments"
            }
            Self::Arguments(ArgumentsError::BadSchema(_) | ArgumentsError::Unlisted(_)) => {
                "arguments_unchecked"
            }
            Self::RequestState(_) => "invalid_request_state",
            Self::Upstream(_) => "upstream_error",
            Self::Store(_) | Self::Redis(_) => "internal_error",
        }
    }

    /// The ticket involved, if any.
    pub fn ticket(&self) -> Option<TicketId> {
        match self {
            Self::ApprovalDenied { ticket, .. }
            | Self::ApprovalTimeout { ticket, .. }
            | Self::ApprovalCancelled { ticket, .. }
            | Self::ApprovalInterrupted { ticket, .. }
            | Self::ApprovalAlreadyUsed { ticket, .. }
            | Self::ApprovalMismatch { ticket, .. } => Some(*ticket),
            Self::DeniedByPolicy { .. }
            | Self::NotifyFailed { .. }
            | Self::BudgetExceeded { .. }
            | Self::SessionBusy { .. }
            | Self::InvalidParams(_)
            | Self::Arguments(_)
            | Self::RequestState(_)
            | Self::Upstream(_)
            | Self::Store(_)
            | Self::Redis(_) => None,
        }
    }

    /// Whether this is our fault (logged at error level) rather than policy doing its job.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            Self::Upstream(_)
                | Self::Store(_)
                | Self::Redis(_)
                | Self::NotifyFailed { .. }
                | Self::Arguments(ArgumentsError::BadSchema(_) | ArgumentsError::Unlisted(_))
        )
    }
}

/// MCP's code for headers that disagree with the body (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP's code for a protocol version the server does not speak (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// A JSON-RPC error response body.
fn jsonrpc_error(id: &Value, code: i64, message: &str, data: Value) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if !data.is_null() {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// Why a request to `/mcp` was refused before it reached policy or the upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// 401: no token, or one that is not valid; the challenge says which and where to get one.
    #[error("missing or invalid bearer token")]
    Unauthorized(Challenge),
    /// 403: a valid access token without a scope every call needs.
    #[error("insufficient scope")]
    InsufficientScope(Challenge),
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body could not be read")]
    BodyRead,
    #[error("parse error: {0}")]
    Parse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("Mcp-Session-Id header is required")]
    MissingSession,
    #[error("Mcp-Session-Id is too long: more than {limit} characters")]
    SessionIdTooLong { limit: usize },
    #[error(
        "Mcp-Session-Id is malformed: only visible ASCII characters (0x21 to 0x7E) are allowed"
    )]
    MalformedSession,
    #[error("unsupported MCP-Protocol-Version {got:?}")]
    UnsupportedProtocolVersion {
        got: String,
        supported: &'static [&'static str],
    },
    #[error("unknown session")]
    UnknownSession,
    /// 2026-07-28: a header disagrees with the body (or a required one is missing).
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
    /// 2026-07-28 has no GET stream and no session to delete.
    #[error("{0} is not part of MCP protocol version 2026-07-28")]
    MethodNotAllowed(&'static str),
    #[error("storage error")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let none = Value::Null;
        let (status, code, data) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, None, none),
            Self::InsufficientScope(_) => (StatusCode::FORBIDDEN, None, none),
            Self::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, Some(-32600), none),
            Self::BodyRead | Self::Parse(_) => (StatusCode::BAD_REQUEST, Some(-32700), none),
            Self::InvalidRequest(_)
            | Self::MissingSession
            | Self::SessionIdTooLong { .. }
            | Self::MalformedSession => (StatusCode::BAD_REQUEST, Some(-32600), none),
            Self::UnsupportedProtocolVersion { supported, got } => (
                StatusCode::BAD_REQUEST,
                Some(UNSUPPORTED_PROTOCOL_VERSION),
                json!({ "supported": supported, "requested": got }),
            ),
            Self::HeaderMismatch(_) => (StatusCode::BAD_REQUEST, Some(HEADER_MISMATCH), none),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, Some(-32600), none),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some(-32600), none),
            Self::UnknownSession => (StatusCode::NOT_FOUND, Some(-32001), none),
            Self::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, Some(-32603), none),
            Self::Upstream(UpstreamError::Status(s)) => (
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY),
                Some(-32603),
                none,
            ),
            Self::Upstream(
                UpstreamError::Unreachable(_)
                | UpstreamError::Timeout(_)
                | UpstreamError::Body(_)
                | UpstreamError::NoAnswer(_)
                | UpstreamError::Unreadable(_),
            ) => (StatusCode::BAD_GATEWAY, Some(-32603), none),
        };
        let mut resp = match code {
            Some(code) => (
                status,
                axum::Json(jsonrpc_error(&Value::Null, code, &self.to_string(), data)),
            )
                .into_response(),
            None => (status, self.to_string()).into_response(),
        };
        if let Self::Unauthorized(c) | Self::InsufficientScope(c) = &self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, c.header());
        }
        resp
    }
}
