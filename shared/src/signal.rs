//! The pub/sub signal that wakes gateways once a decision is committed.
//!
//! A signal is only a hint: gateways re-read the ticket row before acting, so a lost, late or
//! duplicated signal can delay a held call but never change its outcome.
//!
//! On a single node signals go out with `PUBLISH` on [`Keys::decisions_channel`]. In Redis
//! Cluster a classic `PUBLISH` is copied to every node, so signals use `SPUBLISH` on
//! [`Keys::sharded_decisions_channel`] instead: only the shard that owns its slot carries it.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::ids::TicketId;
use crate::job::NotifyJob;
use crate::keys::{JOB_FIELD, Keys};
use crate::redis_conn::RedisConn;
use crate::ticket::TicketStatus;

/// "This ticket changed; look at it."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSignal {
    pub ticket_id: TicketId,
    pub status: TicketStatus,
}

/// Publishes a signal on a single node; returns how many subscribers received it.
pub async fn publish<C: AsyncCommands>(
    conn: &mut C,
    keys: &Keys,
    signal: &DecisionSignal,
) -> Result<usize, redis::RedisError> {
    conn.publish(keys.decisions_channel(), body(signal)?).await
}

/// Publishes a signal on the sharded channel (Redis Cluster); returns how many subscribers of
/// that shard received it.
pub async fn spublish<C: AsyncCommands>(
    conn: &mut C,
    keys: &Keys,
    signal: &DecisionSignal,
) -> Result<usize, redis::RedisError> {
    conn.spublish(keys.sharded_decisions_channel(), body(signal)?)
        .await
}

fn body(signal: &DecisionSignal) -> Result<String, redis::RedisError> {
    serde_json::to_string(signal).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "signal serialisation",
            e.to_string(),
        ))
    })
}

/// Publishes a signal and enqueues a job in one round trip (signal first: waiting calls matter
/// more than the message update). In cluster mode both go to the one slot of the prefix's tag.
pub async fn publish_with_job(
    conn: &mut RedisConn,
    keys: &Keys,
    signal: &DecisionSignal,
    job: &NotifyJob,
) -> Result<(), redis::RedisError> {
    let ser = |e: serde_json::Error| {
        redis::RedisError::from((redis::ErrorKind::Client, "serialisation", e.to_string()))
    };
    let signal = serde_json::to_string(signal).map_err(ser)?;
    let job = crate::job::to_entry(job).map_err(ser)?;
    let mut pipe = redis::pipe();
    if conn.is_cluster() {
        pipe.spublish(keys.sharded_decisions_channel(), signal);
    } else {
        pipe.publish(keys.decisions_channel(), signal);
    }
    pipe.ignore()
        .xadd(keys.notify_stream(), "*", &[(JOB_FIELD, job)])
        .ignore()
        .query_async(conn)
        .await
}

/// Parses a signal from a pub/sub payload.
pub fn parse(payload: &[u8]) -> Option<DecisionSignal> {
    serde_json::from_slice(payload).ok()
}
