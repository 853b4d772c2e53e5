//! The worker: reads jobs through the consumer group, runs each against Slack, and settles it on
//! the stream only once its effect is done (acknowledged, dead-lettered, or given back).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_shared::batch::Batcher;
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, Ticket};
use airlock_shared::{NotifyJob, Refusal, TicketId};
use redis::RedisError;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

use crate::claim::{Claim, PostClaims};
use crate::config::Tuning;
use crate::message;
use crate::metrics::Metrics;
use crate::pace::Pacer;
use crate::retry::backoff_now;
use crate::slack::{Posted, SlackClient, SlackError};
use crate::stream::{Delivery, JobStream};

/// Most jobs read in one `XREADGROUP`.
const READ_BATCH: usize = 64;
/// How often a job whose ticket is being posted by someone else looks again.
const BUSY_POLL: Duration = Duration::from_millis(100);
/// Longest gap between looks while an update waits for its message to be posted.
const UPDATE_POLL_MAX: Duration = Duration::from_secs(2);

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The consumer group could not be created.
    #[error("creating the consumer group")]
    Group(#[source] RedisError),
}

/// Everything a job needs.
pub struct Parts {
    /// Ticket rows.
    pub pool: PgPool,
    /// The stream, as this consumer.
    pub stream: JobStream,
    /// Slack.
    pub slack: SlackClient,
    /// Per-channel pacing.
    pub pacer: Pacer,
    /// Post claims.
    pub claims: PostClaims,
    /// Metrics.
    pub metrics: Metrics,
    /// Where requests go when their rule names no channel.
    pub default_channel: String,
    /// Timing knobs.
    pub tuning: Tuning,
    /// Jobs worked on at once.
    pub concurrency: usize,
}

struct Ctx {
    parts: Parts,
    slots: Arc<Semaphore>,
    /// Ticket reads of concurrent jobs, one statement per batch.
    reads: Batcher<TicketId, Option<Ticket>>,
    /// Posted messages of concurrent jobs, recorded in one statement (one commit) per batch.
    records: Batcher<(TicketId, String, String), Option<Ticket>>,
}

/// A notifier replica's job loop.
#[derive(Clone)]
pub struct Worker {
    ctx: Arc<Ctx>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("stream", &self.ctx.parts.stream)
            .finish_non_exhaustive()
    }
}

/// How a job ended.
#[derive(Debug)]
enum Outcome {
    /// Its effect is done (or was already done): acknowledge.
    Done,
    /// It cannot succeed: move to the dead-letter stream and mark the ticket.
    DeadLetter(String),
    /// We are stopping: put it back for another replica.
    GiveBack,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::DeadLetter(_) => "dead_letter",
            Self::GiveBack => "given_back",
        }
    }
}

/// What went wrong in one attempt.
enum Failure {
    Slack(SlackError),
    Db(sqlx::Error),
    Redis(RedisError),
}

impl Worker {
    /// A worker over `parts`.
    pub fn new(parts: Parts) -> Self {
        let slots = Arc::new(Semaphore::new(parts.concurrency.max(1)));
        let batch = parts.concurrency.max(1);
        let pool = parts.pool.clone();
        let reads = Batcher::start(batch, move |ids: Vec<TicketId>| {
            let pool = pool.clone();
            async move {
                let rows: HashMap<TicketId, Ticket> = ticket::get_many(&pool, &ids)
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                Ok::<_, sqlx::Error>(ids.iter().map(|id| rows.get(id).cloned()).collect())
            }
        });
        let pool = parts.pool.clone();
        let records = Batcher::start(batch, move |posts: Vec<(TicketId, String, String)>| {
            let pool = pool.clone();
            async move {
                let rows: HashMap<TicketId, Ticket> = ticket::record_messages(&pool, &posts)
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                Ok::<_, sqlx::Error>(posts.iter().map(|p| rows.get(&p.0).cloned()).collect())
            }
        });
        Self {
            ctx: Arc::new(Ctx {
                parts,
                slots,
                reads,
                records,
            }),
        }
    }

