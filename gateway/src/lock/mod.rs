//! The per-session lock (one mutating tool call at a time) and the per-session budget.
//!
//! The lock lives in Redis with a TTL so that a crashed pod never wedges a session, and carries
//! an owner token so that only its holder can extend or release it, plus the call's canonical
//! request hash so that a retry of that same call takes it over at once. Waiters queue in
//! Redis and are served in arrival order: a release hands the lock to the next live waiter.

mod extend;
mod scripts;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::{Keys, SessionId};
use tokio::time::Instant;

use crate::metrics::Metrics;

use extend::Extender;
pub use wake::LockWakeups;
use wake::Waiting;

/// How long a budget counter lives after the session's last call.
const BUDGET_TTL_SECS: i64 = 7 * 24 * 3600;
/// A waiter checks at least this often, in case a wake-up was lost or a holder died.
const RECHECK: Duration = Duration::from_millis(500);
/// A queued waiter that has not checked for this long is dropped (its pod is gone).
const STALE_WAITER_MS: u64 = 2_000;
/// A lock handed to a waiter lives this long until its new holder extends it, so a waiter whose
/// pod died just before its turn wedges the session for seconds, not a whole TTL.
const HANDOFF_MS: u64 = STALE_WAITER_MS;
/// A handed lock's first extension, well inside `HANDOFF_MS`; most calls end before it is due,
/// so a turn of the queue costs no extra round trip.
const HANDOFF_EXTEND: Duration = Duration::from_millis(HANDOFF_MS / 2);

/// A cap to count a call against: the session's (for its lifetime), or a principal's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    /// The window a principal's call counts in; `None` for a session's budget.
    pub window: Option<Window>,
}

/// One fixed budget window: its number (start / length) and how long its counter must live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub index: u64,
    pub ttl_secs: i64,
}

impl Window {
    /// The window of length `per` that `now_ms` (milliseconds since the epoch) falls in.
    pub fn at(now_ms: u64, per: Duration) -> Self {
        let len = u64::try_from(per.as_millis()).unwrap_or(u64::MAX).max(1);
        let left_ms = len - now_ms % len;
        Self {
            index: now_ms / len,
            // The counter outlives its window a little; the index alone decides which counts.
            ttl_secs: i64::try_from(left_ms.div_ceil(1000) + 1).unwrap_or(i64::MAX),
        }
    }
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("session lock held by another call")]
    Busy {
        /// How long the holder's lock has left.
        retry_after: Duration,
    },
    #[error("tool-call budget of {0} exceeded")]
    BudgetExceeded(u64),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

/// Session locks and budgets.
#[derive(Clone)]
pub struct Locks {
    conn: RedisConn,
    keys: Keys,
    ttl: Duration,
    acquire_timeout: Duration,
    scripts: Arc<Scripts>,
    wakeups: LockWakeups,
    extender: Extender,
}

struct Scripts {
    admit: redis::Script,
    acquire: redis::Script,
    release: redis::Script,
    leave: redis::Script,
}

/// One call's claim on a session's lock: the keys, and the value that names the call.
struct Claim {
    lock: String,
    queue: String,
    waiters: String,
    token: String,
    value: String,
}

/// A held session lock. Extended in the background while held; released on drop.
pub struct SessionLock {
    conn: RedisConn,
    claim: Claim,
    scripts: Arc<Scripts>,
    wakeups: LockWakeups,
    extender: Extender,
    /// Our entry in the extender.
    extended: u64,
}

impl Locks {
    /// Locks on `conn` under `keys`; waiters are woken through `wakeups`.
    pub fn new(
        conn: RedisConn,
        keys: Keys,
        ttl: Duration,
        acquire_timeout: Duration,
        wakeups: LockWakeups,
        metrics: Metrics,
    ) -> Self {
        let scripts = Scripts {
            admit: redis::Script::new(&scripts::admit()),
            acquire: redis::Script::new(&scripts::acquire()),
            release: redis::Script::new(&scripts::release()),
            leave: redis::Script::new(&scripts::leave()),
        };
        let extend = Arc::new(redis::Script::new(scripts::EXTEND));
        Self {
            extender: Extender::start(conn.clone(), extend, ttl, metrics),
            conn,
            keys,
            ttl,
            acquire_timeout,
            scripts: Arc::new(scripts),
            wakeups,
        }
    }

