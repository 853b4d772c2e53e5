//! The pod-wide decision hub: which held calls wait on which tickets, and when to look.
//!
//! Waiters never trust a signal's payload. The pod has one pub/sub subscription; a signal, a
//! new waiter, or a periodic tick marks tickets "dirty", and one batched query reads the settled
//! state of every dirty ticket. So a decision committed before the wait began is found by the
//! first check, and a lost signal is found by the next tick.

mod cluster;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// `batch` means a JSON-RPC batch in the gateway; this one coalesces queries.
use airlock_shared::batch::Batcher as QueryCoalescer;
use airlock_shared::db::Db;
use airlock_shared::ticket::{self, Settled, Ticket};
use airlock_shared::{Keys, TicketId, signal};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::lock::LockWakeups;
use crate::metrics::Metrics;

pub use cluster::SubscribeTo;

const QUERY_CHUNK: usize = 5_000;

enum Kick {
    One(TicketId),
    All,
}

struct Waiter {
    id: u64,
    tx: Tx,
}

/// Where a waiter learns of the decision.
enum Tx {
    /// A held call's own channel.
    Once(oneshot::Sender<Settled>),
    /// A loop that waits on many tickets at once (pending tasks), with no future per ticket.
    Shared(mpsc::UnboundedSender<Settled>),
}

struct Inner {
    waiters: Mutex<HashMap<TicketId, Vec<Waiter>>>,
    kick: mpsc::UnboundedSender<Kick>,
    /// Claims of approved tickets, each with the fingerprint of the call that would run; claims
    /// that land together share one statement.
    claims: QueryCoalescer<(TicketId, String), Option<Ticket>>,
    next: AtomicU64,
}

impl Inner {
    fn registered(&self) -> Vec<TicketId> {
        self.waiters
            .lock()
            .map(|w| w.keys().copied().collect())
            .unwrap_or_default()
    }

    fn is_registered(&self, id: &TicketId) -> bool {
        self.waiters.lock().is_ok_and(|w| w.contains_key(id))
    }

    fn deliver(&self, settled: Settled) {
        let taken = self
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&settled.id));
        for w in taken.into_iter().flatten() {
            let _ = match w.tx {
                Tx::Once(tx) => tx.send(settled.clone()).ok(),
                Tx::Shared(tx) => tx.send(settled.clone()).ok(),
            };
        }
    }
}

/// The pod's decision hub: one subscription and one batched checker for all waiters.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A waiter's place in the hub; leaving it (drop) unregisters.
pub struct Registration {
    inner: Arc<Inner>,
    pub(super) ticket: TicketId,
    id: u64,
    pub(super) rx: Option<oneshot::Receiver<Settled>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut w) = self.inner.waiters.lock()
            && let Some(list) = w.get_mut(&self.ticket)
        {
            list.retain(|x| x.id != self.id);
            if list.is_empty() {
                w.remove(&self.ticket);
            }
        }
    }
}

impl Hub {
    /// Starts the subscriber and the checker; both stop when `stop` is cancelled. The one
    /// subscription also carries session-lock releases, for `lock_wakeups`.
    pub fn start(
        pool: Db,
        redis: impl Into<SubscribeTo>,
        keys: &Keys,
        poll_interval: Duration,
        metrics: Metrics,
        lock_wakeups: LockWakeups,
        stop: CancellationToken,
    ) -> Self {
        let (kick, kick_rx) = mpsc::unbounded_channel();
        let claim_pool = pool.clone();
        let claims = QueryCoalescer::start(QUERY_CHUNK, move |calls: Vec<(TicketId, String)>| {
            let pool = claim_pool.clone();
            async move {
                let mut won: HashMap<TicketId, Ticket> = ticket::claim_executions(&pool, &calls)
                    .await?
                    .into_iter()
                    .map(|t| (t.id, t))
                    .collect();
                // Two local waiters on one ticket (a reattached retry): only the first wins.
                Ok::<_, sqlx::Error>(calls.iter().map(|(id, _)| won.remove(id)).collect())
            }
        });
        let inner = Arc::new(Inner {
            waiters: Mutex::default(),
            kick,
            claims,
            next: AtomicU64::new(0),
        });
        tokio::spawn(check_loop(
            inner.clone(),
            pool,
            kick_rx,
            poll_interval,
            metrics.clone(),
            stop.clone(),
        ));
        match redis.into() {
            SubscribeTo::Single(client) => tokio::spawn(subscribe_loop(
                inner.clone(),
                client,
                keys.decisions_channel(),
                lock_wakeups,
                metrics,
                stop,
            )),
            SubscribeTo::Cluster(builder) => {
                let feed = cluster::Feed {
                    inner: inner.clone(),
                    decisions: keys.sharded_decisions_channel(),
                    lock_wakeups,
                    metrics,
                };
                tokio::spawn(cluster::cluster_loop(builder, feed, stop))
            }
        };
        Self { inner }
    }

