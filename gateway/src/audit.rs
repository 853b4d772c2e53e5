//! Audit rows, written in batches off the request path.
//!
//! Calls never wait for the audit: rows go into a bounded queue, and a writer task inserts them
//! in batches. When Postgres is slow or down the queue fills, and further rows are dropped and
//! counted rather than slowing allowed calls.

use std::time::Duration;

use airlock_shared::audit::{AuditRecord, insert_batch};
use airlock_shared::db::Db;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

const BATCH: usize = 256;
const LINGER: Duration = Duration::from_millis(100);

/// Where handlers put audit rows.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditRecord>,
    metrics: Metrics,
}

impl AuditSink {
    /// Starts the writer; it ends once every sink clone is dropped and the queue is drained.
    pub fn start(pool: Db, capacity: usize, metrics: Metrics) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let writer = tokio::spawn(write_loop(pool, rx, metrics.clone()));
        (Self { tx, metrics }, writer)
    }

    /// Queues a row, or drops and counts it when the queue is full.
    pub fn record(&self, row: AuditRecord) {
        if self.tx.try_send(row).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }
}

async fn write_loop(pool: Db, mut rx: mpsc::Receiver<AuditRecord>, metrics: Metrics) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut backlog = false;
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        // Rows that come during the linger are taken afterwards, not one by one: a wake-up of
        // this task per call would cost every call a hop. A full batch means more are queued.
        if !backlog {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        backlog = batch.len() == BATCH;
        let mut attempt = 0;
        loop {
            match insert_batch(&pool, &batch).await {
                Ok(_) => break,
                Err(e) if attempt < 2 => {
                    attempt += 1;
                    tracing::warn!(error = %e, rows = batch.len(), attempt, "audit insert failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    metrics.audit_dropped.inc_by(batch.len() as u64);
                    tracing::error!(error = %e, rows = batch.len(), "audit rows dropped after retries");
                    break;
                }
            }
        }
        batch.clear();
    }
}
