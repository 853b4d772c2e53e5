//! The hub's subscription in Redis Cluster: decisions on the sharded channel (`SSUBSCRIBE`, only
//! the shard owning its slot carries them), lock releases on the classic channel (a script's
//! `PUBLISH` reaches every node), both through one RESP3 cluster connection.
//!
//! The redis crate re-subscribes after a reconnect or a topology change. A shard channel the
//! server drops (its slot moved, e.g. a failover) is subscribed again here. After any gap the
//! hub checks every waiter's ticket, and its Postgres poll covers whatever is still missed.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::signal;
use redis::cluster::ClusterClientBuilder;
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
    Cluster(ClusterClientBuilder),
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

/// Subscribes through the cluster until `stop`; reconnects with backoff if the cluster cannot be
/// reached at all.
pub(super) async fn cluster_loop(
    builder: ClusterClientBuilder,
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
    let mut backoff = Duration::from_millis(50);
    let mut conn = loop {
        let attempt = async {
            let mut conn = client.get_async_connection().await?;
            conn.subscribe(feed.lock_wakeups.channel()).await?;
            conn.ssubscribe(&feed.decisions).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        tokio::select! {
            r = attempt => match r {
                Ok(conn) => break conn,
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to decisions; retrying"),
            },
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    };
    // Anything decided before we listened is found by one check of all.
    let _ = feed.inner.kick.send(Kick::All);
    loop {
        let push = tokio::select! {
            p = rx.recv() => p,
            () = stop.cancelled() => return,
        };
        let Some(push) = push else { return };
        handle(&feed, &mut conn, push, &stop).await;
    }
}

async fn handle(
    feed: &Feed,
    conn: &mut ClusterConnection,
    push: PushInfo,
    stop: &CancellationToken,
) {
    let channel = push.data.first().and_then(bytes);
    match push.kind {
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
        // The server dropped the shard channel (its slot moved): subscribe where it lives now.
        PushKind::SUnsubscribe if channel == Some(feed.decisions.as_bytes()) => {
            tracing::warn!("decision channel moved; subscribing again");
            feed.metrics.pubsub_reconnects.inc();
            resubscribe(feed, conn, stop).await;
        }
        PushKind::Disconnection => {
            // The crate reconnects and re-subscribes; what was sent meanwhile is in Postgres.
            feed.metrics.pubsub_reconnects.inc();
            let _ = feed.inner.kick.send(Kick::All);
        }
        _ => {}
    }
}

/// Subscribes to the decisions channel again, retrying while the cluster settles (pushes wait
/// in the channel meanwhile; the Postgres poll keeps deciding held calls).
async fn resubscribe(feed: &Feed, conn: &mut ClusterConnection, stop: &CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match conn.ssubscribe(&feed.decisions).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to decisions again; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    let _ = feed.inner.kick.send(Kick::All);
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}
