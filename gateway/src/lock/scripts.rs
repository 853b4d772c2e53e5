//! The Lua scripts of the session lock. Every script touches one session's keys only (one hash
//! tag), so they run unchanged on Redis Cluster.
//!
//! The lock's value is `"<token> <request hash>"`: the token says who holds it, the canonical
//! request hash which call. Waiters queue in a sorted set (score: Redis time of arrival, in µs)
//! beside a hash of their staleness deadlines and values, refreshed by every check a waiter
//! makes. A release hands the lock straight to the next live waiter.

/// Shared by every script. A waiter's entry in the waiters hash is `"<stale deadline µs>
/// <value>"`. `live_head` is the first queued waiter still checking in (those that stopped, on a
/// crashed pod, are dropped) as `token, value`, or nil. `hand_over` gives a free lock to it, with
/// a short TTL that its holder extends at once, and names it on the wake-up channel unless it
/// waits on the releasing pod (tokens start with their pod's id), which wakes it from the reply.
const COMMON_FN: &str = r"
local function now_us()
  local t = redis.call('time')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function live_head(queue, waiters, now)
  while true do
    local head = redis.call('zrange', queue, 0, 0)[1]
    if not head then return nil end
    local entry = redis.call('hget', waiters, head) or '0 -'
    local until_us, value = string.match(entry, '^(%S+) (.+)$')
    if tonumber(until_us or '0') >= now then return head, value end
    redis.call('zrem', queue, head)
    redis.call('hdel', waiters, head)
  end
end
local function hand_over(lock, queue, waiters, channel, handoff_ms, pod)
  local head, value = live_head(queue, waiters, now_us())
  if not head then return '' end
  redis.call('set', lock, value, 'PX', handoff_ms)
  redis.call('zrem', queue, head)
  redis.call('hdel', waiters, head)
  if string.sub(head, 1, string.len(pod)) ~= pod then
    redis.call('publish', channel, head)
  end
  return head
end
";

/// Shared by ADMIT and ACQUIRE. `acquire(lock, queue, waiters, value, ttl, stale)` returns
/// `{1, 0}` when the lock is ours, else `{0, ms the lock has left}` with us queued.
const ACQUIRE_FN: &str = r"
local function acquire(lock, queue, waiters, value, ttl, stale)
  local token, hash = string.match(value, '^(%S+) (%S+)$')
  local cur = redis.call('get', lock)
  if cur == value then
    -- Handed over to us by a release; our wake-up is on its way or was lost.
    redis.call('pexpire', lock, ttl)
    return {1, 0}
  end
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
  local now = now_us()
  if not redis.call('zscore', queue, token) then
    redis.call('zadd', queue, string.format('%.0f', now), token)
  end
  redis.call('hset', waiters, token, string.format('%.0f', now + stale * 1000) .. ' ' .. value)
  -- Only the head may take a free lock: arrival order.
  if not cur and live_head(queue, waiters, now) == token then
    redis.call('set', lock, value, 'PX', ttl)
    redis.call('zrem', queue, token)
    redis.call('hdel', waiters, token)
    return {1, 0}
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

/// KEYS: lock, queue, waiters. ARGV: value, wake-up channel, hand-over TTL ms, releasing pod.
/// Compare-and-delete, then hand the lock to the next live waiter (on whichever pod): only it
/// wakes, and it need not ask again. Returns the new holder's token, or `''`.
const RELEASE_BODY: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  return hand_over(KEYS[1], KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), ARGV[4])
end
return ''";

/// KEYS: lock, queue, waiters. ARGV: token, wake-up channel, hand-over TTL ms, pod. A waiter that
/// gives up leaves the queue; a lock handed to it meanwhile, or a free one, goes to the next.
/// Returns the new holder's token, or `''`.
const LEAVE_BODY: &str = r"
redis.call('zrem', KEYS[2], ARGV[1])
redis.call('hdel', KEYS[3], ARGV[1])
local cur = redis.call('get', KEYS[1])
if cur and string.match(cur, '^(%S+) ') == ARGV[1] then
  redis.call('del', KEYS[1])
  cur = nil
end
if not cur then return hand_over(KEYS[1], KEYS[2], KEYS[3], ARGV[2], tonumber(ARGV[3]), ARGV[4]) end
return ''";

/// The admission script: budget, then the first lock attempt.
pub fn admit() -> String {
    format!("{COMMON_FN}{ACQUIRE_FN}{ADMIT_BODY}")
}

/// A queued waiter's check.
pub fn acquire() -> String {
    format!("{COMMON_FN}{ACQUIRE_FN}{ACQUIRE_BODY}")
}

/// The holder's release.
pub fn release() -> String {
    format!("{COMMON_FN}{RELEASE_BODY}")
}

/// A waiter leaving the queue.
pub fn leave() -> String {
    format!("{COMMON_FN}{LEAVE_BODY}")
}
