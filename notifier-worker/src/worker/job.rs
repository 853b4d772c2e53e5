//! One job's lifecycle: run it, retry or pause, and settle it on the stream (done, dead
//! letter, given back).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, Ticket};
use airlock_shared::{NotifyJob, TicketId};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::retry::backoff_now;
use crate::stream::Delivery;
use crate::web_api::SlackError;

use super::context::{Ctx, Failure, Outcome, Parts};

/// One job being worked on.
pub(super) struct JobRun {
    pub(super) ctx: Arc<Ctx>,
    pub(super) d: Delivery,
    pub(super) slot: Option<OwnedSemaphorePermit>,
    pub(super) shutdown: CancellationToken,
    /// Failed attempts, including those of earlier deliveries.
    pub(super) attempts: u32,
    pub(super) rate_limited: u32,
    pub(super) called_slack: bool,
    pub(super) started: Instant,
}

impl JobRun {
    pub(super) fn p(&self) -> &Parts {
        &self.ctx.parts
    }

    pub(super) async fn run(mut self) {
        self.p().metrics.in_flight.inc();
        let kind = self
            .d
            .job
            .as_ref()
            .map(NotifyJob::kind)
            .unwrap_or("unreadable");
        let outcome = if self.shutdown.is_cancelled() {
            // Read as we were stopping: nothing was done yet, so another replica may have it.
            Outcome::GiveBack
        } else if self.attempts >= self.p().tuning.max_attempts {
            Outcome::DeadLetter(format!("gave up after {} failed deliveries", self.attempts))
        } else {
            match self.d.job.clone() {
                Err(e) => Outcome::DeadLetter(e),
                Ok(NotifyJob::ApprovalRequest { ticket_id }) => {
                    self.approval_request(ticket_id).await
                }
                Ok(
                    NotifyJob::TicketClosed { ticket_id } | NotifyJob::TicketVoted { ticket_id },
                ) => self.ticket_closed(ticket_id).await,
                Ok(NotifyJob::RefusedClick {
                    ticket_id,
                    user_id,
                    channel,
                    refusal,
                }) => {
                    self.refused_click(ticket_id, &user_id, &channel, &refusal)
                        .await
                }
            }
        };
        let label = outcome.label();
        self.settle(outcome).await;
        self.p()
            .metrics
            .jobs
            .with_label_values(&[kind, label])
            .inc();
        self.p().metrics.in_flight.dec();
    }

