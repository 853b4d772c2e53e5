//! One call's pipeline: the verdict it carries, the argument check, budget and session lock,
//! the hold, the upstream, and the audit row. Held calls answer over SSE (with keepalives) when
//! the client accepts it.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::audit::AuditRecord;
use airlock_shared::ticket::NewTicket;
use airlock_shared::{TicketId, canonical};
use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::answer::deliver;
use crate::approval::{HeldCalls, Holds};
use crate::audit::AuditSink;
pub use crate::caller::Caller;
use crate::continuation::{self, Sealer};
use crate::error::{CallError, UpstreamError};
use crate::grant;
use crate::held_stream::held_stream;
use crate::input_schema::InputSchemas;
use crate::lock::{LockError, Locks};
use crate::metrics::Metrics;
use crate::policy::{Action, GrantRule, Verdict};
use crate::request_state::RequestStates;
use crate::rules::Rules;
use crate::task::{Era, TaskCall, Tasks};
use crate::tool_call::ToolCall;
use crate::tool_listing;
use crate::trace_context::TraceContext;
use crate::transport::{accepts_sse, waiting_for};
use crate::upstream_session::UpstreamSessions;

/// Everything one call's pipeline uses.
pub struct Pipeline {
    /// The policy and agent keys in force (a call's verdict was taken when it arrived).
    pub rules: Rules,
    /// The tools' input schemas, from the upstream's `tools/list` answers.
    pub schemas: Arc<InputSchemas>,
    pub locks: Locks,
    pub holds: Holds,
    /// The calls held right now, for `notifications/cancelled`.
    pub held: HeldCalls,
    pub link: UpstreamSessions,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub approval_timeout: Duration,
    /// How often idle SSE streams and held calls get a keepalive.
    pub keepalive: Duration,
    /// Seals and opens the gateway's `requestState` (2026-07-28 continuations).
    pub request_states: Arc<RequestStates>,
    /// Held calls served as MCP tasks, for clients that can take one.
    pub tasks: Arc<Tasks>,
}

/// What the audit row of one call says.
#[derive(Default)]
struct CallRecord {
    rule: Option<String>,
    policy_revision: Option<String>,
    decision: &'static str,
    ticket: Option<TicketId>,
    /// The ticket whose standing grant let the call pass (it then has no ticket of its own).
    grant_ticket: Option<TicketId>,
    upstream_status: Option<u16>,
    /// The call continues an approved one (its `requestState` named the ticket): not held again.
    continued: bool,
    /// The task the held call was answered with (it runs after approval, audited then too).
    task: Option<String>,
}

impl CallRecord {
    /// The audit outcome of a call that got an answer.
    fn outcome(&self) -> &'static str {
        match (
            self.task.is_some(),
            self.continued,
            self.ticket,
            self.grant_ticket,
        ) {
            (true, _, _, _) => "task",
            (false, true, _, _) => "continued",
            (false, false, Some(_), _) => "approved",
            (false, false, None, Some(_)) => "granted",
            (false, false, None, None) => "forwarded",
        }
    }
}

/// The audit row of one call, written exactly once: when the call ends, or when its future is
/// dropped because the client went away mid-call (a held call's ticket is cancelled then too).
struct AuditTrail<'a> {
    p: &'a Pipeline,
    caller: &'a Caller,
    tool: String,
    args: Value,
    started: Instant,
    rec: CallRecord,
    trace: TraceContext,
    written: bool,
}

