//! A `tools/call` taken apart once, with the verdict policy gave it.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::identity::Identity;
use crate::policy::{Action, Policy, Verdict};
use crate::request_state::{Continued, RequestStateError};
use crate::task::Era;
use crate::trace_context::TraceContext;

/// One `tools/call` request, parsed once and evaluated by policy once.
#[derive(Clone, Debug)]
pub struct ToolCall {
    /// The JSON-RPC id the answer must carry.
    pub id: Value,
    /// The tool's name ("" when the request named none).
    pub tool: String,
    /// The call's arguments (`{}` when the request gave none).
    pub arguments: Value,
    /// `params._meta.progressToken`, for progress notifications while the call is held.
    pub progress_token: Option<Value>,
    /// The request exactly as the client sent it, for the upstream.
    pub body: Bytes,
    /// What policy says about this call.
    pub verdict: Verdict,
    /// Rules whose conditions could not be evaluated on these arguments.
    pub unevaluable: Vec<Arc<str>>,
    /// Why the params are unusable, if they are; such a call never reaches the upstream.
    pub invalid: Option<&'static str>,
    /// A 2026-07-28 retry's verified `requestState`, or why it does not verify (then the call
    /// is refused and nothing is forwarded); `None` for a call that carries none.
    pub continuation: Option<Result<Continued, RequestStateError>>,
    /// The W3C trace context of `_meta` worth recording (the body goes upstream unchanged).
    pub trace: TraceContext,
    /// The client can take a task for this call, in this dialect (if policy holds it).
    pub task: Option<Era>,
}

impl ToolCall {
    /// The call out of its box, the box freed now (a box moved out of in an async fn is
    /// freed only when the fn ends, and a held call's fn lasts minutes).
    pub fn unboxed(self: Box<Self>) -> Self {
        *self
    }

    /// Takes a `tools/call` request apart and asks policy about it.
    pub fn new(
        id: Value,
        params: &Value,
        body: Bytes,
        policy: &Policy,
        identity: &Identity,
    ) -> Self {
        let tool = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let arguments = params
            .get("arguments")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let invalid = if tool.is_empty() {
            Some("params.name must be a tool name")
        } else if !arguments.is_object() {
            Some("params.arguments must be an object")
        } else {
            None
        };
        let assessed = policy.assess(&tool, &arguments, identity);
        let (verdict, unevaluable) = (assessed.verdict.clone(), assessed.unevaluable);
        Self {
            id,
            progress_token: params.pointer("/_meta/progressToken").cloned(),
            trace: TraceContext::from_params(params),
            tool,
            arguments,
            body,
            verdict,
            unevaluable,
            invalid,
            continuation: None,
            task: None,
        }
    }

    /// Whether the call will wait for a person.
    pub fn is_held(&self) -> bool {
        self.invalid.is_none() && self.verdict.action == Action::Approve
    }
}