    fn claim(&self, session: &SessionId, request_hash: &str) -> Claim {
        let token = self.wakeups.token();
        Claim {
            lock: self.keys.session_lock(session),
            queue: self.keys.session_lock_queue(session),
            waiters: self.keys.session_lock_waiters(session),
            value: format!("{token} {request_hash}"),
            token,
        }
    }

    /// Admits one tool call: counts it against `budget` (if any), then, if `lock` is asked
    /// for, takes the session's lock for the call whose canonical hash is `request_hash`,
    /// waiting in line up to `LOCK_ACQUIRE_TIMEOUT`.
    pub async fn admit(
        &self,
        session: &SessionId,
        request_hash: &str,
        budget: Option<Budget>,
        lock: bool,
    ) -> Result<Option<SessionLock>, LockError> {
        if budget.is_none() && !lock {
            return Ok(None);
        }
        let claim = self.claim(session, request_hash);
        // Listening before the first attempt: a release that hands us the lock right after it
        // queued us wakes us, so a queued call need not check again before it waits.
        let waiting = lock.then(|| self.wakeups.register(&claim.token));
        let deadline = Instant::now() + self.acquire_timeout;
        let mut conn = self.conn.clone();
        let limit = budget.map_or(-1, |b| i64::try_from(b.limit).unwrap_or(i64::MAX));
        let (budget_key, budget_ttl) = match budget.and_then(|b| b.window) {
            Some(w) => (self.keys.budget_window(session, w.index), w.ttl_secs),
            None => (self.keys.budget(session), BUDGET_TTL_SECS),
        };
        let (count, locked, left): (i64, i64, u64) = self
            .scripts
            .admit
            .key(budget_key)
            .key(&claim.lock)
            .key(&claim.queue)
            .key(&claim.waiters)
            .arg(limit)
            .arg(budget_ttl)
            .arg(&claim.value)
            .arg(self.ttl.as_millis() as u64)
            .arg(u8::from(lock))
            .arg(STALE_WAITER_MS)
            .invoke_async(&mut conn)
            .await?;
        if limit >= 0 && count > limit {
            return Err(LockError::BudgetExceeded(limit.unsigned_abs()));
        }
        match (locked, waiting) {
            (1, _) => Ok(Some(self.held(claim, false))),
            // Queued: wait for our turn, without counting the call again.
            (-1, Some(waiting)) => self
                .wait_turn(claim, waiting, left, deadline)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Waits in the session's queue until the lock is ours or `deadline` passes. A release
    /// that hands us the lock wakes us; we check again only when the lock's holder should have
    /// let go by now (`left` ms), and at least every `RECHECK`, in case a wake-up was lost.
    async fn wait_turn(
        &self,
        claim: Claim,
        waiting: Waiting,
        mut left: u64,
        deadline: Instant,
    ) -> Result<SessionLock, LockError> {
        let mut place = QueuePlace {
            locks: self,
            claim: Some(claim),
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let recheck = match left {
                0 => RECHECK,
                ms => Duration::from_millis(ms).clamp(Duration::from_millis(5), RECHECK),
            };
            tokio::select! {
                // Only a release that handed us the lock names us.
                () = waiting.notify.notified() => return Ok(self.held(place.take()?, true)),
                () = tokio::time::sleep_until((now + recheck).min(deadline)) => {}
            }
            let claim = place.claim()?;
            let mut conn = self.conn.clone();
            let (got, ms): (i64, u64) = self
                .scripts
                .acquire
                .key(&claim.lock)
                .key(&claim.queue)
                .key(&claim.waiters)
                .arg(&claim.value)
                .arg(self.ttl.as_millis() as u64)
                .arg(STALE_WAITER_MS)
                .invoke_async(&mut conn)
                .await?;
            if got == 1 {
                return Ok(self.held(place.take()?, false));
            }
            left = ms;
        }
        place.leave().await;
        Err(LockError::Busy {
            retry_after: Duration::from_millis(left),
        })
    }

    /// The lock, held; one `handed` over by a release is extended to the full TTL soon.
    fn held(&self, claim: Claim, handed: bool) -> SessionLock {
        let first = if handed { HANDOFF_EXTEND } else { self.ttl };
        let extended = self.extender.hold(&claim.lock, &claim.value, first);
        SessionLock {
            conn: self.conn.clone(),
            claim,
            scripts: self.scripts.clone(),
            wakeups: self.wakeups.clone(),
            extender: self.extender.clone(),
            extended,
        }
    }
}

/// A waiter's place in the queue; a waiter that gives up or goes away leaves it.
struct QueuePlace<'a> {
    locks: &'a Locks,
    claim: Option<Claim>,
}

impl QueuePlace<'_> {
    fn claim(&self) -> Result<&Claim, LockError> {
        self.claim.as_ref().ok_or(LockError::Busy {
            retry_after: Duration::ZERO,
        })
    }

