//! Turning a verified click into a decision: authorise, write once to Postgres, then tell others.

use std::collections::HashSet;
use std::future::Future;

use std::time::Duration;
use tokio::time::Instant;

use airlock_shared::Keys;
use airlock_shared::RedisConn;
use airlock_shared::batch::Batcher;
use airlock_shared::db::Db;
use airlock_shared::job::{self, NotifyJob, Refusal};
use airlock_shared::signal::{self, DecisionSignal};
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, ClickDecision, Decided, Ticket, TicketStatus};
use airlock_shared::{TicketId, trace_context};

use crate::interaction::Click;
use crate::metrics::Metrics;

/// How long a click waits for its ticket's trace context: a trace is worth less than the click,
/// which must answer Slack within 3 s.
pub const TRACE_READ_TIMEOUT: Duration = Duration::from_millis(150);

/// Postgres could not answer; the click changed nothing we know of and nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("ticket query failed")]
    Query(#[source] sqlx::Error),
    #[error("ticket query took longer than {0:?}")]
    Timeout(Duration),
}

/// What a click did.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// This click decided the ticket; its new status.
    Decided(TicketStatus),
    /// This click's approval counted, and the ticket still waits for more.
    Voted {
        /// Approvals so far.
        approvals: usize,
        /// Approvals needed.
        needed: i32,
    },
    /// The click changed nothing; the clicker is told why.
    Refused(Refusal),
    /// The click is not for this deployment (another workspace or app).
    Foreign,
    /// This click revoked the ticket's standing grant.
    Revoked,
}

impl Outcome {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Decided(_) => "decided",
            Self::Voted { .. } => "voted",
            Self::Refused(Refusal::NotAnApprover) => "refused_not_approver",
            Self::Refused(Refusal::SelfApproval) => "refused_self_approval",
            Self::Refused(Refusal::AlreadyVoted) => "refused_already_voted",
            Self::Refused(Refusal::WrongCall) => "refused_wrong_call",
            Self::Refused(Refusal::AlreadyClosed { .. }) => "refused_closed",
            Self::Refused(Refusal::UnknownTicket) => "refused_unknown",
            Self::Refused(Refusal::MembershipUnknown { .. }) => "refused_membership_unknown",
            Self::Refused(Refusal::NoGrant) => "refused_no_grant",
            Self::Foreign => "foreign",
            Self::Revoked => "revoked",
        }
    }
}

/// Everything a decision needs.
#[derive(Clone)]
pub struct Approvals {
    /// The ticket store (the source of truth).
    pub pool: Db,
    /// Where signals and jobs go, reconnecting by itself.
    pub redis: RedisConn,
    /// Redis names.
    pub keys: Keys,
    /// Global approvers, used when a ticket names none (empty: anyone may decide).
    pub approvers: Vec<String>,
    /// How old a user group's membership snapshot may be and still count (see `membership`).
    pub membership_max_age: Duration,
    /// Only clicks from this workspace count, when set.
    pub team_id: Option<String>,
    /// Only clicks for this Slack app count, when set.
    pub api_app_id: Option<String>,
    /// Bound on each Postgres query.
    pub db_timeout: Duration,
    /// Bound on each Redis step.
    pub redis_timeout: Duration,
    /// Where Redis failures are counted.
    pub metrics: Metrics,
    /// Concurrent clicks, decided in one statement (one commit) per batch.
    pub batch: DecisionBatcher,
}

/// Clicks decided together, each with the moment its caller gives up; see [`decision_batcher`].
pub type DecisionBatcher = Batcher<(ClickDecision, Instant), Option<Ticket>>;

/// Starts the batch loop for clicks: a burst of clicks costs one statement and one commit per
/// batch instead of one each. A ticket clicked twice in one batch is decided by its first click;
/// the others are answered `None` and decide alone (and so find it decided, or, short of a
/// quorum, add their vote after the first).
///
/// A batch never outlives the most impatient of its callers: a click answered 500 must not be
/// decided behind its back with nobody left to announce it.
pub fn decision_batcher(pool: Db, max: usize) -> DecisionBatcher {
    Batcher::start(max, move |clicks: Vec<(ClickDecision, Instant)>| {
        let pool = pool.clone();
        async move {
            let deadline = clicks
                .iter()
                .map(|c| c.1)
                .min()
                .unwrap_or_else(Instant::now);
            let mut seen = HashSet::new();
            let mut firsts = Vec::new();
            let index: Vec<Option<usize>> = clicks
                .iter()
                .map(|(c, _)| {
                    seen.insert(c.ticket).then(|| {
                        firsts.push(c.clone());
                        firsts.len() - 1
                    })
                })
                .collect();
            let mut decided =
                tokio::time::timeout_at(deadline, ticket::decide_many(&pool, &firsts))
                    .await
                    .map_err(|_| {
                        DecideError::Timeout(deadline.saturating_duration_since(Instant::now()))
                    })?
                    .map_err(DecideError::Query)?;
            Ok::<_, DecideError>(
                index
                    .into_iter()
                    .map(|i| i.and_then(|i| decided.get_mut(i).and_then(Option::take)))
                    .collect(),
            )
        }
    })
}

