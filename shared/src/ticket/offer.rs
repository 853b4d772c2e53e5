//! What a ticket offers when its rule allows a standing grant: the scope and duration an
//! "Approve for" click would give, stored on the ticket so the notifier needs no policy.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Ticket;

/// What a grant covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantScope {
    /// Any call of the tool (that the same rule holds).
    Tool,
    /// Only calls with exactly the same arguments (the same canonical request hash).
    Arguments,
}

impl GrantScope {
    /// The spelling in the database and in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Arguments => "arguments",
        }
    }
}

impl fmt::Display for GrantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope string the database should never hold.
#[derive(Debug, thiserror::Error)]
#[error("unknown grant scope {0:?}")]
pub struct UnknownScope(pub String);

impl FromStr for GrantScope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tool" => Ok(Self::Tool),
            "arguments" => Ok(Self::Arguments),
            other => Err(UnknownScope(other.to_owned())),
        }
    }
}

impl TryFrom<String> for GrantScope {
    type Error = UnknownScope;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// What a ticket offers: the grant an "Approve for" click would create (stored on the ticket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantOffer {
    /// How long the grant lasts from the decision.
    pub lasts: Duration,
    pub scope: GrantScope,
    /// SHA-256 of the rule's canonical form when the call was held.
    pub rule_hash: String,
}

impl GrantOffer {
    /// The offer a ticket row carries, if any.
    pub fn of(t: &Ticket) -> Option<Self> {
        let secs = u64::try_from(t.grant_for_secs?).ok()?;
        Some(Self {
            lasts: Duration::from_secs(secs),
            scope: t.grant_scope.as_deref()?.parse().ok()?,
            rule_hash: t.grant_rule_hash.clone()?,
        })
    }

    /// The whole seconds stored on the ticket (at least one).
    pub fn secs(&self) -> i32 {
        i32::try_from(self.lasts.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_spellings_round_trip() {
        for s in [GrantScope::Tool, GrantScope::Arguments] {
            assert_eq!(s.as_str().parse::<GrantScope>().ok(), Some(s));
        }
        assert!("call".parse::<GrantScope>().is_err());
    }
}
