//! A Redis lease: one owner at a time for a key, lapsing after its time to live.
//!
//! Taken with `SET NX PX` and an owner token; released and extended only by the owner (a lease
//! that lapsed and was taken by someone else is left alone). Keys come from [`crate::keys`].

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisError, Script};

/// Deletes the key only if it still holds the owner's token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Resets the time to live only if the key still holds the owner's token.
const EXTEND: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// Takes the lease on `key` for `owner` unless someone holds it; true if we got it.
pub async fn acquire<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl))
        .query_async(conn)
        .await?;
    Ok(set.is_some())
}

/// Gives the lease up if `owner` still holds it; true if it did.
pub async fn release<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    owner: &str,
) -> Result<bool, RedisError> {
    let n: i64 = Script::new(RELEASE)
        .key(key)
        .arg(owner)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// Gives `owner`'s lease a fresh `ttl`; false if it lapsed or someone else holds it now.
pub async fn extend<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    owner: &str,
    ttl: Duration,
) -> Result<bool, RedisError> {
    let n: i64 = Script::new(EXTEND)
        .key(key)
        .arg(owner)
        .arg(millis(ttl))
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// Redis wants at least 1 ms.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
