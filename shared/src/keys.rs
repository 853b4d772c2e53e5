//! Every Redis key, channel, stream and consumer group name.
//!
//! All names hang off one prefix so that tests (and tenants) can share a Redis without touching
//! each other. The two notification streams share a hash tag, because moving a job to the
//! dead-letter stream touches both in one transaction (Redis Cluster needs one slot for that).

use crate::ids::SessionId;

/// The consumer group every notifier replica joins.
pub const NOTIFIER_GROUP: &str = "notifiers";

/// The stream entry field that carries a job's JSON.
pub const JOB_FIELD: &str = "job";

/// Redis names under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Names under `prefix` (the default deployment uses `airlock`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel on which decisions are announced to gateways.
    pub fn decisions_channel(&self) -> String {
        format!("{}:decisions", self.prefix)
    }

    /// The sharded channel (`SPUBLISH`/`SSUBSCRIBE`) of decisions in Redis Cluster: it shares the
    /// notify stream's hash tag, so one node carries it and a signal with its job is one slot.
    pub fn sharded_decisions_channel(&self) -> String {
        format!("{{{}}}:decisions", self.prefix)
    }

    /// The stream of jobs for the notifier.
    pub fn notify_stream(&self) -> String {
        format!("{{{}}}:notify", self.prefix)
    }

    /// Where jobs go after too many failed deliveries.
    pub fn dead_letter_stream(&self) -> String {
        format!("{{{}}}:notify:dead", self.prefix)
    }

    /// The lock that allows one mutating tool call per session at a time.
    pub fn session_lock(&self, session: &SessionId) -> String {
        format!("{}:session:{{{}}}:lock", self.prefix, session.0)
    }

    /// The queue of calls waiting for the session's lock (a sorted set, by arrival). Same hash
    /// tag as the lock: one script enqueues and tries the lock.
    pub fn session_lock_queue(&self, session: &SessionId) -> String {
        format!("{}:session:{{{}}}:lock:queue", self.prefix, session.0)
    }

    /// When each queued waiter counts as gone unless it checks again (a hash, beside the queue).
    pub fn session_lock_waiters(&self, session: &SessionId) -> String {
        format!("{}:session:{{{}}}:lock:waiters", self.prefix, session.0)
    }

    /// The pub/sub channel on which a released session lock is announced (payload: session id).
    pub fn lock_released_channel(&self) -> String {
        format!("{}:lock-released", self.prefix)
    }

    /// The per-session tool-call counter. It shares the session's hash tag with the lock, because
    /// one script counts the call and takes the lock (Redis Cluster needs one slot for that).
    pub fn budget(&self, session: &SessionId) -> String {
        format!("{}:session:{{{}}}:budget", self.prefix, session.0)
    }

    /// A principal's tool-call counter for one budget window (`window` = start of the window
    /// divided by its length). Same hash tag as the scope's lock, for the same reason as
    /// [`Keys::budget`]; `scope` is [`SessionId::of_principal`].
    pub fn budget_window(&self, scope: &SessionId, window: u64) -> String {
        format!("{}:session:{{{}}}:budget:w{window}", self.prefix, scope.0)
    }

    /// Per-channel pacing slot used by notifier replicas.
    pub fn channel_pace(&self, channel: &str) -> String {
        format!("{}:pace:{}", self.prefix, channel)
    }
}

impl Keys {
    /// The notifier's short claim on posting one ticket's approval request; once posted it holds
    /// the message's channel and ts until the ticket row has them.
    pub fn notify_post_claim(&self, ticket: &crate::ids::TicketId) -> String {
        format!("{}:notify:post:{}", self.prefix, ticket)
    }

    /// The lease that lets one notifier replica at a time run a reconciler pass.
    pub fn reconcile_lease(&self) -> String {
        format!("{}:notify:reconcile", self.prefix)
    }

    /// The lease that lets one notifier replica at a time refresh user group memberships.
    pub fn usergroup_refresh_lease(&self) -> String {
        format!("{}:notify:usergroups", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn related_keys_share_a_hash_tag() {
        let k = Keys::new("airlock");
        assert_eq!(k.notify_stream(), "{airlock}:notify");
        assert_eq!(k.dead_letter_stream(), "{airlock}:notify:dead");
        assert_eq!(k.sharded_decisions_channel(), "{airlock}:decisions");
        let s1 = SessionId("s1".into());
        assert_eq!(k.session_lock(&s1), "airlock:session:{s1}:lock");
        assert_eq!(k.budget(&s1), "airlock:session:{s1}:budget");
        let p = SessionId::of_principal(&crate::ids::Principal("bot".into()));
        assert_eq!(
            k.budget_window(&p, 7),
            "airlock:session:{principal:bot}:budget:w7"
        );
        assert_eq!(k.session_lock(&p), "airlock:session:{principal:bot}:lock");
        assert_eq!(k.session_lock_queue(&s1), "airlock:session:{s1}:lock:queue");
        assert_eq!(
            k.session_lock_waiters(&s1),
            "airlock:session:{s1}:lock:waiters"
        );
    }
}
