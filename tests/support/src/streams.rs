//! Reading a test's Redis streams: the notification jobs and the dead letters.

use std::collections::HashMap;

use airlock_shared::NotifyJob;
use airlock_shared::keys::JOB_FIELD;

use crate::TestRedis;

/// Every entry of `stream`, oldest first, as field maps.
pub async fn entries(redis: &TestRedis, stream: &str) -> Vec<HashMap<String, String>> {
    read_entries(&mut redis.conn().await, stream).await
}

/// Every entry of `stream` on `conn` (one node or a cluster), oldest first, as field maps.
pub async fn read_entries<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            e.map
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        redis::from_redis_value::<String>(v).expect("a string field"),
                    )
                })
                .collect()
        })
        .collect()
}

/// The jobs on the test's notification stream, oldest first.
pub async fn notify_jobs(redis: &TestRedis) -> Vec<NotifyJob> {
    entries(redis, &redis.keys.notify_stream())
        .await
        .into_iter()
        .map(|e| serde_json::from_str(&e[JOB_FIELD]).expect("job json"))
        .collect()
}

/// The entries of the test's dead-letter stream, oldest first.
pub async fn dead_letters(redis: &TestRedis) -> Vec<HashMap<String, String>> {
    entries(redis, &redis.keys.dead_letter_stream()).await
}
