//! The task sweeper, in every replica: it runs approved tasks nobody claimed (their creator
//! died), fails tasks whose call was claimed by an instance that died mid-call, ends tasks whose
//! ticket was denied, expired or cancelled, and deletes ended tasks past their retention.

use std::sync::Arc;

use airlock_shared::ticket::task;
use airlock_shared::ticket::{self as tickets};
use tokio_util::sync::CancellationToken;

use super::Tasks;
use super::run::lost_error;

/// Approved tasks taken over per pass, at most.
const TAKEOVER_BATCH: i64 = 100;

/// Sweeps every `settings.sweep_interval` until `stop`.
pub async fn sweep_loop(tasks: Arc<Tasks>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(tasks.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        tasks.sweep_once().await;
    }
}

impl Tasks {
    /// One pass of the sweeper.
    pub async fn sweep_once(self: &Arc<Self>) {
        let s = self.settings;
        match task::approved_unclaimed(&self.pool, s.takeover_after, TAKEOVER_BATCH).await {
            Ok(rows) => {
                for row in rows {
                    match tickets::get(&self.pool, row.ticket_id).await {
                        Ok(Some(t)) => super::run::spawn_take_over(self, t),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "task sweep: cannot read a ticket"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "task sweep: cannot list approved tasks"),
        }
        match task::fail_lost(&self.pool, s.lost_after, &lost_error()).await {
            Ok(lost) => {
                for e in lost {
                    tracing::warn!(task = %e.task_id, "task failed: the instance running its call stopped");
                    self.count_ended(&e, "failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "task sweep: cannot fail lost tasks"),
        }
        self.note_settled(None).await;
        match task::purge(&self.pool, s.retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "ended tasks past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "task sweep: cannot delete old tasks"),
        }
    }
}
