//! The notification stream as this replica sees it: read through the consumer group, take over
//! jobs a crashed replica left pending, acknowledge, dead-letter, or give a job back.

use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::keys::{JOB_FIELD, NOTIFIER_GROUP};
use airlock_shared::{Keys, NotifyJob};
use redis::{RedisError, Value};

/// Failed attempts so far, on a job we put back on the stream (absent means none).
pub const ATTEMPTS_FIELD: &str = "attempts";
/// Why a job was dead-lettered.
pub const ERROR_FIELD: &str = "error";
/// The entry id the job had on the notification stream.
pub const ORIGIN_FIELD: &str = "origin";
/// The consumer that gave up on it.
pub const CONSUMER_FIELD: &str = "consumer";

/// One job as read from the stream.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The stream entry id.
    pub entry_id: String,
    /// The job, or why its JSON could not be read.
    pub job: Result<NotifyJob, String>,
    /// The job's JSON as stored.
    pub raw: String,
    /// Failures recorded before this delivery: attempts carried on the entry, plus earlier
    /// deliveries of this entry that never finished (crashed or stalled consumers).
    pub prior_failures: u32,
}

impl Delivery {
    /// When the entry was added (ms since the epoch), from its id.
    pub fn enqueued_at_ms(&self) -> Option<u64> {
        self.entry_id.split('-').next()?.parse().ok()
    }
}

/// This replica's handle on the stream.
#[derive(Clone)]
pub struct JobStream {
    keys: Keys,
    consumer: String,
    /// For commands that answer at once.
    conn: RedisConn,
    /// For the blocking read only: Redis answers one connection's commands in order, so a
    /// blocked `XREADGROUP` would hold up every command behind it.
    read_conn: RedisConn,
}

impl std::fmt::Debug for JobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStream")
            .field("stream", &self.keys.notify_stream())
            .field("consumer", &self.consumer)
            .finish()
    }
}

impl JobStream {
    /// A handle for `consumer`; `read_conn` must allow responses longer than the read block.
    pub fn new(keys: Keys, consumer: String, conn: RedisConn, read_conn: RedisConn) -> Self {
        Self {
            keys,
            consumer,
            conn,
            read_conn,
        }
    }

    /// This replica's consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Creates the stream and the group if they do not exist yet.
    pub async fn ensure_group(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.notify_stream())
            .arg(NOTIFIER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// New jobs for this consumer, waiting up to `block` for the first.
    pub async fn read(&self, count: usize, block: Duration) -> Result<Vec<Delivery>, RedisError> {
        let mut conn = self.read_conn.clone();
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(NOTIFIER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.keys.notify_stream())
            .arg(">")
            .query_async(&mut conn)
            .await?;
        Ok(streams_of(reply))
    }

    /// This consumer's own pending jobs after entry `after` (`0` from the start): what a
    /// replica restarted under the same name took before it died, counted like a takeover.
    pub async fn own_pending(
        &self,
        after: &str,
        count: usize,
    ) -> Result<Vec<Delivery>, RedisError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(NOTIFIER_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("STREAMS")
            .arg(self.keys.notify_stream())
            .arg(after)
            .query_async(&mut conn)
            .await?;
        let mut own = streams_of(reply);
        self.count_earlier_deliveries(&mut own).await?;
        Ok(own)
    }

    /// Takes over up to `count` jobs idle for `min_idle` with any consumer, from `cursor`;
    /// returns the next cursor (`0-0` when the pending list was walked to its end).
    pub async fn autoclaim(
        &self,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<Delivery>), RedisError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(self.keys.notify_stream())
            .arg(NOTIFIER_GROUP)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let Value::Array(mut parts) = reply else {
            return Ok(("0-0".into(), Vec::new()));
        };
        if parts.len() < 2 {
            return Ok(("0-0".into(), Vec::new()));
        }
        let entries = parts.remove(1);
        let next = redis::from_redis_value::<String>(parts.remove(0))?;
        let mut claimed = entries_of(entries);
        self.count_earlier_deliveries(&mut claimed).await?;
        Ok((next, claimed))
    }

    /// Adds the earlier deliveries of re-delivered entries to their failures.
    async fn count_earlier_deliveries(&self, ds: &mut [Delivery]) -> Result<(), RedisError> {
        for d in ds {
            // This delivery was counted too; the earlier ones never finished.
            let delivered = self.delivery_count(&d.entry_id).await?.unwrap_or(1);
            d.prior_failures = d.prior_failures.saturating_add(delivered.saturating_sub(1));
        }
        Ok(())
    }

