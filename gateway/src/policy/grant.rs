//! `grant:` on an approve rule: the standing grant an approver may give with "Approve for …",
//! and the rule hash that ends every grant when its rule changes.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::canonical;
use airlock_shared::grant::{GrantOffer, GrantScope};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Action, HumanDuration, RawRuleFields};

/// A rule's `grant:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    #[serde(rename = "for")]
    lasts: HumanDuration,
    scope: GrantScope,
    /// A rule with `approvals` > 1 offers a grant only when it says so: one grant then stands
    /// for many calls that each would have needed several people.
    #[serde(default)]
    with_quorum: bool,
}

/// What a rule offers: how long, what it covers, and the rule's hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRule {
    /// How long a grant lasts from the decision that made it.
    pub lasts: Duration,
    pub scope: GrantScope,
    /// SHA-256 of the rule's canonical form; grants made under another hash are not honoured.
    pub rule_hash: Arc<str>,
}

impl GrantRule {
    /// The offer stored on the ticket of a call this rule holds.
    pub fn offer(&self) -> GrantOffer {
        GrantOffer {
            lasts: self.lasts,
            scope: self.scope,
            rule_hash: self.rule_hash.to_string(),
        }
    }
}

/// Checks a rule's `grant:` and computes its hash; `None` for a rule that offers no grant.
pub(super) fn grant_rule(r: &RawRuleFields, approvals: u32) -> Result<Option<GrantRule>, String> {
    let Some(g) = &r.grant else {
        return Ok(None);
    };
    if r.action != Action::Approve {
        return Err(format!(
            "rule {:?}: grant only applies to action: approve",
            r.name
        ));
    }
    if approvals > 1 && !g.with_quorum {
        return Err(format!(
            "rule {:?}: approvals: {approvals} with a grant lets one decision stand for many calls; say grant: {{ ..., with_quorum: true }} if that is meant",
            r.name
        ));
    }
    Ok(Some(GrantRule {
        lasts: g.lasts.0,
        scope: g.scope,
        rule_hash: rule_hash(r, approvals).into(),
    }))
}

/// SHA-256 of the rule's canonical form: name, tools, when, action, approvers, approvals and
/// grant. Key order and YAML spelling do not matter; any change of meaning does.
fn rule_hash(r: &RawRuleFields, approvals: u32) -> String {
    let grant = r.grant.as_ref().map(|g| {
        json!({
            "for_ms": u64::try_from(g.lasts.0.as_millis()).unwrap_or(u64::MAX),
            "scope": g.scope.as_str(),
            "with_quorum": g.with_quorum,
        })
    });
    let mut body = json!({
        "name": r.name,
        "tools": r.tools.iter().map(|t| t.0.glob().glob()).collect::<Vec<_>>(),
        "when": r.when.iter().map(|c| c.canonical()).collect::<Vec<Value>>(),
        "action": r.action.as_str(),
        "approvers": r.approvers,
        "approver_groups": r.approver_groups,
        "approvals": approvals,
        "grant": grant,
    });
    // Only when named, so that rules written before identity existed hash as they did.
    if !r.principals.is_empty() || !r.scopes.is_empty() {
        body["principals"] = json!(
            r.principals
                .iter()
                .map(|p| p.0.glob().glob())
                .collect::<Vec<_>>()
        );
        body["scopes"] = json!(r.scopes);
    }
    hex::encode(Sha256::digest(
        canonical::to_canonical_string(&body).as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{Policy, PolicyError};
    use super::*;

    fn policy(rule: &str) -> Result<Policy, PolicyError> {
        Policy::parse(&format!("version: 1\ndefault: deny\nrules:\n  - {rule}\n"))
    }

    fn grant(rule: &str) -> Option<GrantRule> {
        policy(rule)
            .unwrap()
            .evaluate("a", &serde_json::json!({"n": 1}))
            .grant
            .clone()
    }

    #[test]
    fn a_grant_is_read_with_the_policy_s_durations() {
        let g =
            grant("{ name: x, tools: [a], action: approve, grant: { for: 1h30m, scope: tool } }")
                .unwrap();
        assert_eq!(g.lasts, Duration::from_secs(5400));
        assert_eq!(g.scope, GrantScope::Tool);
        assert_eq!(g.rule_hash.len(), 64);
        let g =
            grant("{ name: x, tools: [a], action: approve, grant: { for: 2s, scope: arguments } }")
                .unwrap();
        assert_eq!(
            (g.lasts, g.scope),
            (Duration::from_secs(2), GrantScope::Arguments)
        );
        assert_eq!(grant("{ name: x, tools: [a], action: approve }"), None);
        let q = grant(
            "{ name: x, tools: [a], action: approve, approvals: 2, grant: { for: 1h, scope: tool, with_quorum: true } }",
        );
        assert!(q.is_some());
    }

    #[test]
    fn grant_mistakes_are_refused_at_load() {
        for (bad, why) in [
            (
                "{ name: x, tools: [a], action: allow, grant: { for: 1h, scope: tool } }",
                "only applies to action: approve",
            ),
            (
                "{ name: x, tools: [a], action: deny, grant: { for: 1h, scope: tool } }",
                "only applies to action: approve",
            ),
            (
                "{ name: x, tools: [a], action: approve, approvals: 2, grant: { for: 1h, scope: tool } }",
                "with_quorum: true",
            ),
            (
                "{ name: x, tools: [a], action: approve, grant: { for: soon, scope: tool } }",
                "bad duration",
            ),
            (
                "{ name: x, tools: [a], action: approve, grant: { for: 0s, scope: tool } }",
                "bad duration",
            ),
            (
                "{ name: x, tools: [a], action: approve, grant: { for: 1h, scope: session } }",
                "unknown variant `session`",
            ),
            (
                "{ name: x, tools: [a], action: approve, grant: { for: 1h } }",
                "missing field `scope`",
            ),
            (
                "{ name: x, tools: [a], action: approve, grant: { for: 1h, scope: tool, forever: true } }",
                "unknown field `forever`",
            ),
        ] {
            let e = policy(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_rule_hash_follows_the_rule_s_meaning_not_its_spelling() {
        let base = "{ name: x, tools: [a], when: [{ arg: /n, lt: 5 }], action: approve, approvers: [U1], grant: { for: 1h, scope: tool } }";
        let h = |r: &str| grant(r).unwrap().rule_hash;
        let same = "{ grant: { scope: tool, for: 60m }, approvers: [U1], action: approve, when: [{ lt: 5.0, arg: /n }], tools: [a], name: x }";
        assert_eq!(h(base), h(same));
        for changed in [
            base.replace("name: x", "name: y"),
            base.replace("tools: [a]", "tools: [a, b]"),
            base.replace("lt: 5", "lt: 6"),
            base.replace("[U1]", "[U1, U2]"),
            base.replace("for: 1h", "for: 2h"),
            base.replace("scope: tool", "scope: arguments"),
            base.replace(
                "approvers: [U1],",
                "approvers: [U1], timeout: 5m, approvals: 1,",
            ),
        ] {
            if changed.contains("timeout") {
                // timeout is not part of the hash; approvals: 1 is the default.
                assert_eq!(h(&changed), h(base), "{changed}");
            } else {
                assert_ne!(h(&changed), h(base), "{changed}");
            }
        }
    }
}
