//! The Lua scripts of the session lock. Every script touches one session's keys only (one hash
//! tag), so they run unchanged on Redis Cluster.
//!
//! The lock's value is `"<token> <request hash>"`: the token says who holds it, the canonical
//! request hash which call. Waiters queue in a sorted set (score: Redis time of arrival, in µs)
//! beside a hash of their staleness deadlines, refreshed by every check a waiter makes.

/// Shared by ADMIT and ACQUIRE. `acquire(lock, queue, waiters, value, ttl, stale)` returns
/// `{1, 0}` when the lock is ours, else `{0, ms the lock has left}` with us queued.
const ACQUIRE_FN: &str = r"
local function acquire(lock, queue, waiters, value, ttl, stale)
  local token, hash = string.match(value, '^(%S+) (%S+)$')
  local cur = redis.call('get', lock)
  if cur then
    local _, held = string.match(cur, '^(%S+) (%S+)$')
    -- A retry of the very call that holds the lock takes it over (its holder may be dead).
    if held == hash then
      redis.call('set', lock, value, 'PX', ttl)
      redis.call('zrem', queue, token)
      redis.call('hdel', waiters, token)
      return {1, 0}
    end
  elseif redis.call('zcard', queue) == 0 then
    redis.call('set', lock, value, 'PX', ttl)
    return {1, 0}
  end
  local t = redis.call('time')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if not redis.call('zscore', queue, token) then
    redis.call('zadd', queue, string.format('%.0f', now), token)
  end
  redis.call('hset', waiters, token, string.format('%.0f', now + stale * 1000))
  while true do
    local head = redis.call('zrange', queue, 0, 0)[1]
    if not head then break end
    local until_us = tonumber(redis.call('hget', waiters, head) or '0')
    if until_us >= now then
      -- Only the head may take a free lock: arrival order.
      if head == token and not cur then
        redis.call('set', lock, value, 'PX', ttl)
        redis.call('zrem', queue, token)
        redis.call('hdel', waiters, token)
        return {1, 0}
      end
      break
    end
    -- A waiter that stopped checking (its pod crashed) must not wedge the queue.
    redis.call('zrem', queue, head)
    redis.call('hdel', waiters, head)
  end
  redis.call('pexpire', queue, stale * 2)
  redis.call('pexpire', waiters, stale * 2)
  local left = 0
  if cur then left = math.max(redis.call('pttl', lock), 0) end
  return {0, left}
end
";

/// KEYS: budget, lock, queue, waiters. ARGV: limit (-1 none), budget TTL s, value, lock TTL ms,
/// want lock (1/0), stale ms. One round trip for the common case: count the call (when a
/// budget is set) and, unless the budget is spent, try the lock once.
/// Returns `{count or -1, 1 locked | 0 not wanted | -1 queued, ms the lock has left}`.
const ADMIT_BODY: &str = r"
local n = -1
if tonumber(ARGV[1]) >= 0 then
  n = redis.call('incr', KEYS[1])
  redis.call('expire', KEYS[1], ARGV[2])
  if n > tonumber(ARGV[1]) then return {n, 0, 0} end
end
if ARGV[5] == '1' then
  local r = acquire(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4], tonumber(ARGV[6]))
  if r[1] == 1 then return {n, 1, 0} end
  return {n, -1, r[2]}
end
return {n, 0, 0}";

/// KEYS: lock, queue, waiters. ARGV: value, lock TTL ms, stale ms. A queued waiter's check.
const ACQUIRE_BODY: &str = r"
return acquire(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], tonumber(ARGV[3]))";

/// KEYS: lock. ARGV: value, TTL ms. Extends the lock if it is still ours.
pub const EXTEND: &str = r"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";

/// KEYS: lock, queue. ARGV: value, wake-up channel, session. Compare-and-delete, then, if
/// anyone waits, tell the session's waiters (on every pod) that the lock is free.
pub const RELEASE: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  if redis.call('zcard', KEYS[2]) > 0 then redis.call('publish', ARGV[2], ARGV[3]) end
  return 1
end
return 0";

/// KEYS: lock, queue, waiters. ARGV: token, wake-up channel, session. A waiter that gives up
/// leaves the queue; if the lock is free the next waiter is told.
pub const LEAVE: &str = r"
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
if redis.call('exists', KEYS[1]) == 0 then redis.call('publish', ARGV[2], ARGV[3]) end
return 1";

/// The admission script: budget, then the first lock attempt.
pub fn admit() -> String {
    format!("{ACQUIRE_FN}{ADMIT_BODY}")
}

/// A queued waiter's check.
pub fn acquire() -> String {
    format!("{ACQUIRE_FN}{ACQUIRE_BODY}")
}
