//! Per-channel pacing shared by every replica: Slack allows about one message per second per
//! channel, so a burst of tickets is spread out instead of turning into a storm of 429s.

use std::time::Duration;

use airlock_shared::Keys;
use airlock_shared::RedisConn;
use redis::{RedisError, Script};

/// Reserves the next free slot of a channel (on Redis's clock, so replicas agree) and answers
/// how many milliseconds the caller must wait for it.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local slot = math.max(now, nxt)
local gap = tonumber(ARGV[1])
redis.call('SET', KEYS[1], slot + gap, 'PX', slot + gap - now + 1000)
return slot - now
"#;

/// Hands out posting slots per channel.
#[derive(Clone)]
pub struct Pacer {
    gap: Option<Duration>,
    keys: Keys,
    script: Script,
    conn: RedisConn,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("gap", &self.gap).finish()
    }
}

impl Pacer {
    /// Slots `gap` apart per channel; `None` turns pacing off.
    pub fn new(gap: Option<Duration>, keys: Keys, conn: RedisConn) -> Self {
        Self {
            gap,
            keys,
            script: Script::new(RESERVE),
            conn,
        }
    }

    /// Reserves a slot in `channel` and returns how long to wait for it.
    pub async fn reserve(&self, channel: &str) -> Result<Duration, RedisError> {
        let Some(gap) = self.gap else {
            return Ok(Duration::ZERO);
        };
        let mut conn = self.conn.clone();
        let wait_ms: i64 = self
            .script
            .key(self.keys.channel_pace(channel))
            .arg(gap.as_millis() as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(Duration::from_millis(wait_ms.max(0) as u64))
    }
}
