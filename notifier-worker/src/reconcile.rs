//! The reconciler: Postgres, not the job stream, is the truth for what each Slack message must
//! show. Every pass re-queues the job of a ticket whose approval request was never posted, or
//! whose message still shows an earlier state, so a job lost with Redis's data is done anyway.
//!
//! Every replica runs the loop; a Redis lease picks one per interval. The lease only saves
//! work: if Redis was just wiped (lease gone) two passes may overlap, and they still take
//! disjoint tickets, because taking one marks its row under a row lock (`SKIP LOCKED`). A repeat
//! job is harmless anyway: the notifier posts once per ticket and an update is idempotent.

use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::db::Db;
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, Reconcile};
use airlock_shared::{Keys, NotifyJob, TicketId, job, lease};
use redis::RedisError;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::metrics::Metrics;

/// Why a pass stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Redis refused the lease or a job.
    #[error("redis")]
    Redis(#[from] RedisError),
    /// Postgres refused a query.
    #[error("postgres")]
    Db(#[from] sqlx::Error),
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Another replica holds the lease for this interval.
    Skipped,
    /// This replica ran the pass and re-queued these jobs.
    Ran { posts: usize, updates: usize },
}

/// One replica's reconciler.
#[derive(Clone)]
pub struct Reconciler {
    pool: Db,
    keys: Keys,
    redis: RedisConn,
    metrics: Metrics,
    every: Duration,
    bounds: Reconcile,
    owner: String,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("every", &self.every)
            .field("bounds", &self.bounds)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// What a reconciler is built from.
pub struct ReconcilerParts {
    pub pool: Db,
    pub keys: Keys,
    pub redis: RedisConn,
    pub metrics: Metrics,
    /// Pass interval, which is also the lease's time to live.
    pub every: Duration,
    pub bounds: Reconcile,
    /// This replica's name (the lease owner is it plus a random suffix).
    pub replica: String,
}

impl Reconciler {
    /// A reconciler over `parts`.
    pub fn new(parts: ReconcilerParts) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            owner: format!("{}/{}", parts.replica, &suffix[..8]),
            pool: parts.pool,
            keys: parts.keys,
            redis: parts.redis,
            metrics: parts.metrics,
            every: parts.every,
            bounds: parts.bounds,
        }
    }

    /// Runs a pass every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A pass never outlives its lease by much; the row marks keep an overlap harmless.
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(self.every, self.pass()) => r,
            };
            let result = match pass {
                Ok(Ok(Pass::Skipped)) => continue,
                Ok(Ok(Pass::Ran { .. })) => "ok",
                Ok(Err(e)) => {
                    warn!(error = %chain(&e), "reconciler pass failed; the next one retries");
                    "error"
                }
                Err(_) => {
                    warn!("reconciler pass ran past its interval; the next one goes on");
                    "deadline"
                }
            };
            self.metrics
                .reconcile_passes
                .with_label_values(&[result])
                .inc();
        }
    }

    /// One pass: take the lease for an interval, then re-queue what Postgres says is missing.
    pub async fn pass(&self) -> Result<Pass, ReconcileError> {
        let mut conn = self.redis.clone();
        let key = self.keys.reconcile_lease();
        // Not released: the lease lapses after one interval, so the deployment runs one pass per
        // interval whatever its replica count.
        if !lease::acquire(&mut conn, &key, &self.owner, self.every).await? {
            return Ok(Pass::Skipped);
        }
        let span = info_span!("reconcile", owner = %self.owner);
        async {
            let unposted = ticket::take_unposted(&self.pool, self.bounds).await?;
            let posts = self
                .requeue(&unposted, |ticket_id| NotifyJob::ApprovalRequest {
                    ticket_id,
                })
                .await?;
            let stale = ticket::take_stale(&self.pool, self.bounds).await?;
            let updates = self
                .requeue(&stale, |ticket_id| NotifyJob::TicketClosed { ticket_id })
                .await?;
            if posts + updates > 0 {
                info!(posts, updates, "re-queued jobs that Redis no longer had");
            } else {
                debug!("every message matches its ticket");
            }
            Ok(Pass::Ran { posts, updates })
        }
        .instrument(span)
        .await
    }

    /// Queues `job(id)` for each ticket; on a Redis error, unmarks the rest for the next pass.
    async fn requeue(
        &self,
        ids: &[TicketId],
        job: impl Fn(TicketId) -> NotifyJob,
    ) -> Result<usize, ReconcileError> {
        let mut conn = self.redis.clone();
        for (done, id) in ids.iter().enumerate() {
            let j = job(*id);
            if let Err(e) = job::enqueue(&mut conn, &self.keys, &j).await {
                if let Err(db) = ticket::forget_requeue(&self.pool, &ids[done..]).await {
                    debug!(error = %chain(&db), "could not unmark; they wait out the retry");
                }
                return Err(e.into());
            }
            debug!(ticket = %id, kind = j.kind(), "job re-queued");
            self.metrics.requeued.with_label_values(&[j.kind()]).inc();
        }
        Ok(ids.len())
    }
}
