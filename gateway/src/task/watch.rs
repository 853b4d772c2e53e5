//! The pending tasks this instance made, waited on without a parked future each: the hub tells
//! one loop of their decisions, and one queue holds their expiries. A pending task costs a map
//! entry and a queue slot here, and its row in Postgres.

use std::collections::HashMap;
use std::sync::Arc;

use airlock_shared::TicketId;
use airlock_shared::ticket::Settled;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use super::Tasks;
use crate::approval::hold::Waited;

/// A task to wait on: its ticket, what the ticket's claim checks, and when it expires.
pub struct Pending {
    pub ticket: TicketId,
    pub rule: String,
    pub fingerprint: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

struct Entry {
    rule: String,
    fingerprint: String,
    expiry: delay_queue::Key,
}

/// Where new pending tasks are handed to the watch loop.
pub type Watcher = mpsc::UnboundedSender<Pending>;

/// The watcher, and the receiving end that [`watch_loop`] takes.
pub fn channel() -> (Watcher, mpsc::UnboundedReceiver<Pending>) {
    mpsc::unbounded_channel()
}

/// Waits on every pending task of this instance until `stop`; each decision or expiry is
/// concluded in a task of its own. Stopping leaves the tickets pending: a poll or another
/// replica's sweeper takes an approved one over.
pub async fn watch_loop(
    tasks: Arc<Tasks>,
    mut new: mpsc::UnboundedReceiver<Pending>,
    stop: CancellationToken,
) {
    let (settled_tx, mut settled) = mpsc::unbounded_channel::<Settled>();
    let mut entries: HashMap<TicketId, Entry> = HashMap::new();
    let mut expiries: DelayQueue<TicketId> = DelayQueue::new();
    loop {
        tokio::select! {
            p = new.recv() => {
                let Some(p) = p else { return };
                let left = (p.expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
                let expiry = expiries.insert(p.ticket, left);
                let entry = Entry { rule: p.rule, fingerprint: p.fingerprint, expiry };
                entries.insert(p.ticket, entry);
                // Registered after the entry, so the decision always finds it.
                tasks.holds.hub.watch(p.ticket, &settled_tx);
            }
            Some(s) = settled.recv() => {
                if let Some(e) = entries.remove(&s.id) {
                    expiries.try_remove(&e.expiry);
                    conclude(&tasks, s.id, e, Waited::Settled(s));
                }
            }
            Some(expired) = expiries.next(), if !expiries.is_empty() => {
                let id = expired.into_inner();
                if let Some(e) = entries.remove(&id) {
                    conclude(&tasks, id, e, Waited::Deadline);
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Acts on how a task's wait ended, as a held call would: runs an approved call once, or
/// marks the task ended.
fn conclude(tasks: &Arc<Tasks>, id: TicketId, e: Entry, waited: Waited) {
    let me = tasks.clone();
    tokio::spawn(async move {
        match me.holds.conclude(id, &e.rule, &e.fingerprint, waited).await {
            Ok(cleared) => me.execute(&cleared.ticket).await,
            Err(err) => {
                tracing::info!(ticket = %id, outcome = err.outcome(), "task ended without running");
                me.note_settled(Some(id)).await;
            }
        }
    });
}
