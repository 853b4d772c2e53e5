//! Two-person rules: how many approvals a rule needs, and that an agent's owner is never the
//! only one who could give them.
//!
//! A rule with `approver_groups` has members nobody knows at start (Slack is asked later, by
//! the notifier), so neither check can count them: such a rule is not checked for reachability
//! or for its owner, and the owner is simply never counted when the votes come in.

use super::{Action, Policy, PolicyError, Verdict};

/// A rule's `approvals:`, checked against its approver list.
pub(super) fn approvals(
    rule: &str,
    approvals: Option<u32>,
    approvers: &[String],
    groups: &[String],
) -> Result<u32, String> {
    let n = approvals.unwrap_or(1);
    if n == 0 {
        return Err(format!("rule {rule:?}: approvals must be at least 1"));
    }
    let mut distinct: Vec<&String> = approvers.iter().collect();
    distinct.sort();
    distinct.dedup();
    if !approvers.is_empty() && groups.is_empty() && distinct.len() < n as usize {
        return Err(format!(
            "rule {rule:?}: approvals: {n} needs at least {n} distinct approvers, it names {}",
            distinct.len()
        ));
    }
    Ok(n)
}

/// A rule's `approver_groups`: Slack user group ids, each named once.
pub(super) fn check_groups(rule: &str, groups: &[String]) -> Result<(), String> {
    if let Some(bad) = groups
        .iter()
        .find(|g| !airlock_shared::usergroup::looks_like_group(g))
    {
        return Err(format!(
            "rule {rule:?}: approver group {bad:?} is not a Slack user group id (like S0123ABCD)"
        ));
    }
    let mut distinct: Vec<&String> = groups.iter().collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() < groups.len() {
        return Err(format!(
            "rule {rule:?}: approver_groups names a group twice"
        ));
    }
    Ok(())
}

