//! Identifiers of the domain.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one approval ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketId(pub Uuid);

impl TicketId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for TicketId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A string that is not a ticket id.
#[derive(Debug, thiserror::Error)]
#[error("not a valid ticket id: {0:?}")]
pub struct InvalidTicketId(pub String);

impl FromStr for TicketId {
    type Err = InvalidTicketId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the hyphenated form: that is what we put on buttons.
        if s.len() != 36 {
            return Err(InvalidTicketId(s.chars().take(64).collect()));
        }
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| InvalidTicketId(s.chars().take(64).collect()))
    }
}

/// The authenticated agent behind a request (the name from the agent keys file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Principal(pub String);

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An MCP session id as the gateway hands it to clients.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl SessionId {
    /// A fresh, unguessable session id.
    pub fn new() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }

    /// The scope of calls made without a session (MCP 2026-07-28): their lock, held calls and
    /// ticket reattachment are keyed by the principal instead. Minted ids are 32 hex digits and
    /// never contain `:`, so the two kinds never meet.
    pub fn of_principal(principal: &Principal) -> Self {
        Self(format!("principal:{}", principal.0))
    }

    /// Whether this is a principal's scope rather than a session.
    pub fn is_principal_scope(&self) -> bool {
        self.0.starts_with("principal:")
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_id_round_trips_and_rejects_junk() {
        let id = TicketId::new();
        assert_eq!(id.to_string().parse::<TicketId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<TicketId>().is_err());
        assert!("".parse::<TicketId>().is_err());
        // The simple (unhyphenated) form is not what buttons carry.
        assert!(id.0.simple().to_string().parse::<TicketId>().is_err());
    }
}