    fn take(&mut self) -> Result<Claim, LockError> {
        self.claim.take().ok_or(LockError::Busy {
            retry_after: Duration::ZERO,
        })
    }

    async fn leave(&mut self) {
        if let Some(c) = self.claim.take() {
            leave(
                self.locks.conn.clone(),
                self.locks.scripts.clone(),
                self.locks.wakeups.clone(),
                c,
            )
            .await;
        }
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        // The request went away mid-wait: leave on a fresh task.
        if let Some(c) = self.claim.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let (conn, scripts) = (self.locks.conn.clone(), self.locks.scripts.clone());
            handle.spawn(leave(conn, scripts, self.locks.wakeups.clone(), c));
        }
    }
}

async fn leave(mut conn: RedisConn, scripts: Arc<Scripts>, wakeups: LockWakeups, c: Claim) {
    let res: Result<String, _> = scripts
        .leave
        .key(&c.lock)
        .key(&c.queue)
        .key(&c.waiters)
        .arg(&c.token)
        .arg(wakeups.channel())
        .arg(HANDOFF_MS)
        .arg(wakeups.pod())
        .invoke_async(&mut conn)
        .await;
    match res {
        Ok(next) => wakeups.wake(next.as_bytes()),
        Err(e) => {
            tracing::warn!(lock = %c.lock, error = %e, "could not leave the lock queue; dropped when stale");
        }
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        self.extender.forget(self.extended);
        let mut conn = self.conn.clone();
        let scripts = self.scripts.clone();
        let wakeups = self.wakeups.clone();
        let (key, value) = (
            std::mem::take(&mut self.claim.lock),
            std::mem::take(&mut self.claim.value),
        );
        let queue = std::mem::take(&mut self.claim.queue);
        let waiters = std::mem::take(&mut self.claim.waiters);
        // Released on a fresh task: the request that held it may be gone already.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let res: Result<String, _> = scripts
                    .release
                    .key(&key)
                    .key(&queue)
                    .key(&waiters)
                    .arg(&value)
                    .arg(wakeups.channel())
                    .arg(HANDOFF_MS)
                    .arg(wakeups.pod())
                    .invoke_async(&mut conn)
                    .await;
                match res {
                    // A waiter on this pod wakes now, not when the announcement comes back
                    // from Redis (which still tells the other pods).
                    Ok(next) => wakeups.wake(next.as_bytes()),
                    Err(e) => {
                        tracing::warn!(lock = %key, error = %e, "could not release session lock; it expires by TTL");
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_their_counters_outlive_them() {
        let per = Duration::from_secs(3600);
        let w = Window::at(7_200_000 + 1_000, per);
        assert_eq!(w.index, 2);
        assert_eq!(w.ttl_secs, 3600);
        assert_eq!(Window::at(10_799_999, per).index, 2);
        assert_eq!(Window::at(10_800_000, per).index, 3);
        let short = Window::at(4_500, Duration::from_secs(2));
        assert_eq!((short.index, short.ttl_secs), (2, 3));
    }
}
