//! Keeps this pod's held session locks alive: one task extends every lock that is due, so that
//! taking and releasing a lock spawns, arms and cancels nothing (a queued call's turn is on the
//! critical path of every call behind it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use airlock_shared::RedisConn;
use futures::StreamExt;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How often the task looks for locks due an extension; well inside the shortest lease (a
/// handed-over lock's two seconds).
const TICK: Duration = Duration::from_millis(250);
/// Extensions in flight at once (they share the pod's multiplexed Redis connection).
const IN_FLIGHT: usize = 64;

/// One held lock: its key, the value that names its holder, and when it is next due.
struct Held {
    key: Arc<str>,
    value: Arc<str>,
    due: Instant,
}

type Table = Mutex<HashMap<u64, Held>>;

/// The pod's held locks, by a number each holder got when it took its lock.
#[derive(Clone)]
pub struct Extender {
    table: Arc<Table>,
    next: Arc<std::sync::atomic::AtomicU64>,
    every: Duration,
}

impl Extender {
    /// Extends each lock by `ttl` every third of it, with `script`, on `conn`; the task ends when
    /// the last clone of the extender is gone.
    pub fn start(
        conn: RedisConn,
        script: Arc<redis::Script>,
        ttl: Duration,
        metrics: Metrics,
    ) -> Self {
        let table: Arc<Table> = Arc::default();
        let ext = Self {
            table: table.clone(),
            next: Arc::default(),
            every: ttl / 3,
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            handle.spawn(run(Arc::downgrade(&table), conn, script, ttl_ms, metrics));
        }
        ext
    }

    /// Registers a lock just taken; its first extension is due after `first` (capped at a
    /// third of the TTL). Returns the number to [`Extender::forget`] it by.
    pub fn hold(&self, key: &str, value: &str, first: Duration) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let held = Held {
            key: key.into(),
            value: value.into(),
            due: Instant::now() + first.min(self.every),
        };
        if let Ok(mut t) = self.table.lock() {
            t.insert(id, held);
        }
        id
    }

    /// Stops extending lock `id` (released, or lost).
    pub fn forget(&self, id: u64) {
        if let Ok(mut t) = self.table.lock() {
            t.remove(&id);
        }
    }

    fn due(table: &Table, now: Instant) -> Vec<(u64, Arc<str>, Arc<str>)> {
        table.lock().map_or_else(
            |_| Vec::new(),
            |t| {
                t.iter()
                    .filter(|(_, h)| h.due <= now)
                    .map(|(id, h)| (*id, h.key.clone(), h.value.clone()))
                    .collect()
            },
        )
    }
}

async fn run(
    table: Weak<Table>,
    conn: RedisConn,
    script: Arc<redis::Script>,
    ttl_ms: u64,
    metrics: Metrics,
) {
    let every = Duration::from_millis(ttl_ms / 3);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(table) = table.upgrade() else { return };
        let due = Extender::due(&table, Instant::now());
        let results: Vec<_> = futures::stream::iter(due)
            .map(|(id, key, value)| {
                let (mut conn, script) = (conn.clone(), script.clone());
                async move {
                    let res: Result<i64, _> = script
                        .key(&*key)
                        .arg(&*value)
                        .arg(ttl_ms)
                        .invoke_async(&mut conn)
                        .await;
                    (id, key, res)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        let Ok(mut t) = table.lock() else { continue };
        for (id, key, res) in results {
            match res {
                Ok(1) => {
                    if let Some(h) = t.get_mut(&id) {
                        h.due = Instant::now() + every;
                    }
                }
                Ok(_) => {
                    // Only a holder still registered lost it; one released meanwhile did not.
                    if t.remove(&id).is_some() {
                        metrics.lock_lost.inc();
                        tracing::warn!(lock = %key, "session lock lost while held (taken over by a retry, or expired)");
                    }
                }
                // Still due: tried again at the next tick.
                Err(e) => {
                    tracing::warn!(lock = %key, error = %e, "could not extend session lock; will retry");
                }
            }
        }
    }
}