impl AuditTrail<'_> {
    fn write(&mut self, outcome: &'static str, decided_by: Option<String>) {
        self.written = true;
        self.p
            .metrics
            .tool_calls
            .with_label_values(&[outcome])
            .inc();
        self.p.audit.record(AuditRecord {
            at: chrono::Utc::now(),
            principal: self.caller.principal().0.clone(),
            principal_issuer: self.caller.identity.issuer.as_deref().map(str::to_owned),
            session_id: self
                .caller
                .session
                .as_ref()
                .map(|_| self.caller.sid.0.clone()),
            tool: std::mem::take(&mut self.tool),
            arguments: Some(std::mem::take(&mut self.args)),
            rule: self.rec.rule.take(),
            decision: self.rec.decision.to_owned(),
            outcome: outcome.to_owned(),
            ticket_id: self.rec.ticket.map(|t| t.0),
            grant_ticket_id: self.rec.grant_ticket.map(|t| t.0),
            decided_by,
            upstream_status: self.rec.upstream_status.map(i32::from),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            policy_revision: self.rec.policy_revision.take(),
            traceparent: self.trace.traceparent.take(),
            tracestate: self.trace.tracestate.take(),
            task_id: self.rec.task.take(),
        });
    }
}

impl Drop for AuditTrail<'_> {
    fn drop(&mut self) {
        if !self.written {
            tracing::info!(session = %self.caller.sid, tool = %self.tool, "client went away mid-call");
            self.write("client_gone", None);
        }
    }
}

impl Pipeline {
    /// A `tools/call` on its own: a held one answers over SSE at once if the client takes it.
    ///
    /// The call is boxed on its way in: an async fn keeps its arguments beside the futures it
    /// moves them into, and a held call parks this one for minutes.
    pub fn answer(
        self: Arc<Self>,
        caller: Caller,
        call: ToolCall,
    ) -> impl Future<Output = Response> {
        self.answer_boxed(caller, Box::new(call))
    }

    async fn answer_boxed(self: Arc<Self>, caller: Caller, call: Box<ToolCall>) -> Response {
        if !call.is_held() || call.task.is_some() || !accepts_sse(&caller.headers) {
            return self.run_boxed(&caller, call).await;
        }
        let waiting = waiting_for(&call.verdict.approvers);
        let token = call.progress_token.clone();
        let keepalive = self.keepalive;
        let fut = async move { self.run_boxed(&caller, call).await };
        held_stream(fut, keepalive, token, waiting)
    }

    /// One `tools/call` through the pipeline, answered as its own response (also for batch
    /// members).
    pub fn run<'a>(&'a self, caller: &'a Caller, call: ToolCall) -> impl Future<Output = Response> {
        self.run_boxed(caller, Box::new(call))
    }

    async fn run_boxed(&self, caller: &Caller, call: Box<ToolCall>) -> Response {
        let ToolCall {
            id,
            tool,
            arguments,
            body,
            verdict,
            unevaluable,
            invalid,
            continuation,
            trace,
            task,
            ..
        } = call.unboxed();
        let span = tracing::info_span!("tools_call", principal = %caller.principal(), session = %caller.sid, tool = %tool, ticket = tracing::field::Empty);
        // The agent's span is this call's parent (set before the span is first entered).
        trace.parent(&caller.headers).parent(&span);
        let mut trail = AuditTrail {
            p: self,
            caller,
            tool,
            args: arguments,
            started: Instant::now(),
            rec: CallRecord {
                decision: "none",
                ..CallRecord::default()
            },
            trace,
            written: false,
        };
        let checked = match (invalid, continuation) {
            (Some(why), _) => Err(CallError::InvalidParams(why.to_owned())),
            (None, Some(Err(e))) => Err(CallError::RequestState(e)),
            (None, Some(Ok(c))) => Ok((verdict, c.ticket)),
            (None, None) => Ok((verdict, None)),
        };
        let steps = Steps {
            p: self,
            caller,
            id: &id,
            tool: &trail.tool,
            args: &trail.args,
            unevaluable: &unevaluable,
            trace: &trail.trace,
            task,
        };
        let result = steps
            .go(checked, body, &mut trail.rec)
            .instrument(span.clone())
            .await;
        let (outcome, decided_by, response) = match result {
            Ok(resp) => (trail.rec.outcome(), None, resp),
            Err(e) => {
                let _enter = span.enter();
                if e.is_fault() {
                    tracing::error!(error = %airlock_shared::telemetry::chain(&e), "tool call failed");
                } else {
                    tracing::info!(outcome = e.outcome(), "tool call refused");
                }
                trail.rec.ticket = trail.rec.ticket.or(e.ticket());
                let decided_by = e.decided_by().map(str::to_owned);
                (
                    e.outcome(),
                    decided_by,
                    Json(e.to_jsonrpc(&id)).into_response(),
                )
            }
        };
        trail.write(outcome, decided_by);
        response
    }
}

