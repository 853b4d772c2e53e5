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
