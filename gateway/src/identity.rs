//! Who is calling, as policy sees it: the principal, and for an OAuth access token its issuer,
//! claims and scopes.

use std::sync::Arc;

use airlock_shared::Principal;
use serde_json::{Map, Value};

/// The authenticated caller of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// The agent's name (static token) or the configured claim of its access token.
    pub principal: Principal,
    /// The access token's issuer; `None` for a static token.
    pub issuer: Option<Arc<str>>,
    /// The access token's claims; empty for a static token.
    pub claims: Arc<Map<String, Value>>,
    /// The access token's scopes (`scope`, or `scp`); empty for a static token.
    pub scopes: Arc<[String]>,
}

impl Identity {
    /// A static-token agent: a name and nothing else, so claim and scope conditions never match.
    pub fn agent(principal: Principal) -> Self {
        Self {
            principal,
            issuer: None,
            claims: Arc::new(Map::new()),
            scopes: Arc::from(Vec::new()),
        }
    }

    /// Whether the identity comes from an access token (and so has claims and scopes at all).
    pub fn has_token(&self) -> bool {
        self.issuer.is_some()
    }

    /// Whether every scope in `wanted` was granted.
    pub fn has_scopes<S: AsRef<str>>(&self, wanted: &[S]) -> bool {
        wanted
            .iter()
            .all(|w| self.scopes.iter().any(|s| s == w.as_ref()))
    }

    /// The claim `name`: a top-level claim, or a JSON pointer into the claims (`/org/team`).
    pub fn claim(&self, name: &str) -> Option<&Value> {
        match name.strip_prefix('/') {
            Some(pointer) => {
                let (first, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
                let first = first.replace("~1", "/").replace("~0", "~");
                let rest = if rest.is_empty() {
                    String::new()
                } else {
                    format!("/{rest}")
                };
                self.claims.get(&first)?.pointer(&rest)
            }
            None => self.claims.get(name),
        }
    }
}

/// The scopes of a claim set: `scope` (space-separated, RFC 9068) or `scp` (a list or a string).
pub fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let split = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => split(s),
        (_, Some(Value::Array(items))) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        (_, Some(Value::String(s))) => split(s),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(claims: Value) -> Identity {
        let claims = claims.as_object().cloned().unwrap_or_default();
        Identity {
            principal: Principal("p".into()),
            issuer: Some("https://as".into()),
            scopes: scopes_of(&claims).into(),
            claims: Arc::new(claims),
        }
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        assert_eq!(
            with(json!({"scope": "a b"})).scopes.to_vec(),
            vec!["a".to_owned(), "b".to_owned()]
        );
        assert_eq!(
            with(json!({"scp": ["x"]})).scopes.to_vec(),
            vec!["x".to_owned()]
        );
        assert!(with(json!({})).scopes.is_empty());
        assert!(with(json!({"scope": "a b"})).has_scopes(&["b", "a"]));
        assert!(!with(json!({"scope": "a"})).has_scopes(&["a", "c"]));
    }

    #[test]
    fn claims_by_name_or_pointer() {
        let id = with(json!({"team": "payments", "org": {"unit": "eu"}, "a/b": 1}));
        assert_eq!(id.claim("team"), Some(&json!("payments")));
        assert_eq!(id.claim("/org/unit"), Some(&json!("eu")));
        assert_eq!(id.claim("/org"), Some(&json!({"unit": "eu"})));
        assert_eq!(id.claim("missing"), None);
        assert!(!Identity::agent(Principal("a".into())).has_token());
    }
}