impl Approvals {
    /// Makes `span` (the click, not yet entered) a child of the held call's span, whose trace
    /// context the ticket row keeps. Only when spans are exported; a ticket without a context,
    /// or a failed or slow read (over [`TRACE_READ_TIMEOUT`]), leaves the click a trace of its
    /// own (it never fails the click).
    pub async fn join_trace(&self, id: TicketId, span: &tracing::Span) {
        let joined = trace_context::join_ticket(&self.pool, id, span);
        let why = match tokio::time::timeout(TRACE_READ_TIMEOUT, joined).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => chain(&e),
            Err(_) => format!("no answer within {TRACE_READ_TIMEOUT:?}"),
        };
        tracing::warn!(ticket = %id, error = %why, "ticket's trace context not read; the click starts a trace of its own");
    }

    /// Applies one click. Only a `Postgres` failure is an error.
    pub async fn apply(&self, click: &Click) -> Result<Outcome, DecideError> {
        if self.is_foreign(click) {
            return Ok(Outcome::Foreign);
        }
        let message = click.channel.as_deref().zip(click.message_ts.as_deref());
        let clicker = ticket::Clicker {
            id: &click.user_id,
            name: &click.user_name,
            global_approvers: &self.approvers,
            membership_max_age: self.membership_max_age,
        };
        let batched = self.click_decision(click);
        let gives_up = Instant::now() + self.db_timeout;
        let decided = self
            .db(async {
                match self.batch.submit((batched, gives_up)).await {
                    Some(Some(t)) => Ok(Decided::Changed(t)),
                    // Changed nothing in the batch (or the batch failed): decide alone, which
                    // also says why nothing changed.
                    Some(None) | None => {
                        ticket::decide_as(
                            &self.pool,
                            click.ticket_id,
                            click.decision,
                            clicker,
                            message,
                            click.fingerprint.as_deref(),
                        )
                        .await
                    }
                }
            })
            .await?;
        Ok(self.settle(click, decided).await)
    }

    /// Whether the click is for another workspace or app (logged; it changes nothing).
    pub(crate) fn is_foreign(&self, click: &Click) -> bool {
        let foreign = !same_or_unset(self.team_id.as_deref(), click.team_id.as_deref())
            || !same_or_unset(self.api_app_id.as_deref(), click.api_app_id.as_deref());
        if foreign {
            tracing::warn!(team_id = ?click.team_id, api_app_id = ?click.api_app_id, "click from another workspace or app ignored");
        }
        foreign
    }

    /// The click as the vote statement reads it.
    pub(crate) fn click_decision(&self, click: &Click) -> ClickDecision {
        ClickDecision {
            ticket: click.ticket_id,
            decision: click.decision,
            user_id: click.user_id.clone(),
            user_name: click.user_name.clone(),
            message: click.channel.clone().zip(click.message_ts.clone()),
            allowed_by_global: ticket::may_decide(&click.user_id, &[], &self.approvers),
            fingerprint: click.fingerprint.clone(),
            membership_max_age: self.membership_max_age,
        }
    }

    /// After the vote is durable: tell gateways and the notifier, or the clicker why not.
    pub(crate) async fn settle(&self, click: &Click, decided: Decided) -> Outcome {
        match decided {
            Decided::Changed(t) if t.status.is_pending() => {
                self.announce_vote(&t).await;
                Outcome::Voted {
                    approvals: t.approved_by_ids.len(),
                    needed: t.approvals_needed,
                }
            }
            Decided::Changed(t) => {
                self.announce(&t).await;
                Outcome::Decided(t.status)
            }
            Decided::Unchanged(t) => {
                // Pending but unchanged means its deadline passed before the sweeper saw it.
                let status = if t.status == TicketStatus::Pending {
                    TicketStatus::Expired
                } else {
                    t.status
                };
                let refusal = Refusal::AlreadyClosed {
                    status,
                    decided_by: t.decided_by_name.clone().or(t.decided_by_id.clone()),
                };
                self.refuse(click, refusal).await
            }
            Decided::NotApprover(_) => self.refuse(click, Refusal::NotAnApprover).await,
            Decided::Unknown => self.refuse(click, Refusal::UnknownTicket).await,
            Decided::SelfApproval(_) => self.refuse(click, Refusal::SelfApproval).await,
            Decided::AlreadyVoted(_) => self.refuse(click, Refusal::AlreadyVoted).await,
            Decided::WrongCall(_) => self.refuse(click, Refusal::WrongCall).await,
            Decided::MembershipUnknown(_, group) => {
                self.refuse(click, crate::membership::unknown(group)).await
            }
        }
    }

    pub(crate) async fn db<T>(
        &self,
        query: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DecideError> {
        tokio::time::timeout(self.db_timeout, query)
            .await
            .map_err(|_| DecideError::Timeout(self.db_timeout))?
            .map_err(DecideError::Query)
    }

    /// After the commit: wake gateways, then have the notifier update the message. Failures are
    /// counted and logged, never returned: the decision is already durable and gateways also poll
    /// Postgres.
    async fn announce(&self, t: &Ticket) {
        let signal = DecisionSignal {
            ticket_id: t.id,
            status: t.status,
        };
        let job = NotifyJob::TicketClosed { ticket_id: t.id };
        let mut conn = self.redis.clone();
        // One round trip for both; if it fails, neither step is known to have happened.
        let announced = self
            .redis_step(signal::publish_with_job(
                &mut conn, &self.keys, &signal, &job,
            ))
            .await;
        if let Err(e) = announced {
            self.record_redis("publish", Err(e));
            self.metrics
                .redis_failures
                .with_label_values(&["enqueue"])
                .inc();
        }
    }

    /// A vote short of the quorum: only the message changes (gateways wait for the decision).
    async fn announce_vote(&self, t: &Ticket) {
        let job = NotifyJob::TicketVoted { ticket_id: t.id };
        let mut conn = self.redis.clone();
        let enqueued = self
            .redis_step(job::enqueue(&mut conn, &self.keys, &job))
            .await;
        self.record_redis("enqueue_vote", enqueued.map(|_| ()));
    }

    pub(crate) async fn refuse(&self, click: &Click, refusal: Refusal) -> Outcome {
        match click.channel.clone() {
            Some(channel) => {
                let job = NotifyJob::RefusedClick {
                    ticket_id: Some(click.ticket_id),
                    user_id: click.user_id.clone(),
                    channel,
                    refusal: refusal.clone(),
                };
                let mut conn = self.redis.clone();
                let enqueued = self
                    .redis_step(job::enqueue(&mut conn, &self.keys, &job))
                    .await;
                self.record_redis("enqueue_refusal", enqueued.map(|_| ()));
            }
            None => tracing::warn!("refused click names no channel; the clicker cannot be told"),
        }
        Outcome::Refused(refusal)
    }

    pub(crate) async fn redis_step<T>(
        &self,
        step: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, RedisStepError> {
        tokio::time::timeout(self.redis_timeout, step)
            .await
            .map_err(|_| RedisStepError::Timeout(self.redis_timeout))?
            .map_err(RedisStepError::Redis)
    }

    pub(crate) fn record_redis(&self, step: &'static str, result: Result<(), RedisStepError>) {
        if let Err(e) = result {
            self.metrics.redis_failures.with_label_values(&[step]).inc();
            tracing::warn!(step, error = %chain(&e), "redis step failed after the decision was settled");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisStepError {
    #[error("redis command failed")]
    Redis(#[source] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

fn same_or_unset(expected: Option<&str>, got: Option<&str>) -> bool {
    match expected {
        None => true,
        Some(e) => got == Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_checks_apply_only_when_configured() {
        assert!(same_or_unset(None, None));
        assert!(same_or_unset(None, Some("T1")));
        assert!(same_or_unset(Some("T1"), Some("T1")));
        assert!(!same_or_unset(Some("T1"), Some("T2")));
        assert!(!same_or_unset(Some("T1"), None));
    }
}
