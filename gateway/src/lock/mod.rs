//! The per-session lock (one mutating tool call at a time) and the per-session budget.
//!
//! The lock lives in Redis with a TTL so that a crashed pod never wedges a session, and carries
//! an owner token so that only its holder can extend or release it.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::{Keys, SessionId};
use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;

const EXTEND: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
// One round trip for the common case: count the call (when a budget is set) and, unless the
// budget is spent, try the lock once. Returns {count or -1, 1 locked | 0 not wanted | -1 busy}.
const ADMIT: &str = r"
local n = -1
if tonumber(ARGV[1]) >= 0 then
  n = redis.call('incr', KEYS[1])
  redis.call('expire', KEYS[1], ARGV[2])
  if n > tonumber(ARGV[1]) then return {n, 0} end
end
if ARGV[5] == '1' then
  if redis.call('set', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {n, 1} end
  return {n, -1}
end
return {n, 0}";
const RELEASE: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// How long a budget counter lives after the session's last call.
const BUDGET_TTL_SECS: i64 = 7 * 24 * 3600;

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("session lock held by another call")]
    Busy,
    #[error("tool-call budget of {0} exceeded")]
    BudgetExceeded(u64),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

/// Session locks and budgets.
#[derive(Clone)]
pub struct Locks {
    conn: ConnectionManager,
    keys: Keys,
    ttl: Duration,
    acquire_timeout: Duration,
    admit: Arc<redis::Script>,
    extend: Arc<redis::Script>,
    release: Arc<redis::Script>,
    metrics: Metrics,
}

/// A held session lock. Extended in the background while held; released on drop.
pub struct SessionLock {
    conn: ConnectionManager,
    key: String,
    token: String,
    release: Arc<redis::Script>,
    extender: JoinHandle<()>,
}

impl Locks {
    /// Locks on `conn` under `keys`.
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        ttl: Duration,
        acquire_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            conn,
            keys,
            ttl,
            acquire_timeout,
            admit: Arc::new(redis::Script::new(ADMIT)),
            extend: Arc::new(redis::Script::new(EXTEND)),
            release: Arc::new(redis::Script::new(RELEASE)),
            metrics,
        }
    }

    /// Admits one tool call: counts it against `budget` (if any), then, if `lock` is asked
    /// for, takes the session's lock, waiting up to `LOCK_ACQUIRE_TIMEOUT`.
    pub async fn admit(
        &self,
        session: &SessionId,
        budget: Option<u64>,
        lock: bool,
    ) -> Result<Option<SessionLock>, LockError> {
        if budget.is_none() && !lock {
            return Ok(None);
        }
        let key = self.keys.session_lock(session);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let deadline = Instant::now() + self.acquire_timeout;
        let mut conn = self.conn.clone();
        let limit = budget.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let (count, locked): (i64, i64) = self
            .admit
            .key(self.keys.budget(session))
            .key(&key)
            .arg(limit)
            .arg(BUDGET_TTL_SECS)
            .arg(&token)
            .arg(self.ttl.as_millis() as u64)
            .arg(u8::from(lock))
            .invoke_async(&mut conn)
            .await?;
        if limit >= 0 && count > limit {
            return Err(LockError::BudgetExceeded(limit.unsigned_abs()));
        }
        match locked {
            1 => return Ok(Some(self.held(key, token))),
            0 => return Ok(None),
            _ => {}
        }
        // Busy: wait for the holder, without counting the call again.
        let mut backoff = Duration::from_millis(5);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Busy);
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
            let ok: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl.as_millis() as u64)
                .query_async(&mut conn)
                .await?;
            if ok.is_some() {
                return Ok(Some(self.held(key, token)));
            }
        }
    }

    fn held(&self, key: String, token: String) -> SessionLock {
        let mut conn = self.conn.clone();
        let extend = self.extend.clone();
        let every = self.ttl / 3;
        let ttl_ms = self.ttl.as_millis() as u64;
        let metrics = self.metrics.clone();
        let (k, t) = (key.clone(), token.clone());
        let extender = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                let res: Result<i64, _> = extend
                    .key(&k)
                    .arg(&t)
                    .arg(ttl_ms)
                    .invoke_async(&mut conn)
                    .await;
                match res {
                    Ok(1) => {}
                    Ok(_) => {
                        metrics.lock_lost.inc();
                        tracing::warn!(lock = %k, "session lock lost while held; another call may run");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lock = %k, error = %e, "could not extend session lock; will retry");
                    }
                }
            }
        });
        SessionLock {
            conn: self.conn.clone(),
            key,
            token,
            release: self.release.clone(),
            extender,
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        self.extender.abort();
        let mut conn = self.conn.clone();
        let release = self.release.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        // Released on a fresh task: the request that held it may be gone already.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let res: Result<i64, _> = release.key(&key).arg(&token).invoke_async(&mut conn).await;
                if let Err(e) = res {
                    tracing::warn!(lock = %key, error = %e, "could not release session lock; it expires by TTL");
                }
            });
        }
    }
}
