//! Slack user groups as approvers: the notifier reads who is in a group from Slack
//! (`usergroups.users.list`), keeps it for `USERGROUP_TTL`, and writes every answer to Postgres
//! as the group's snapshot, which is all the webhook ever sees.
//!
//! A snapshot is written when a request naming the group is posted, and again at least every
//! TTL while a pending ticket names it. Every replica runs the refresh loop; a Redis lease picks
//! one per interval. Losing the lease (Redis wiped) only means two replicas refresh at once,
//! which is harmless: both write what Slack said, the later write wins. A failed read (ok:false,
//! 5xx, 429 past the retry budget) writes nothing, so the snapshot ages and the webhook's clicks
//! fail closed once it is older than `USERGROUP_MAX_AGE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_shared::RedisConn;
use airlock_shared::db::Db;
use airlock_shared::telemetry::chain;
use airlock_shared::{Keys, lease, usergroup};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Tuning;
use crate::retry::backoff_now;
use crate::web_api::{SlackClient, SlackError};

/// Why a membership could not be refreshed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Slack did not answer with the members (after the retries it was worth).
    #[error("reading the user group from Slack")]
    Slack(#[source] SlackError),
    /// The snapshot could not be written.
    #[error("writing the membership snapshot")]
    Db(#[source] sqlx::Error),
    /// The lease could not be taken.
    #[error("taking the refresh lease")]
    Redis(#[source] redis::RedisError),
}

/// Group → when this replica last stored it, and the members Slack named.
type Cache = HashMap<String, (Instant, Vec<String>)>;

/// Reads, caches and stores user group memberships.
#[derive(Clone)]
pub struct UserGroups {
    slack: SlackClient,
    pool: Db,
    tuning: Tuning,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for UserGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserGroups")
            .field("ttl", &self.tuning.usergroup_ttl)
            .finish_non_exhaustive()
    }
}

impl UserGroups {
    /// Memberships read with `slack`, stored in `pool`, timed and retried by `tuning`.
    pub fn new(slack: SlackClient, pool: Db, tuning: Tuning) -> Self {
        Self {
            slack,
            pool,
            tuning,
            cache: Arc::default(),
        }
    }

    /// One group's members from Slack, retried like a job's Slack call: transient failures
    /// back off, a 429 waits its `Retry-After` (up to `SLACK_MAX_RETRY_AFTER`), and a permanent
    /// error (`no_such_subteam`, `missing_scope`, …) or the last attempt ends it.
    pub async fn fetch(&self, group: &str) -> Result<Vec<String>, SlackError> {
        let t = &self.tuning;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = match self.slack.usergroup_users(group).await {
                Ok(users) => return Ok(users),
                Err(e) if attempt >= t.max_attempts => return Err(e),
                Err(SlackError::RateLimited(after)) if after <= t.max_retry_after => after,
                Err(e @ SlackError::RateLimited(_)) | Err(e @ SlackError::Permanent(_)) => {
                    return Err(e);
                }
                Err(SlackError::Transient(_)) => backoff_now(attempt, t.retry_base, t.retry_max),
            };
            debug!(
                group,
                attempt,
                ?wait,
                "usergroups.users.list failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads `group` from Slack and stores the answer as its snapshot (and in the cache).
    /// Nothing is written when Slack fails.
    pub async fn refresh(&self, group: &str) -> Result<Vec<String>, MembershipError> {
        let users = self.fetch(group).await.map_err(MembershipError::Slack)?;
        usergroup::record(&self.pool, group, &users)
            .await
            .map_err(MembershipError::Db)?;
        self.lock()
            .insert(group.to_owned(), (Instant::now(), users.clone()));
        debug!(group, members = users.len(), "user group membership stored");
        Ok(users)
    }

    /// Before a request naming `groups` is posted: stores each group's membership unless this
    /// replica stored it within the TTL. Failures are logged, not returned: the request is
    /// posted anyway, and its clicks fail closed until a refresh lands.
    /// The wait is bounded by `SLACK_HTTP_TIMEOUT` so a rate-limited Slack cannot hold the post.
    pub async fn prepare(&self, groups: &[String]) {
        let all = async {
            for g in groups {
                if self.cached(g).is_some() {
                    continue;
                }
                if let Err(e) = self.refresh(g).await {
                    warn!(group = %g, error = %chain(&e), "could not read the user group; its members' clicks are refused until a refresh succeeds");
                }
            }
        };
        if tokio::time::timeout(self.tuning.http_timeout, all)
            .await
            .is_err()
        {
            warn!("reading user groups took too long; posting anyway, the refresh loop goes on");
        }
    }

    /// The members this replica stored within the TTL, if any.
    pub fn cached(&self, group: &str) -> Option<Vec<String>> {
        let cache = self.lock();
        let (at, users) = cache.get(group)?;
        (at.elapsed() < self.tuning.usergroup_ttl).then(|| users.clone())
    }

    /// Refreshes every group a pending ticket names (always from Slack, never the cache);
    /// returns how many were stored. One group failing does not stop the others.
    pub async fn refresh_pending(&self) -> Result<usize, MembershipError> {
        let groups = usergroup::pending_groups(&self.pool)
            .await
            .map_err(MembershipError::Db)?;
        let mut stored = 0;
        for g in &groups {
            match self.refresh(g).await {
                Ok(_) => stored += 1,
                Err(e) => {
                    warn!(group = %g, error = %chain(&e), "user group refresh failed; the snapshot ages")
                }
            }
        }
        Ok(stored)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // Every change is one insert, so a poisoned map is still consistent.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The loop that keeps pending tickets' groups fresh, one replica per interval.
#[derive(Clone, Debug)]
pub struct Refresher {
    /// The memberships.
    pub groups: UserGroups,
    /// Where the lease lives.
    pub redis: RedisConn,
    /// Redis names.
    pub keys: Keys,
    /// This replica's lease token.
    pub owner: String,
}

impl Refresher {
    /// Refreshes every `USERGROUP_TTL` until `shutdown`. The lease lasts a little less than one
    /// interval, so the replica holding it finds it lapsed at its own next tick and keeps the
    /// rhythm; if that replica dies, another takes over within two intervals.
    pub async fn run(self, shutdown: CancellationToken) {
        let every = self.groups.tuning.usergroup_ttl;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = tokio::time::timeout(every, self.pass(every.mul_f64(0.9))) => r,
            };
            match pass {
                Ok(Ok(Some(n))) if n > 0 => info!(groups = n, "user group memberships refreshed"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %chain(&e), "user group refresh pass failed"),
                Err(_) => warn!("user group refresh ran past its interval"),
            }
        }
    }

    /// One pass if this replica gets the lease: `None` when another replica holds it.
    pub async fn pass(&self, lease_ttl: Duration) -> Result<Option<usize>, MembershipError> {
        let mut conn = self.redis.clone();
        let key = self.keys.usergroup_refresh_lease();
        if !lease::acquire(&mut conn, &key, &self.owner, lease_ttl)
            .await
            .map_err(MembershipError::Redis)?
        {
            return Ok(None);
        }
        self.groups.refresh_pending().await.map(Some)
    }
}
