//! User groups as approvers, from the webhook's side: it never asks Slack who is in a group
//! (a click must be answered within 3 s, and Slack's answer may be slow or rate limited). The
//! notifier keeps one snapshot per group in Postgres, refreshed every `USERGROUP_TTL`; the vote
//! statement trusts a snapshot only while it is younger than `USERGROUP_MAX_AGE`. A stale or
//! missing one refuses the click (fail closed), with a reason the clicker can act on.

use std::time::Duration;

use airlock_shared::config::Env;
use airlock_shared::job::Refusal;

/// Twice the notifier's default `USERGROUP_TTL` (60 s): one refresh may fail or run late
/// without refusing members, two in a row refuse them.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(120);

/// `USERGROUP_MAX_AGE`: how old a group's snapshot may be and still count.
pub fn max_age(env: &mut Env) -> Duration {
    env.duration("USERGROUP_MAX_AGE", DEFAULT_MAX_AGE)
}

/// The refusal for a click whose eligibility hangs on `group`'s unknown membership.
pub fn unknown(group: String) -> Refusal {
    Refusal::MembershipUnknown { group }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_defaults_to_two_refreshes_and_must_be_positive() {
        let mut env = Env::from_pairs(&[]);
        assert_eq!(max_age(&mut env), DEFAULT_MAX_AGE);
        assert!(env.finish().is_ok());
        let mut env = Env::from_pairs(&[("USERGROUP_MAX_AGE", "30s")]);
        assert_eq!(max_age(&mut env), Duration::from_secs(30));
        let mut env = Env::from_pairs(&[("USERGROUP_MAX_AGE", "0s")]);
        max_age(&mut env);
        assert!(env.finish().is_err());
    }
}
