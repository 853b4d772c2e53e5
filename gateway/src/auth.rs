//! Agent authentication: bearer tokens checked against the SHA-256 hashes in `AGENT_KEYS_FILE`.

use airlock_shared::Principal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A problem with the agent keys file.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read agent keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid agent keys file: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    agents: Vec<RawAgent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    token_sha256: String,
    /// The Slack user id of the person responsible for the agent (never its approver).
    #[serde(default)]
    owner: Option<String>,
}

/// The known agents.
#[derive(Debug, Default)]
pub struct AgentKeys {
    agents: Vec<(Principal, [u8; 32])>,
    /// Agent name → its owner's Slack user id.
    owners: std::collections::HashMap<String, String>,
}

impl AgentKeys {
    /// Reads and validates the keys file.
    pub fn load(path: &str) -> Result<Self, KeysError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Validates keys file text.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let raw: RawKeys =
            serde_yaml::from_str(text).map_err(|e| KeysError::Invalid(e.to_string()))?;
        let mut agents = Vec::with_capacity(raw.agents.len());
        let mut owners = std::collections::HashMap::new();
        for a in raw.agents {
            if a.name.trim().is_empty() {
                return Err(KeysError::Invalid("an agent needs a non-empty name".into()));
            }
            let is_lower_hex = a.token_sha256.len() == 64
                && a.token_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let mut hash = [0u8; 32];
            if !is_lower_hex || hex::decode_to_slice(&a.token_sha256, &mut hash).is_err() {
                return Err(KeysError::Invalid(format!(
                    "agent {:?}: token_sha256 must be 64 lowercase hex characters",
                    a.name
                )));
            }
            if agents.iter().any(|(p, _): &(Principal, _)| p.0 == a.name) {
                return Err(KeysError::Invalid(format!(
                    "agent {:?} appears twice",
                    a.name
                )));
            }
            if let Some(owner) = a.owner {
                if !is_slack_user_id(&owner) {
                    return Err(KeysError::Invalid(format!(
                        "agent {:?}: owner {owner:?} is not a Slack user id (like U0123ABCD)",
                        a.name
                    )));
                }
                owners.insert(a.name.clone(), owner);
            }
            agents.push((Principal(a.name), hash));
        }
        Ok(Self { agents, owners })
    }

    /// The owner (a Slack user id) of the agent named `principal`, if the keys file names one.
    pub fn owner_of(&self, principal: &str) -> Option<&str> {
        self.owners.get(principal).map(String::as_str)
    }

    /// Every (agent, owner) pair.
    pub fn owners(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.owners.iter().map(|(a, o)| (a.as_str(), o.as_str()))
    }

    /// Whether a static agent is named `name` (an access token may not claim that name).
    pub fn knows(&self, name: &str) -> bool {
        self.agents.iter().any(|(p, _)| p.0 == name)
    }

    /// How many agents are known.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The principal whose token this is. Every entry is compared, in constant time, so the
    /// time taken says nothing about which entry (if any) matched.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (principal, hash) in &self.agents {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found
    }
}

fn is_slack_user_id(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(['U', 'W'])
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The lowercase hex SHA-256 of a token, as the keys file stores it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token from an `Authorization: Bearer …` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_their_hash_only() {
        let keys = AgentKeys::parse(&format!(
            "agents:\n  - name: billing-bot\n    token_sha256: {}\n  - name: other\n    token_sha256: {}\n",
            token_sha256("secret-1"),
            token_sha256("secret-2")
        ))
        .unwrap();
        assert_eq!(
            keys.authenticate("secret-1").map(|p| p.0.as_str()),
            Some("billing-bot")
        );
        assert_eq!(
            keys.authenticate("secret-2").map(|p| p.0.as_str()),
            Some("other")
        );
        assert!(keys.authenticate("secret-3").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(AgentKeys::parse("agents:\n  - name: a\n    token_sha256: ABC\n").is_err());
        assert!(
            AgentKeys::parse(&format!(
                "agents:\n  - name: a\n    token_sha256: {}\n",
                "A".repeat(64)
            ))
            .is_err()
        );
        assert!(AgentKeys::parse("agents:\n  - name: a\n    token: x\n").is_err());
        let h = token_sha256("x");
        assert!(
            AgentKeys::parse(&format!(
                "agents:\n  - {{name: a, token_sha256: {h}}}\n  - {{name: a, token_sha256: {h}}}\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn an_agent_may_name_its_owner() {
        let h = token_sha256("x");
        let keys = AgentKeys::parse(&format!(
            "agents:\n  - {{name: a, token_sha256: {h}, owner: U0CAROL}}\n  - {{name: b, token_sha256: {}}}\n",
            token_sha256("y")
        ))
        .unwrap();
        assert_eq!(keys.owner_of("a"), Some("U0CAROL"));
        assert_eq!(keys.owner_of("b"), None);
        assert_eq!(keys.owners().collect::<Vec<_>>(), vec![("a", "U0CAROL")]);
        let bad = AgentKeys::parse(&format!(
            "agents:\n  - {{name: a, token_sha256: {h}, owner: carol}}\n"
        ));
        assert!(bad.is_err_and(|e| e.to_string().contains("Slack user id")));
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