    /// Acknowledges, dead-letters or gives back the job. If Redis refuses even that, the job
    /// stays pending and is taken over later; every job is safe to run twice.
    pub(super) async fn settle(&mut self, outcome: Outcome) {
        let entry = self.d.entry_id.clone();
        for round in 1..=3u32 {
            let result = match &outcome {
                Outcome::Done => self.p().stream.ack(&entry).await,
                Outcome::GiveBack => self.p().stream.give_back(&self.d, self.attempts).await,
                Outcome::DeadLetter(error) => {
                    if round == 1 {
                        error!(error = %error, attempts = self.attempts, "job dead-lettered");
                        self.mark_ticket(error).await;
                    }
                    self.p()
                        .stream
                        .dead_letter(&self.d, error, self.attempts)
                        .await
                }
            };
            match result {
                Ok(()) => {
                    debug!(outcome = outcome.label(), "job settled");
                    return;
                }
                Err(e) => {
                    self.p()
                        .metrics
                        .backend_errors
                        .with_label_values(&["redis"])
                        .inc();
                    warn!(error = %chain(&e), round, "settling the job on the stream failed");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(round))).await;
                }
            }
        }
        error!("could not settle the job; it stays pending and will be taken over");
    }

    /// Records on the ticket that its Slack message could not be delivered.
    pub(super) async fn mark_ticket(&self, error: &str) {
        let ticket_id = match &self.d.job {
            Ok(
                NotifyJob::ApprovalRequest { ticket_id } | NotifyJob::TicketClosed { ticket_id },
            ) => *ticket_id,
            // A refused clicker's note is not the ticket's message, and a lost progress update
            // must not stop the decided one (a noted ticket is left alone by the reconciler).
            Ok(NotifyJob::RefusedClick { .. } | NotifyJob::TicketVoted { .. }) | Err(_) => return,
        };
        if let Err(e) = ticket::record_notify_error(&self.p().pool, ticket_id, error).await {
            self.p()
                .metrics
                .backend_errors
                .with_label_values(&["postgres"])
                .inc();
            error!(error = %chain(&e), "could not record the notify error on the ticket");
        }
    }

    /// Waits `d`, keeping the job's pending entry fresh so no other replica takes it over, and
    /// optionally lending our slot to other jobs meanwhile. `false` when shutting down.
    pub(super) async fn pause(&mut self, d: Duration, lend_slot: bool) -> bool {
        let deadline = Instant::now() + d;
        let touch_every = self.p().tuning.claim_idle / 3;
        if lend_slot {
            self.slot = None;
        }
        loop {
            let until = deadline.min(Instant::now() + touch_every);
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(until) => {}
            }
            if until >= deadline {
                break;
            }
            if let Err(e) = self.p().stream.touch(&self.d.entry_id).await {
                debug!(error = %chain(&e), "could not refresh the pending entry");
            }
        }
        if self.slot.is_none() {
            let slots = self.ctx.slots.clone();
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                p = slots.acquire_owned() => self.slot = p.ok(),
            }
        }
        true
    }

    /// Decides what a failure means: `None` to try again now, or how the job ends.
    pub(super) async fn failed(&mut self, what: &str, f: Failure) -> Option<Outcome> {
        let t = self.p().tuning.clone();
        let reason = match f {
            Failure::Slack(SlackError::Permanent(e)) => {
                return Some(Outcome::DeadLetter(format!("{what}: {e}")));
            }
            Failure::Slack(SlackError::RateLimited(d))
                if self.rate_limited < t.max_rate_limited =>
            {
                self.rate_limited += 1;
                self.p()
                    .metrics
                    .retries
                    .with_label_values(&["rate_limited"])
                    .inc();
                let wait = d.min(t.max_retry_after);
                warn!(
                    retry_after_ms = d.as_millis() as u64,
                    "{what}: rate limited by Slack; waiting"
                );
                return if self.pause(wait, false).await {
                    None
                } else {
                    Some(Outcome::GiveBack)
                };
            }
            Failure::Slack(e) => {
                self.p()
                    .metrics
                    .retries
                    .with_label_values(&[e.label()])
                    .inc();
                e.to_string()
            }
            Failure::Db(e) => {
                self.p()
                    .metrics
                    .backend_errors
                    .with_label_values(&["postgres"])
                    .inc();
                self.p()
                    .metrics
                    .retries
                    .with_label_values(&["postgres"])
                    .inc();
                format!("database: {}", chain(&e))
            }
            Failure::Redis(e) => {
                self.p()
                    .metrics
                    .backend_errors
                    .with_label_values(&["redis"])
                    .inc();
                self.p().metrics.retries.with_label_values(&["redis"]).inc();
                format!("redis: {}", chain(&e))
            }
        };
        self.attempts += 1;
        if self.attempts >= t.max_attempts {
            return Some(Outcome::DeadLetter(format!(
                "{what}: {reason} (gave up after {} attempts)",
                self.attempts
            )));
        }
        let wait = backoff_now(self.attempts, t.retry_base, t.retry_max);
        warn!(attempt = self.attempts, retry_in_ms = wait.as_millis() as u64, error = %reason, "{what} failed; will retry");
        if self.pause(wait, false).await {
            None
        } else {
            Some(Outcome::GiveBack)
        }
    }

    /// Times a Slack call, and notes the queue latency before the job's first one.
    pub(super) async fn slack<T>(
        &mut self,
        method: &'static str,
        call: impl Future<Output = Result<T, SlackError>>,
    ) -> Result<T, SlackError> {
        let m = self.p().metrics.clone();
        if !self.called_slack {
            self.called_slack = true;
            if let (Some(at), Ok(now)) = (
                self.d.enqueued_at_ms(),
                SystemTime::now().duration_since(UNIX_EPOCH),
            ) {
                let now_ms = now.as_millis() as u64;
                m.queue_latency
                    .observe(now_ms.saturating_sub(at) as f64 / 1000.0);
            }
        }
        let start = Instant::now();
        let result = call.await;
        m.slack_seconds
            .with_label_values(&[method])
            .observe(start.elapsed().as_secs_f64());
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        m.slack_calls.with_label_values(&[method, label]).inc();
        result
    }

    pub(super) async fn load(&mut self, id: TicketId) -> Result<Option<Ticket>, Outcome> {
        if let Some(t) = self.ctx.reads.submit(id).await {
            return Ok(t);
        }
        loop {
            match ticket::get(&self.p().pool, id).await {
                Ok(t) => return Ok(t),
                Err(e) => {
                    if let Some(o) = self.failed("reading the ticket", Failure::Db(e)).await {
                        return Err(o);
                    }
                }
            }
        }
    }

    pub(super) fn holder(&self) -> String {
        format!("{}/{}", self.p().stream.consumer(), self.d.entry_id)
    }
}