impl Policy {
    /// Checks that no agent's owner is needed to reach a rule's quorum: for each `approve` rule
    /// that names its approvers and each agent with an owner, enough approvers other than the
    /// owner must remain. Every problem is reported at once. (Rules that name nobody defer to
    /// the webhook's `APPROVER_USER_IDS`, which the gateway does not know.)
    pub fn check_owners<'a>(
        &self,
        owners: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> Result<(), PolicyError> {
        let mut problems = Vec::new();
        let verdicts = self
            .rules
            .iter()
            .map(|r| &r.verdict)
            .chain(std::iter::once(&self.default));
        // Groups' members are unknown until Slack is asked: the owner is then refused at the
        // vote instead (see the module comment).
        let checkable = |v: &&Verdict| {
            v.action == Action::Approve && !v.approvers.is_empty() && v.approver_groups.is_empty()
        };
        for v in verdicts.filter(checkable) {
            for (agent, owner) in owners.clone() {
                let mut others: Vec<&String> =
                    v.approvers.iter().filter(|a| a.as_str() != owner).collect();
                others.sort();
                others.dedup();
                if others.len() < v.approvals as usize {
                    problems.push(format!(
                        "rule {:?} needs {} approval(s) but agent {agent:?}'s owner {owner} may not approve its calls, leaving {} eligible approver(s)",
                        v.rule,
                        v.approvals,
                        others.len()
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rule: &str) -> Result<Policy, PolicyError> {
        Policy::parse(&format!("version: 1\ndefault: deny\nrules:\n  - {rule}\n"))
    }

    #[test]
    fn approvals_default_to_one_and_must_be_reachable() {
        let p = policy("{ name: x, tools: [a], action: approve, approvers: [U1, U2] }").unwrap();
        assert_eq!(p.evaluate("a", &serde_json::json!({})).approvals, 1);
        let p =
            policy("{ name: x, tools: [a], action: approve, approvers: [U1, U2], approvals: 2 }")
                .unwrap();
        assert_eq!(p.evaluate("a", &serde_json::json!({})).approvals, 2);
        let p = policy("{ name: x, tools: [a], action: approve, approvals: 3 }").unwrap();
        assert_eq!(p.evaluate("a", &serde_json::json!({})).approvals, 3);
        for (bad, why) in [
            (
                "{ name: x, tools: [a], action: approve, approvers: [U1, U1], approvals: 2 }",
                "distinct approvers",
            ),
            (
                "{ name: x, tools: [a], action: approve, approvals: 0 }",
                "at least 1",
            ),
            (
                "{ name: x, tools: [a], action: allow, approvals: 2 }",
                "only apply",
            ),
        ] {
            let e = policy(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn an_owner_cannot_be_needed_for_the_quorum() {
        let p = policy("{ name: x, tools: [a], action: approve, approvers: [U0CAROL] }").unwrap();
        let e = p
            .check_owners([("agent-a", "U0CAROL")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("U0CAROL") && e.contains("agent-a"), "{e}");
        assert!(p.check_owners([("agent-a", "U0DAVE")]).is_ok());
        let p = policy(
            "{ name: x, tools: [a], action: approve, approvers: [U0CAROL, U0ALICE], approvals: 2 }",
        )
        .unwrap();
        assert!(p.check_owners([("agent-a", "U0CAROL")]).is_err());
        let p = policy(
            "{ name: x, tools: [a], action: approve, approvers: [U0CAROL, U0ALICE, U0BOB], approvals: 2 }",
        )
        .unwrap();
        assert!(p.check_owners([("agent-a", "U0CAROL")]).is_ok());
        // With a group the members are unknown at start: not a start-up error (the owner is
        // refused at the vote instead).
        let p = policy(
            "{ name: x, tools: [a], action: approve, approvers: [U0CAROL], approver_groups: [S0OPS] }",
        )
        .unwrap();
        assert!(p.check_owners([("agent-a", "U0CAROL")]).is_ok());
        // Nobody named: the webhook's list decides, which the gateway cannot see.
        let p = policy("{ name: x, tools: [a], action: approve }").unwrap();
        assert!(p.check_owners([("agent-a", "U0CAROL")]).is_ok());
    }

    #[test]
    fn approver_groups_are_parsed_and_validated() {
        let p = policy(
            "{ name: x, tools: [a], action: approve, approvers: [U1], approver_groups: [S0123ABCD, S2], approvals: 2 }",
        )
        .unwrap();
        let v = p.evaluate("a", &serde_json::json!({}));
        assert_eq!(
            &*v.approver_groups,
            ["S0123ABCD".to_owned(), "S2".to_owned()]
        );
        assert_eq!(&*v.approvers, ["U1".to_owned()]);
        // A group's members may make up the quorum, so one listed user is not too few.
        assert_eq!(v.approvals, 2);
        let p = policy("{ name: x, tools: [a], action: approve, approver_groups: [S1] }").unwrap();
        let v = p.evaluate("a", &serde_json::json!({}));
        assert!(v.approvers.is_empty());
        assert_eq!(v.approvals, 1);
        let p = policy("{ name: x, tools: [a], action: approve }").unwrap();
        assert!(
            p.evaluate("a", &serde_json::json!({}))
                .approver_groups
                .is_empty()
        );
        for (bad, why) in [
            (
                "{ name: x, tools: [a], action: approve, approver_groups: [U0123ABCD] }",
                "not a Slack user group id",
            ),
            (
                "{ name: x, tools: [a], action: approve, approver_groups: [s0123] }",
                "not a Slack user group id",
            ),
            (
                "{ name: x, tools: [a], action: approve, approver_groups: [S1, S1] }",
                "twice",
            ),
            (
                "{ name: x, tools: [a], action: deny, approver_groups: [S1] }",
                "only apply",
            ),
            (
                "{ name: x, tools: [a], action: approve, approver_groups: S1 }",
                "approver_groups",
            ),
        ] {
            let e = policy(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