/// The steps of one call, in order.
struct Steps<'a> {
    p: &'a Pipeline,
    caller: &'a Caller,
    id: &'a Value,
    tool: &'a str,
    args: &'a Value,
    unevaluable: &'a [Arc<str>],
    trace: &'a TraceContext,
    /// The client can take a task, in this dialect: a hold is answered with one.
    task: Option<Era>,
}

impl Steps<'_> {
    async fn go(
        &self,
        checked: Result<(Verdict, Option<TicketId>), CallError>,
        body: Bytes,
        rec: &mut CallRecord,
    ) -> Result<Response, CallError> {
        let (verdict, continues) = checked?;
        let (p, c) = (self.p, self.caller);
        // A call policy denies is refused whatever its arguments, without asking the upstream.
        let policy = p.rules.policy();
        if policy.validate_arguments && verdict.action != Action::Deny {
            let (schemas, link) = (&p.schemas, &p.link);
            let check = tool_listing::check_arguments(schemas, link, c, self.tool, self.args);
            Box::pin(check).await?;
        }
        for rule in self.unevaluable {
            tracing::warn!(tool = %self.tool, rule = %rule, "policy condition could not be evaluated on the arguments; approve/deny rules match, allow rules are skipped");
            p.metrics
                .policy_unevaluable
                .with_label_values(&[rule])
                .inc();
        }
        rec.rule = Some(verdict.rule.to_string());
        rec.policy_revision = Some(verdict.revision.to_string());
        rec.decision = verdict.action.as_str();
        // Counted before the rules take effect; the lock is taken in the same round trip.
        let wants_lock = !verdict.read_only && verdict.action != Action::Deny;
        let request_hash = canonical::request_hash(self.tool, self.args);
        // Boxed, as every step beside the hold: a held call parks this future, which is as large
        // as its largest state.
        let budget = c.budget(&policy, chrono::Utc::now());
        let lock = Box::pin(p.locks.admit(&c.sid, &request_hash, budget, wants_lock))
            .await
            .map_err(|e| match e {
                LockError::BudgetExceeded(limit) => {
                    rec.decision = "budget";
                    CallError::BudgetExceeded { limit }
                }
                LockError::Busy { retry_after } => CallError::SessionBusy {
                    retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                },
                LockError::Redis(e) => CallError::Redis(e),
            })?;
        if verdict.action == Action::Deny {
            return Err(CallError::DeniedByPolicy {
                rule: verdict.rule.to_string(),
                reason: verdict.reason.as_deref().map(str::to_owned),
            });
        }
        if let Some(task) = self
            .clear(&verdict, continues, &request_hash, &body, rec)
            .await?
        {
            return Ok(task);
        }
        let upstream =
            tracing::info_span!("upstream_call", tool = %self.tool, held = rec.ticket.is_some());
        let sent = c.send(&p.link, body, &c.headers).instrument(upstream);
        let mut resp = Box::pin(sent).await?;
        rec.upstream_status = Some(resp.status().as_u16());
        if !resp.status().is_success() {
            return Err(UpstreamError::Status(resp.status().as_u16()).into());
        }
        if c.session.is_none() {
            let sealer = Sealer {
                states: p.request_states.clone(),
                ticket: rec.ticket,
                request_hash,
                principal: c.principal().0.clone(),
                now: chrono::Utc::now(),
            };
            resp = continuation::seal_answer(resp, self.id.clone(), sealer);
        }
        let delivered = deliver(resp, &c.headers, Some(self.id.clone()), lock, p.keepalive);
        Ok(Box::pin(delivered).await?)
    }

    /// An approve verdict's way past the hold: a continuation of an approved call, a standing
    /// grant, or a person's approval now; or, for a client that takes tasks, the task's answer.
    async fn clear(
        &self,
        verdict: &Verdict,
        continues: Option<TicketId>,
        request_hash: &str,
        body: &Bytes,
        rec: &mut CallRecord,
    ) -> Result<Option<Response>, CallError> {
        let (p, c) = (self.p, self.caller);
        match (verdict.action, continues) {
            (Action::Approve, Some(t)) => {
                tracing::info!(ticket = %t, "continuation of ticket {t}: approved before, not held again");
                (rec.ticket, rec.continued) = (Some(t), true);
            }
            (Action::Approve, None) => {
                let principal = &c.principal().0;
                let now = chrono::Utc::now();
                let pool = &p.holds.pool;
                let grant = grant::covering(pool, principal, self.tool, verdict, request_hash, now);
                match Box::pin(grant).await? {
                    Some(g) => {
                        tracing::info!(grant = %g.id, ticket = %g.ticket_id, "passed on a standing grant");
                        rec.grant_ticket = Some(g.ticket_id);
                    }
                    None => {
                        // Boxed: it is dropped once the ticket is open, not carried through the hold.
                        let new = Box::new(self.new_ticket(verdict, request_hash.to_owned()));
                        if let Some(era) = self.task {
                            let call = TaskCall {
                                era,
                                caller: c,
                                body,
                            };
                            let made = Box::pin(p.tasks.create(*new, call)).await?;
                            (rec.ticket, rec.task) = (Some(made.ticket), Some(made.task_id));
                            let answer =
                                json!({"jsonrpc": "2.0", "id": self.id, "result": made.result});
                            return Ok(Some(Json(answer).into_response()));
                        }
                        self.hold(new, rec).await?
                    }
                }
            }
            (Action::Allow | Action::Deny, _) => {}
        }
        Ok(None)
    }

    fn new_ticket(&self, verdict: &Verdict, request_hash: String) -> NewTicket {
        let (p, c) = (self.p, self.caller);
        let carried = self.trace.for_ticket();
        NewTicket {
            id: TicketId::new(),
            principal: c.principal().0.clone(),
            principal_issuer: c.identity.issuer.as_deref().map(str::to_owned),
            principal_claims: verdict.shown.of(&c.identity),
            session_id: c.sid.0.clone(),
            tool: self.tool.to_owned(),
            arguments: self.args.clone(),
            rule: verdict.rule.to_string(),
            reason: verdict.reason.as_deref().map(str::to_owned),
            approvers: verdict.approvers.to_vec(),
            approver_groups: verdict.approver_groups.to_vec(),
            slack_channel: verdict.channel.as_deref().map(str::to_owned),
            request_hash,
            timeout: verdict.timeout.unwrap_or(p.approval_timeout),
            approvals: verdict.approvals,
            owner: p
                .rules
                .agents()
                .owner_of(&c.principal().0)
                .map(str::to_owned),
            fingerprint: canonical::fingerprint(self.tool, self.args, Some(&verdict.revision)),
            policy_revision: Some(verdict.revision.to_string()),
            grant: verdict.grant.as_ref().map(GrantRule::offer),
            traceparent: carried.traceparent,
            tracestate: carried.tracestate,
        }
    }

    async fn hold(&self, new: Box<NewTicket>, rec: &mut CallRecord) -> Result<(), CallError> {
        let p = self.p;
        let c = self.caller;
        let cancel = CancellationToken::new();
        let _held = p.held.track(&c.sid, self.id, cancel.clone());
        let cleared = p.holds.hold(new, cancel, &mut rec.ticket).await?;
        rec.ticket = Some(cleared.ticket.id);
        tracing::Span::current().record("ticket", tracing::field::display(cleared.ticket.id));
        Ok(())
    }
}
