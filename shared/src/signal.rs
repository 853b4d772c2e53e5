//! The pub/sub signal that wakes gateways once a decision is committed.
//!
//! A signal is only a hint: gateways re-read the ticket row before acting, so a lost, late or
//! duplicated signal can delay a held call but never change its outcome.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::ids::TicketId;
use crate::job::NotifyJob;
use crate::keys::{JOB_FIELD, Keys};
use crate::ticket::TicketStatus;

/// "This ticket changed; look at it."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionSignal {
    pub ticket_id: TicketId,
    pub status: TicketStatus,
}

/// Publishes a signal; returns how many subscribers received it.
pub async fn publish<C: AsyncCommands>(
    conn: &mut C,
    keys: &Keys,
    signal: &DecisionSignal,
) -> Result<usize, redis::RedisError> {
    let body = serde_json::to_string(signal).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "signal serialisation",
            e.to_string(),
        ))
    })?;
    conn.publish(keys.decisions_channel(), body).await
}

/// Publishes a signal and enqueues a job in one round trip (signal first: waiting calls matter
/// more than the message update).
pub async fn publish_with_job<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    signal: &DecisionSignal,
    job: &NotifyJob,
) -> Result<(), redis::RedisError> {
    let ser = |e: serde_json::Error| {
        redis::RedisError::from((redis::ErrorKind::Client, "serialisation", e.to_string()))
    };
    let signal = serde_json::to_string(signal).map_err(ser)?;
    let job = serde_json::to_string(job).map_err(ser)?;
    redis::pipe()
        .publish(keys.decisions_channel(), signal)
        .ignore()
        .xadd(keys.notify_stream(), "*", &[(JOB_FIELD, job)])
        .ignore()
        .query_async(conn)
        .await
}

/// Parses a signal from a pub/sub payload.
pub fn parse(payload: &[u8]) -> Option<DecisionSignal> {
    serde_json::from_slice(payload).ok()
}
