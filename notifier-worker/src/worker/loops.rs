//! The loops that hand jobs to tasks: new entries, our own pending ones after a restart, and
//! jobs taken over from stalled replicas.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::NotifyJob;
use airlock_shared::telemetry::chain;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use crate::retry::backoff_now;
use crate::stream::Delivery;

use super::context::Ctx;
use super::job::JobRun;

/// Most jobs read in one `XREADGROUP`.
const READ_BATCH: usize = 64;

/// Waits for at least one free slot, then takes up to `max` of them.
pub(super) async fn take_slots(
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

pub(super) async fn read_loop(ctx: &Arc<Ctx>, tasks: &TaskTracker, shutdown: &CancellationToken) {
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
pub(super) async fn own_pending_first(
    ctx: &Arc<Ctx>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
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
pub(super) async fn claim_loop(ctx: Arc<Ctx>, tasks: TaskTracker, shutdown: CancellationToken) {
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

pub(super) fn spawn_job(
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
    // The job joins the trace of whoever enqueued it (the held call, the click); the entry is
    // read a second time for that only while spans are exported.
    if airlock_shared::telemetry::exporting() {
        airlock_shared::job::trace_of(&d.raw).parent(&span);
    }
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
