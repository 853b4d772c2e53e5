//! The worker: reads jobs through the consumer group, runs each against Slack, and settles it on
//! the stream only once its effect is done (acknowledged, dead-lettered, or given back).

mod approval_request;
mod context;
mod job;
mod loops;
mod refused_click;
mod ticket_closed;

use std::collections::HashMap;
use std::sync::Arc;

use airlock_shared::TicketId;
use airlock_shared::batch::Batcher;
use airlock_shared::ticket::{self, PostedMessage, Ticket};
use redis::RedisError;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use context::Ctx;
pub use context::Parts;
use loops::{claim_loop, own_pending_first, read_loop};

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The consumer group could not be created.
    #[error("creating the consumer group")]
    Group(#[source] RedisError),
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
        let records = Batcher::start(batch, move |posts: Vec<PostedMessage>| {
            let pool = pool.clone();
            async move {
                let rows: HashMap<TicketId, Ticket> = ticket::record_messages(&pool, &posts)
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                Ok::<_, sqlx::Error>(posts.iter().map(|p| rows.get(&p.ticket).cloned()).collect())
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