    /// Registers a waiter for `ticket` and schedules its first check.
    pub fn register(&self, ticket: TicketId) -> Registration {
        let (tx, rx) = oneshot::channel();
        let id = self.add(ticket, Tx::Once(tx));
        Registration {
            inner: self.inner.clone(),
            ticket,
            id,
            rx: Some(rx),
        }
    }

    /// Tells `to` once `ticket` leaves `pending`; the watch lasts until then.
    pub fn watch(&self, ticket: TicketId, to: &mpsc::UnboundedSender<Settled>) {
        self.add(ticket, Tx::Shared(to.clone()));
    }

    /// Adds a waiter and schedules its first check (a decision made before it is found).
    fn add(&self, ticket: TicketId, tx: Tx) -> u64 {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.inner.waiters.lock() {
            w.entry(ticket).or_default().push(Waiter { id, tx });
        }
        let _ = self.inner.kick.send(Kick::One(ticket));
        id
    }

    /// Waits until `ticket` leaves `pending`, for at most `timeout` (tools and tests).
    pub async fn wait_settled(&self, ticket: TicketId, timeout: Duration) -> Option<Settled> {
        let mut reg = self.register(ticket);
        let rx = reg.rx.take()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }

    /// Claims an approved ticket for its single execution; `Ok(None)` if someone else did.
    ///
    /// Claims that arrive together share one query, so thousands of calls approved at once
    /// resume without thousands of round trips.
    pub async fn claim(
        &self,
        pool: &Db,
        ticket: TicketId,
        fingerprint: &str,
    ) -> Result<Option<Ticket>, sqlx::Error> {
        let call = (ticket, fingerprint.to_owned());
        if let Some(claimed) = self.inner.claims.submit(call).await {
            return Ok(claimed);
        }
        // The batch failed: claim alone, and report our own error.
        ticket::claim_execution(pool, ticket, fingerprint).await
    }

    /// How many waiters of this pod wait on `ticket`.
    pub fn local_waiters(&self, ticket: TicketId) -> usize {
        self.inner
            .waiters
            .lock()
            .map(|w| w.get(&ticket).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

async fn check_loop(
    inner: Arc<Inner>,
    pool: Db,
    mut kicks: mpsc::UnboundedReceiver<Kick>,
    poll_interval: Duration,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut dirty: HashSet<TicketId> = HashSet::new();
        let mut all = false;
        let mut from_poll = false;
        tokio::select! {
            k = kicks.recv() => match k {
                Some(Kick::One(id)) => { dirty.insert(id); }
                Some(Kick::All) => all = true,
                None => return,
            },
            _ = tick.tick() => { all = true; from_poll = true; }
            () = stop.cancelled() => return,
        }
        // Coalesce whatever else is already queued into the same query.
        while let Ok(k) = kicks.try_recv() {
            match k {
                Kick::One(id) => {
                    dirty.insert(id);
                }
                Kick::All => all = true,
            }
        }
        let ids: Vec<TicketId> = if all {
            inner.registered()
        } else {
            dirty
                .into_iter()
                .filter(|id| inner.is_registered(id))
                .collect()
        };
        for chunk in ids.chunks(QUERY_CHUNK) {
            match ticket::settled(&pool, chunk).await {
                Ok(rows) => {
                    if from_poll {
                        metrics.signal_lost.inc_by(rows.len() as u64);
                    }
                    for s in rows {
                        inner.deliver(s);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "decision check failed; retrying on the next tick");
                    break;
                }
            }
        }
    }
}

async fn subscribe_loop(
    inner: Arc<Inner>,
    client: redis::Client,
    channel: String,
    lock_wakeups: LockWakeups,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let mut first = true;
    loop {
        let attempt = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&[channel.as_str(), lock_wakeups.channel()])
                .await?;
            Ok::<_, redis::RedisError>(ps)
        };
        let ps = tokio::select! {
            r = attempt => r,
            () = stop.cancelled() => return,
        };
        match ps {
            Ok(mut ps) => {
                backoff = Duration::from_millis(50);
                if !first {
                    metrics.pubsub_reconnects.inc();
                }
                first = false;
                // Anything decided while we were not listening is found by one check of all.
                let _ = inner.kick.send(Kick::All);
                let mut messages = ps.on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(msg) if msg.get_channel_name() == lock_wakeups.channel() => {
                                lock_wakeups.wake(msg.get_payload_bytes());
                            }
                            Some(msg) => {
                                if let Some(sig) = signal::parse(msg.get_payload_bytes())
                                    && inner.is_registered(&sig.ticket_id)
                                {
                                    let _ = inner.kick.send(Kick::One(sig.ticket_id));
                                }
                            }
                            None => break,
                        },
                        () = stop.cancelled() => return,
                    }
                }
                tracing::warn!("decision subscription lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to decisions; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