    /// Runs until `shutdown`; then stops reading, lets in-flight jobs finish or give themselves
    /// back, and returns once they have (or the grace period is over).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let p = &self.ctx.parts;
        p.stream.ensure_group().await.map_err(WorkerError::Group)?;
        info!(consumer = p.stream.consumer(), "notifier worker started");
        let tasks = TaskTracker::new();
        own_pending_first(&self.ctx, &tasks, &shutdown).await;
        let claimer = tokio::spawn(claim_loop(
            self.ctx.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        read_loop(&self.ctx, &tasks, &shutdown).await;
        let _ = claimer.await;
        tasks.close();
        info!(in_flight = tasks.len(), "stopping: draining in-flight jobs");
        if tokio::time::timeout(p.tuning.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            warn!(
                left = tasks.len(),
                "in-flight jobs did not finish within the grace period; they stay pending and \
                 another replica will take them over"
            );
        }
        info!("notifier worker stopped");
        Ok(())
    }
}

/// Waits for at least one free slot, then takes up to `max` of them.
async fn take_slots(
    ctx: &Ctx,
    max: usize,
    shutdown: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        p = ctx.slots.clone().acquire_owned() => p.ok()?,
    };
    let mut permits = vec![first];
    while permits.len() < max {
        match ctx.slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

async fn read_loop(ctx: &Arc<Ctx>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let p = &ctx.parts;
    let mut failures = 0;
    while !shutdown.is_cancelled() {
        let Some(mut permits) = take_slots(ctx, READ_BATCH, shutdown).await else {
            break;
        };
        // Not raced against shutdown: dropping a read in flight would strand its entries in our
        // pending list until another replica takes them over. The block is short instead.
        match p.stream.read(permits.len(), p.tuning.read_block).await {
            Ok(deliveries) => {
                failures = 0;
                for d in deliveries {
                    let Some(slot) = permits.pop() else { break };
                    spawn_job(ctx, tasks, d, slot, shutdown);
                }
            }
            Err(e) => {
                failures += 1;
                p.metrics.backend_errors.with_label_values(&["redis"]).inc();
                error!(error = %chain(&e), "reading the notification stream failed");
                if e.code() == Some("NOGROUP") {
                    let _ = p.stream.ensure_group().await;
                }
                drop(permits);
                let wait =
                    backoff_now(failures, Duration::from_millis(100), Duration::from_secs(5));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Starts the jobs this consumer held when it last stopped (a restart under the same name), so
/// that they do not wait out the idle-reclaim timeout.
async fn own_pending_first(ctx: &Arc<Ctx>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let p = &ctx.parts;
    let mut after = "0".to_owned();
    loop {
        let Some(mut permits) = take_slots(ctx, READ_BATCH, shutdown).await else {
            return;
        };
        let own = match p.stream.own_pending(&after, permits.len()).await {
            Ok(own) => own,
            Err(e) => {
                // The claim loop takes them over later.
                p.metrics.backend_errors.with_label_values(&["redis"]).inc();
                warn!(error = %chain(&e), "reading our own pending jobs failed");
                return;
            }
        };
        let Some(last) = own.last().map(|d| d.entry_id.clone()) else {
            return;
        };
        for d in own {
            let Some(slot) = permits.pop() else { break };
            info!(entry_id = %d.entry_id, prior_failures = d.prior_failures, "resuming our own pending job");
            spawn_job(ctx, tasks, d, slot, shutdown);
        }
        after = last;
    }
}

/// Takes over jobs that another (crashed or stuck) consumer has left pending too long.
async fn claim_loop(ctx: Arc<Ctx>, tasks: TaskTracker, shutdown: CancellationToken) {
    let p = &ctx.parts;
    let mut cursor = "0-0".to_owned();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(p.tuning.claim_every) => {}
        }
        // Walk the whole pending list once per round.
        loop {
            let Some(mut permits) = take_slots(&ctx, READ_BATCH, &shutdown).await else {
                return;
            };
            match p
                .stream
                .autoclaim(p.tuning.claim_idle, &cursor, permits.len())
                .await
            {
                Ok((next, claimed)) => {
                    for d in claimed {
                        let Some(slot) = permits.pop() else { break };
                        p.metrics.claimed.inc();
                        info!(entry_id = %d.entry_id, prior_failures = d.prior_failures, "took over a stalled job");
                        spawn_job(&ctx, &tasks, d, slot, &shutdown);
                    }
                    let done = next == "0-0";
                    cursor = next;
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    p.metrics.backend_errors.with_label_values(&["redis"]).inc();
                    warn!(error = %chain(&e), "XAUTOCLAIM failed");
                    cursor = "0-0".to_owned();
                    break;
                }
            }
        }
    }
}

fn spawn_job(
    ctx: &Arc<Ctx>,
    tasks: &TaskTracker,
    d: Delivery,
    slot: OwnedSemaphorePermit,
    shutdown: &CancellationToken,
) {
    let kind = d.job.as_ref().map(NotifyJob::kind).unwrap_or("unreadable");
    let ticket_id = d
        .job
        .as_ref()
        .ok()
        .and_then(NotifyJob::ticket_id)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("job", entry_id = %d.entry_id, kind, ticket_id = %ticket_id);
    let run = JobRun {
        ctx: ctx.clone(),
        attempts: d.prior_failures,
        d,
        slot: Some(slot),
        shutdown: shutdown.clone(),
        rate_limited: 0,
        called_slack: false,
        started: Instant::now(),
    };
    tasks.spawn(run.run().instrument(span));
}

/// One job being worked on.
struct JobRun {
    ctx: Arc<Ctx>,
    d: Delivery,
    slot: Option<OwnedSemaphorePermit>,
    shutdown: CancellationToken,
    /// Failed attempts, including those of earlier deliveries.
    attempts: u32,
    rate_limited: u32,
    called_slack: bool,
    started: Instant,
}

impl JobRun {
    fn p(&self) -> &Parts {
        &self.ctx.parts
    }

    async fn run(mut self) {
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
                Ok(NotifyJob::TicketClosed { ticket_id }) => self.ticket_closed(ticket_id).await,
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
    async fn settle(&mut self, outcome: Outcome) {
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
    async fn mark_ticket(&self, error: &str) {
        let ticket_id = match &self.d.job {
            Ok(
                NotifyJob::ApprovalRequest { ticket_id } | NotifyJob::TicketClosed { ticket_id },
            ) => *ticket_id,
            // A refused clicker's note is not the ticket's message.
            Ok(NotifyJob::RefusedClick { .. }) | Err(_) => return,
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
    async fn pause(&mut self, d: Duration, lend_slot: bool) -> bool {
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
    async fn failed(&mut self, what: &str, f: Failure) -> Option<Outcome> {
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
    async fn slack<T>(
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

    async fn load(&mut self, id: TicketId) -> Result<Option<Ticket>, Outcome> {
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

    fn holder(&self) -> String {
        format!("{}/{}", self.p().stream.consumer(), self.d.entry_id)
    }

    /// Posts the approval request once per ticket.
    async fn approval_request(&mut self, id: TicketId) -> Outcome {
        let holder = self.holder();
        loop {
            let t = match self.load(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Outcome::DeadLetter("no such ticket".into()),
                Err(o) => return o,
            };
            if t.message_ts.is_some() {
                debug!("already posted; nothing to do");
                return Outcome::Done;
            }
            let channel = t
                .slack_channel
                .clone()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| self.p().default_channel.clone());
            match self.p().pacer.reserve(&channel).await {
                Ok(wait) if wait.is_zero() => {}
                Ok(wait) => {
                    if !self.pause(wait, false).await {
                        return Outcome::GiveBack;
                    }
                }
                Err(e) => {
                    match self
                        .failed("reserving a posting slot", Failure::Redis(e))
                        .await
                    {
                        Some(o) => return o,
                        None => continue,
                    }
                }
            }
            match self.p().claims.acquire(id, &holder).await {
                Ok(Claim::Acquired) => {}
                Ok(Claim::Busy) => {
                    debug!("another worker is posting this ticket; waiting");
                    if !self.pause(BUSY_POLL, false).await {
                        return Outcome::GiveBack;
                    }
                    continue;
                }
                Ok(Claim::Posted { channel, ts }) => {
                    info!(%channel, %ts, "a message was posted but not recorded; recording it");
                    return self.record_posted(id, &Posted { channel, ts }).await;
                }
                Err(e) => match self.failed("claiming the post", Failure::Redis(e)).await {
                    Some(o) => return o,
                    None => continue,
                },
            }
            // No second read under the claim: a holder that posted before us left "posted" in
            // the claim (kept for a day), which `acquire` reported above; and if even that was
            // lost, recording keeps the first message and deletes ours.
            let msg = message::approval_request(&t);
            let slack = self.p().slack.clone();
            let result = self
                .slack(
                    "chat.postMessage",
                    slack.post_message(&channel, &msg.text, &msg.blocks),
                )
                .await;
            match result {
                Ok(posted) => {
                    if let Err(e) = self
                        .p()
                        .claims
                        .mark_posted(id, &posted.channel, &posted.ts)
                        .await
                    {
                        warn!(error = %chain(&e), "could not keep the posted ts in Redis");
                    }
                    info!(channel = %posted.channel, ts = %posted.ts, "approval request posted");
                    return self.record_posted(id, &posted).await;
                }
                Err(e) => {
                    let _ = self.p().claims.release(id, &holder).await;
                    if let Some(o) = self.failed("chat.postMessage", Failure::Slack(e)).await {
                        return o;
                    }
                }
            }
        }
    }

    /// Stores the posted message on the ticket; if another message won, deletes ours.
    async fn record_posted(&mut self, id: TicketId, posted: &Posted) -> Outcome {
        let mut batched = self
            .ctx
            .records
            .submit((id, posted.channel.clone(), posted.ts.clone()))
            .await
            .map(Ok::<_, sqlx::Error>);
        loop {
            let recorded = match batched.take() {
                Some(r) => r,
                None => {
                    ticket::record_message(&self.p().pool, id, &posted.channel, &posted.ts).await
                }
            };
            match recorded {
                Ok(Some(row)) => {
                    if row.message_ts.as_deref() != Some(posted.ts.as_str()) {
                        warn!(ours = %posted.ts, kept = ?row.message_ts, "another message was recorded first; deleting ours");
                        self.p().metrics.duplicates_removed.inc();
                        let slack = self.p().slack.clone();
                        if let Err(e) = self
                            .slack("chat.delete", slack.delete(&posted.channel, &posted.ts))
                            .await
                        {
                            warn!(error = %e, "could not delete the duplicate message");
                        }
                    }
                    return Outcome::Done;
                }
                Ok(None) => return Outcome::DeadLetter("the ticket vanished after posting".into()),
                Err(e) => {
                    if let Some(o) = self.failed("recording the message", Failure::Db(e)).await {
                        return o;
                    }
                }
            }
        }
    }

    /// Shows the outcome on the approval message and removes its buttons.
    async fn ticket_closed(&mut self, id: TicketId) -> Outcome {
        let mut poll = Duration::from_millis(50);
        loop {
            let t = match self.load(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Outcome::DeadLetter("no such ticket".into()),
                Err(o) => return o,
            };
            if t.status.is_pending() {
                warn!("the ticket is still pending; nothing to show yet");
                return Outcome::Done;
            }
            if let (Some(channel), Some(ts)) = (t.message_channel.clone(), t.message_ts.clone()) {
                let msg = message::closed(&t);
                let slack = self.p().slack.clone();
                let result = self
                    .slack(
                        "chat.update",
                        slack.update(&channel, &ts, &msg.text, &msg.blocks),
                    )
                    .await;
                match result {
                    Ok(_) => {
                        info!(status = %t.status, %channel, %ts, "approval message updated");
                        return Outcome::Done;
                    }
                    Err(e) => {
                        if let Some(o) = self.failed("chat.update", Failure::Slack(e)).await {
                            return o;
                        }
                        continue;
                    }
                }
            }
            if let Some(err) = &t.notify_error {
                info!(notify_error = %err, "the approval request was never posted; nothing to update");
                return Outcome::Done;
            }
            // A worker may have posted and crashed before recording: its claim has the ts.
            if let Ok(Some((channel, ts))) = self.p().claims.posted(id).await {
                if let Err(e) = ticket::record_message(&self.p().pool, id, &channel, &ts).await {
                    debug!(error = %chain(&e), "could not record the claimed message yet");
                }
                continue;
            }
            if self.started.elapsed() >= self.p().tuning.update_wait {
                return Outcome::DeadLetter(
                    "the approval request was never posted, so there is no message to update"
                        .into(),
                );
            }
            debug!(
                wait_ms = poll.as_millis() as u64,
                "message not posted yet; waiting"
            );
            if !self.pause(poll, true).await {
                return Outcome::GiveBack;
            }
            poll = (poll * 2).min(UPDATE_POLL_MAX);
        }
    }

    /// Tells a clicker, privately, why their click did not count.
    async fn refused_click(
        &mut self,
        id: Option<TicketId>,
        user: &str,
        channel: &str,
        refusal: &Refusal,
    ) -> Outcome {
        loop {
            let t = match id {
                Some(id) => match self.load(id).await {
                    Ok(t) => t,
                    Err(o) => return o,
                },
                None => None,
            };
            let msg = message::refusal(refusal, t.as_ref());
            let slack = self.p().slack.clone();
            let result = self
                .slack(
                    "chat.postEphemeral",
                    slack.post_ephemeral(channel, user, &msg.text, &msg.blocks),
                )
                .await;
            match result {
                Ok(()) => return Outcome::Done,
                Err(e) => {
                    if let Some(o) = self.failed("chat.postEphemeral", Failure::Slack(e)).await {
                        return o;
                    }
                }
            }
        }
    }
}
