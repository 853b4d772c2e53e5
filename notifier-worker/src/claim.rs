//! The post claim: a short Redis lease that lets one worker at a time post a ticket's approval
//! request, and that then keeps the posted message's channel and ts for a day, so that a worker
//! that read the ticket before the message was recorded learns of it here instead of posting.
//!
//! The ticket row's `message_ts` stays the guard; the claim only narrows the window in which two
//! workers (a duplicate job, a taken-over job) could both post before either has recorded.

use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::{Keys, TicketId, lease};
use redis::RedisError;

/// How long a posted ts is kept (for a successor to record, or to stop a duplicate post).
const POSTED_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the claim said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// We hold it: post now.
    Acquired,
    /// Another worker is posting this ticket right now.
    Busy,
    /// A message was posted already: record it (a no-op once recorded) instead of posting.
    Posted { channel: String, ts: String },
}

/// The claims of one deployment.
#[derive(Clone)]
pub struct PostClaims {
    keys: Keys,
    conn: RedisConn,
    ttl: Duration,
}

impl std::fmt::Debug for PostClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostClaims")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl PostClaims {
    /// Claims that lapse after `ttl` (longer than one Slack call may take).
    pub fn new(keys: Keys, conn: RedisConn, ttl: Duration) -> Self {
        Self { keys, conn, ttl }
    }

    /// Tries to take the claim for `ticket` as `holder`.
    pub async fn acquire(&self, ticket: TicketId, holder: &str) -> Result<Claim, RedisError> {
        let key = self.keys.notify_post_claim(&ticket);
        let mut conn = self.conn.clone();
        if lease::acquire(&mut conn, &key, &owner(holder), self.ttl).await? {
            return Ok(Claim::Acquired);
        }
        let current: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
        Ok(match current.as_deref().and_then(parse_posted) {
            Some((channel, ts)) => Claim::Posted { channel, ts },
            None => Claim::Busy,
        })
    }

    /// What the claim holds without taking it: a posted-but-unrecorded message, if any.
    pub async fn posted(&self, ticket: TicketId) -> Result<Option<(String, String)>, RedisError> {
        let mut conn = self.conn.clone();
        let current: Option<String> = redis::cmd("GET")
            .arg(self.keys.notify_post_claim(&ticket))
            .query_async(&mut conn)
            .await?;
        Ok(current.as_deref().and_then(parse_posted))
    }

    /// Replaces our claim with the posted message, so that a crash before the ticket row is
    /// written does not lead a successor to post again.
    pub async fn mark_posted(
        &self,
        ticket: TicketId,
        channel: &str,
        ts: &str,
    ) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.keys.notify_post_claim(&ticket))
            .arg(format!("posted {channel} {ts}"))
            .arg("PX")
            .arg(POSTED_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await
    }

    /// Drops our claim (a no-op if it lapsed and someone else holds it now).
    pub async fn release(&self, ticket: TicketId, holder: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let key = self.keys.notify_post_claim(&ticket);
        lease::release(&mut conn, &key, &owner(holder))
            .await
            .map(|_| ())
    }
}

/// The lease's owner token while `holder` posts.
fn owner(holder: &str) -> String {
    format!("posting {holder}")
}

fn parse_posted(v: &str) -> Option<(String, String)> {
    let rest = v.strip_prefix("posted ")?;
    let (channel, ts) = rest.split_once(' ')?;
    Some((channel.to_owned(), ts.to_owned()))
}
