//! The hub's subscription in Redis Cluster: decisions on the sharded channel (`SSUBSCRIBE`, only
//! the shard owning its slot carries them), lock releases on the classic channel (a script's
//! `PUBLISH` reaches every node), both through one RESP3 cluster connection.
//!
//! The redis crate re-subscribes after a reconnect. When the server drops the shard channel (its
//! slot moved, e.g. a failover), the hub connects again with a fresh view of the cluster and
//! subscribes where the slot lives now: a re-subscription on the old connection would go, by its
//! stale slot map, to the demoted node, which (on Redis 7.0 here) confirmed it and delivered
//! nothing. After any gap the hub checks every waiter's ticket, and its Postgres poll covers
//! whatever is still missed.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::signal;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Inner, Kick};
use crate::lock::LockWakeups;
use crate::metrics::Metrics;

/// Where the hub's subscription lives.
pub enum SubscribeTo {
    /// One node: classic `SUBSCRIBE` on a dedicated pub/sub connection.
    Single(redis::Client),
    /// Redis Cluster: a cluster connection (one connection per node) of its own.
    Cluster(Box<ClusterClientBuilder>),
}

impl From<redis::Client> for SubscribeTo {
    fn from(c: redis::Client) -> Self {
        Self::Single(c)
    }
}

/// The channels and the hub they feed.
pub(super) struct Feed {
    pub inner: Arc<Inner>,
    /// The sharded decisions channel.
    pub decisions: String,
    pub lock_wakeups: LockWakeups,
    pub metrics: Metrics,
}

/// How long a moved slot's new owner is given to be known by every node before the hub asks
/// for the slot map again.
const MOVE_SETTLE: Duration = Duration::from_millis(300);
/// How long a fresh subscription's own probe may take to come back before the hub concludes it
/// landed on a node that does not deliver, and subscribes again.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// What one push meant for the subscription.
enum Seen {
    Fine,
    /// The server dropped the decisions channel (its slot moved).
    Moved,
    /// Our own probe came back: the subscription delivers.
    Probe,
}

/// Subscribes through the cluster until `stop`: connects (with backoff while the cluster cannot
/// be reached), listens, and connects again whenever the decisions channel moves.
pub(super) async fn cluster_loop(
    builder: Box<ClusterClientBuilder>,
    feed: Feed,
    stop: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
    let client = match builder
        .use_protocol(ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "invalid cluster configuration; decisions come from polling only");
            return;
        }
    };
    let mut first = true;
    loop {
        let Some(mut conn) = connect(&client, &feed, &stop).await else {
            return;
        };
        // A probe on the channel proves the subscription sits where publishes arrive; the
        // payload is no signal, so other pods ignore it.
        let probe = format!("probe {}", uuid::Uuid::new_v4().simple());
        let _ =
            redis::AsyncCommands::spublish::<_, _, usize>(&mut conn, &feed.decisions, &probe).await;
        let mut waiting = Some(tokio::time::Instant::now() + PROBE_WAIT);
        if !first {
            feed.metrics.pubsub_reconnects.inc();
        }
        first = false;
        // Anything decided before we listened is found by one check of all.
        let _ = feed.inner.kick.send(Kick::All);
        loop {
            let until = waiting.unwrap_or_else(tokio::time::Instant::now);
            let push = tokio::select! {
                p = rx.recv() => p,
                () = tokio::time::sleep_until(until), if waiting.is_some() => {
                    tracing::warn!("decision subscription does not deliver");
                    break;
                }
                () = stop.cancelled() => return,
            };
            let Some(push) = push else { return };
            match handle(&feed, push, &probe) {
                Seen::Fine => {}
                Seen::Probe => waiting = None,
                Seen::Moved => break,
            }
        }
        // One connection per node at a time: the old one goes before the new one comes.
        drop(conn);
        tracing::warn!("subscribing to decisions where the channel lives now");
        tokio::select! {
            () = tokio::time::sleep(MOVE_SETTLE) => {}
            () = stop.cancelled() => return,
        }
        // Pushes of the old connection are stale; the check of all covers their signals.
        while rx.try_recv().is_ok() {}
    }
}

/// A cluster connection subscribed to both channels; `None` once `stop` is cancelled.
async fn connect(
    client: &ClusterClient,
    feed: &Feed,
    stop: &CancellationToken,
) -> Option<ClusterConnection> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let mut conn = client.get_async_connection().await?;
            conn.subscribe(feed.lock_wakeups.channel()).await?;
            conn.ssubscribe(&feed.decisions).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        tokio::select! {
            r = attempt => match r {
                Ok(conn) => return Some(conn),
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to decisions; retrying"),
            },
            () = stop.cancelled() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Acts on one push.
fn handle(feed: &Feed, push: PushInfo, probe: &str) -> Seen {
    let channel = push.data.first().and_then(bytes);
    match push.kind {
        PushKind::SMessage if push.data.get(1).and_then(bytes) == Some(probe.as_bytes()) => {
            return Seen::Probe;
        }
        PushKind::SMessage => {
            if let Some(sig) = push.data.get(1).and_then(bytes).and_then(signal::parse)
                && feed.inner.is_registered(&sig.ticket_id)
            {
                let _ = feed.inner.kick.send(Kick::One(sig.ticket_id));
            }
        }
        PushKind::Message if channel == Some(feed.lock_wakeups.channel().as_bytes()) => {
            if let Some(payload) = push.data.get(1).and_then(bytes) {
                feed.lock_wakeups.wake(payload);
            }
        }
        PushKind::SUnsubscribe if channel == Some(feed.decisions.as_bytes()) => return Seen::Moved,
        PushKind::Disconnection => {
            // The crate reconnects and re-subscribes; what was sent meanwhile is in Postgres.
            feed.metrics.pubsub_reconnects.inc();
            let _ = feed.inner.kick.send(Kick::All);
        }
        _ => {}
    }
    Seen::Fine
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}
