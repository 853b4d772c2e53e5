//! The identity part of a rule: `principals` (globs on the caller's principal) and `scopes`
//! (all must have been granted to the caller's access token).

use std::sync::Arc;

use globset::GlobMatcher;
use serde_json::Value;

use crate::identity::Identity;

/// Whom a rule applies to; empty: anyone.
#[derive(Debug, Default)]
pub(super) struct Who {
    principals: Vec<GlobMatcher>,
    scopes: Vec<String>,
}

impl Who {
    /// A rule's `principals` and `scopes`, checked as written.
    pub(super) fn new(
        rule: &str,
        principals: Vec<GlobMatcher>,
        scopes: Vec<String>,
    ) -> Result<Self, String> {
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"'))
        {
            return Err(format!(
                "rule {rule:?}: scope {bad:?} is not a scope token (no spaces or quotes)"
            ));
        }
        Ok(Self { principals, scopes })
    }

    /// Whether the rule names neither principals nor scopes.
    pub(super) fn is_anyone(&self) -> bool {
        self.principals.is_empty() && self.scopes.is_empty()
    }

    /// Whether `id` is among those the rule names. A static-token agent has no scopes, so a
    /// rule with `scopes` never applies to it.
    pub(super) fn includes(&self, id: &Identity) -> bool {
        let principal_fits = self.principals.is_empty()
            || self.principals.iter().any(|g| g.is_match(&id.principal.0));
        let scopes_fit = self.scopes.is_empty() || (id.has_token() && id.has_scopes(&self.scopes));
        principal_fits && scopes_fit
    }

    /// The scopes the rule requires, shown to approvers.
    pub(super) fn scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// What of the caller's token a rule names, so approvers see what the decision rested on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Shown {
    /// The claims the rule's conditions look at.
    pub claims: Arc<[String]>,
    /// The scopes the rule requires.
    pub scopes: Arc<[String]>,
}

impl Shown {
    /// What approvers see of `id`'s token: the claims the rule looked at (those present) and,
    /// when the rule requires scopes, the token's `scope`; `None` for a static-token agent or
    /// a rule that looks at neither.
    pub fn of(&self, id: &Identity) -> Option<Value> {
        if !id.has_token() || (self.claims.is_empty() && self.scopes.is_empty()) {
            return None;
        }
        let mut out = serde_json::Map::new();
        for name in self.claims.iter() {
            if let Some(v) = id.claim(name) {
                out.insert(name.clone(), v.clone());
            }
        }
        if !self.scopes.is_empty() {
            out.insert("scope".into(), Value::String(id.scopes.join(" ")));
        }
        Some(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Action, Policy};
    use crate::identity::{Identity, scopes_of};
    use airlock_shared::Principal;
    use serde_json::{Value, json};
    use std::sync::Arc;

    const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: ci deletes, tools: ["delete_*"], principals: ["ci-*"], action: allow }
  - name: payments held
    tools: ["refund"]
    when: [{ claim: team, equals: payments }, { claim: /org/level, gt: 2 }]
    action: approve
  - { name: writers, tools: ["refund"], scopes: ["refunds:write", "mcp"], action: allow }
  - { name: not payments, tools: ["refund"], when: [{ claim: team, not_equals: payments }], action: deny }
"#;

    fn token(sub: &str, claims: Value) -> Identity {
        let claims = claims.as_object().cloned().unwrap_or_default();
        Identity {
            principal: Principal(sub.into()),
            issuer: Some("https://as".into()),
            scopes: scopes_of(&claims).into(),
            claims: Arc::new(claims),
        }
    }

    fn rule(p: &Policy, tool: &str, id: &Identity) -> String {
        p.assess(tool, &json!({}), id).verdict.rule.to_string()
    }

    #[test]
    fn rules_match_principal_globs_claims_and_scopes() {
        let p = Policy::parse(POLICY).unwrap();
        let agent = |n: &str| Identity::agent(Principal(n.into()));
        assert_eq!(rule(&p, "delete_x", &agent("ci-nightly")), "ci deletes");
        assert_eq!(
            rule(&p, "delete_x", &token("ci-job", json!({}))),
            "ci deletes"
        );
        assert_eq!(rule(&p, "delete_x", &agent("dev")), "default");
        let payments = token("p", json!({"team": "payments", "org": {"level": 3}}));
        assert_eq!(rule(&p, "refund", &payments), "payments held");
        // A claim that cannot be compared fails closed: the approve rule holds the call.
        let odd = token("p", json!({"team": "payments", "org": {"level": "high"}}));
        assert_eq!(
            p.assess("refund", &json!({}), &odd).verdict.action,
            Action::Approve
        );
        let other = token("p", json!({"team": "ops"}));
        assert_eq!(rule(&p, "refund", &other), "not payments");
        let writer = token("p", json!({"scope": "mcp refunds:write"}));
        assert_eq!(rule(&p, "refund", &writer), "writers");
        // Not every scope: not a writer; and a missing claim is "not equal" to anything.
        let half = token("p", json!({"scope": "refunds:write"}));
        assert_eq!(rule(&p, "refund", &half), "not payments");
        // A static agent has no claims and no scopes: no claim or scope rule applies, not even
        // a not_equals one.
        assert_eq!(rule(&p, "refund", &agent("billing")), "default");
    }

    #[test]
    fn the_approver_sees_only_what_the_rule_names() {
        let p = Policy::parse(POLICY).unwrap();
        let id = token(
            "p",
            json!({"team": "payments", "org": {"level": 3}, "email": "a@b"}),
        );
        let v = p.assess("refund", &json!({}), &id).verdict;
        assert_eq!(
            v.shown.of(&id),
            Some(json!({"team": "payments", "/org/level": 3}))
        );
        let w = token("p", json!({"scope": "mcp refunds:write", "email": "a@b"}));
        let v = p.assess("refund", &json!({}), &w).verdict;
        assert_eq!(v.shown.of(&w), Some(json!({"scope": "mcp refunds:write"})));
        assert_eq!(v.shown.of(&Identity::agent(Principal("a".into()))), None);
    }

    #[test]
    fn identity_fields_are_checked_when_the_file_loads() {
        let bad = |rule: &str| {
            Policy::parse(&format!("version: 1\ndefault: deny\nrules:\n  - {rule}\n")).is_err()
        };
        assert!(bad(
            "{ name: x, tools: [a], principals: ['ci-[' ], action: allow }"
        ));
        assert!(bad(
            "{ name: x, tools: [a], scopes: ['two words'], action: allow }"
        ));
        assert!(bad(
            "{ name: x, tools: [a], when: [{ claim: team, arg: /x, equals: 1 }], action: allow }"
        ));
        assert!(bad(
            "{ name: x, tools: [a], when: [{ equals: 1 }], action: allow }"
        ));
        assert!(bad(
            "{ name: x, tools: [a], when: [{ claim: '', equals: 1 }], action: allow }"
        ));
        assert!(!bad(
            "{ name: x, tools: [a], principals: ['ci-*'], scopes: [mcp], when: [{ claim: team, equals: a }], action: allow }"
        ));
    }
}