    async fn delivery_count(&self, entry_id: &str) -> Result<Option<u32>, RedisError> {
        let mut conn = self.conn.clone();
        let reply: Value = redis::cmd("XPENDING")
            .arg(self.keys.notify_stream())
            .arg(NOTIFIER_GROUP)
            .arg(entry_id)
            .arg(entry_id)
            .arg(1)
            .query_async(&mut conn)
            .await?;
        // [[id, consumer, idle_ms, delivery_count]]
        let Value::Array(rows) = reply else {
            return Ok(None);
        };
        let Some(Value::Array(row)) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(row
            .into_iter()
            .nth(3)
            .and_then(|v| redis::from_redis_value::<u32>(v).ok()))
    }

    /// Marks a job done and drops it from the stream.
    pub async fn ack(&self, entry_id: &str) -> Result<(), RedisError> {
        let stream = self.keys.notify_stream();
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&stream)
            .arg(NOTIFIER_GROUP)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(entry_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Moves a job to the dead-letter stream, in one transaction with its acknowledgement.
    pub async fn dead_letter(
        &self,
        d: &Delivery,
        error: &str,
        attempts: u32,
    ) -> Result<(), RedisError> {
        let stream = self.keys.notify_stream();
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.keys.dead_letter_stream())
            .arg("*")
            .arg(JOB_FIELD)
            .arg(&d.raw)
            .arg(ERROR_FIELD)
            .arg(error)
            .arg(ATTEMPTS_FIELD)
            .arg(attempts)
            .arg(ORIGIN_FIELD)
            .arg(&d.entry_id)
            .arg(CONSUMER_FIELD)
            .arg(&self.consumer)
            .ignore()
            .cmd("XACK")
            .arg(&stream)
            .arg(NOTIFIER_GROUP)
            .arg(&d.entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(&d.entry_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Puts an unfinished job back at the end of the stream for any replica (used on shutdown),
    /// carrying its failure count.
    pub async fn give_back(&self, d: &Delivery, attempts: u32) -> Result<(), RedisError> {
        let stream = self.keys.notify_stream();
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg(JOB_FIELD)
            .arg(&d.raw)
            .arg(ATTEMPTS_FIELD)
            .arg(attempts)
            .arg(ORIGIN_FIELD)
            .arg(&d.entry_id)
            .ignore()
            .cmd("XACK")
            .arg(&stream)
            .arg(NOTIFIER_GROUP)
            .arg(&d.entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&stream)
            .arg(&d.entry_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// Resets a job's idle time, so that a deliberate wait is not mistaken for a crash.
    pub async fn touch(&self, entry_id: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("XCLAIM")
            .arg(self.keys.notify_stream())
            .arg(NOTIFIER_GROUP)
            .arg(&self.consumer)
            .arg(0)
            .arg(entry_id)
            .arg("JUSTID")
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
    }
}

/// Entries of an `XREADGROUP` reply: `[[stream, [[id, [field, value, …]], …]]]`, nil on timeout.
fn streams_of(reply: Value) -> Vec<Delivery> {
    let mut out = Vec::new();
    if let Value::Array(streams) = reply {
        for s in streams {
            if let Value::Array(mut parts) = s
                && parts.len() == 2
                && let Some(entries) = parts.pop()
            {
                out.extend(entries_of(entries));
            }
        }
    }
    out
}

fn entries_of(entries: Value) -> Vec<Delivery> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries.into_iter().filter_map(entry).collect()
}

fn entry(v: Value) -> Option<Delivery> {
    let Value::Array(mut parts) = v else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let entry_id = redis::from_redis_value::<String>(parts.pop()?).ok()?;
    let fields: Vec<String> = match fields {
        // A deleted entry still in a pending list reads as nil fields (Redis 6).
        Value::Nil => Vec::new(),
        other => redis::from_redis_value(other).unwrap_or_default(),
    };
    let mut raw = None;
    let mut attempts = 0;
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            match k.as_str() {
                JOB_FIELD => raw = Some(v.clone()),
                ATTEMPTS_FIELD => attempts = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let raw = raw.unwrap_or_default();
    let job = serde_json::from_str::<NotifyJob>(&raw).map_err(|e| format!("unreadable job: {e}"));
    Some(Delivery {
        entry_id,
        job,
        raw,
        prior_failures: attempts,
    })
}
