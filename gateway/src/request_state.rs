//! The gateway's own `requestState` (2026-07-28 multi round-trip requests).
//!
//! When the upstream answers a forwarded `tools/call` with an `InputRequiredResult`, its
//! `requestState` is wrapped in an envelope the gateway signs: the ticket that approved the call
//! (if one did), the canonical request hash, the principal, an expiry, and the upstream's own
//! state. The client's retry brings the envelope back; only a verified envelope for the very same
//! call lets the retry skip a second approval, and the upstream always gets its own state back.
//! The client must treat the state as opaque (the spec says so), so it never looks inside.

use std::time::Duration;

use airlock_shared::{TicketId, canonical};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every state the gateway issues starts with this (the envelope's format, version 1).
const PREFIX: &str = "airlock1.";
/// The envelope's version, inside the signed payload too.
const VERSION: u8 = 1;

/// Why a retry's `requestState` is refused (-32602; nothing is forwarded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestStateError {
    #[error("requestState was not issued by this gateway (or is malformed)")]
    Malformed,
    #[error("requestState failed verification: tampered with, or issued under another key")]
    BadSignature,
    #[error("requestState has expired; send the call again without it")]
    Expired,
    #[error("requestState belongs to another call (the tool or its arguments differ)")]
    OtherCall,
    #[error("requestState was issued to another agent")]
    OtherPrincipal,
}

/// The signed payload.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u8,
    /// The ticket a person approved for this call, if one did.
    ticket: Option<Uuid>,
    /// `canonical::request_hash` of the tool and arguments.
    hash: String,
    principal: String,
    /// Expiry, Unix milliseconds.
    exp: i64,
    /// The upstream's own `requestState`, if it gave one.
    state: Option<String>,
}

/// What a verified state says about the retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continued {
    /// The ticket that approved the original call: the retry is not held again.
    pub ticket: Option<TicketId>,
    /// What the upstream gets back as its `requestState` (absent when it gave none).
    pub upstream_state: Option<String>,
}

/// The key and lifetime of the states this gateway issues.
pub struct RequestStates {
    /// Keyed once at start; each use works on a clone.
    mac: Hmac<Sha256>,
    ttl: Duration,
}

/// The key could not key an HMAC (never for SHA-256, which takes keys of any length).
#[derive(Debug, thiserror::Error)]
#[error("REQUEST_STATE_KEY cannot key HMAC-SHA256")]
pub struct KeyError;

impl std::fmt::Debug for RequestStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStates")
            .field("mac", &"[redacted]")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The call a state is issued for.
pub struct Issue<'a> {
    pub ticket: Option<TicketId>,
    pub request_hash: &'a str,
    pub principal: &'a str,
}

impl RequestStates {
    /// With `REQUEST_STATE_KEY`, or a random key of this process when it is unset (states then
    /// do not survive a restart and are not accepted by other replicas; warned at start).
    pub fn new(key: Option<&SecretString>, ttl: Duration) -> Result<Self, KeyError> {
        let mac = match key {
            Some(k) => Hmac::<Sha256>::new_from_slice(k.expose_secret().as_bytes()),
            None => {
                tracing::warn!("REQUEST_STATE_KEY is not set: using a random key; continuations of calls (requestState) do not survive a restart and are not accepted by other replicas");
                Hmac::<Sha256>::new_from_slice(&rand::random::<[u8; 32]>())
            }
        }
        .map_err(|_| KeyError)?;
        Ok(Self { mac, ttl })
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }

    /// The state the client gets in place of the upstream's `upstream` at `now`.
    pub fn seal(&self, call: &Issue<'_>, upstream: Option<String>, now: DateTime<Utc>) -> String {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let env = Envelope {
            v: VERSION,
            ticket: call.ticket.map(|t| t.0),
            hash: call.request_hash.to_owned(),
            principal: call.principal.to_owned(),
            exp: now
                .checked_add_signed(ttl)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
                .timestamp_millis(),
            state: upstream,
        };
        // Serialising a struct of strings and numbers cannot fail.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&env).unwrap_or_default());
        let signed = format!("{PREFIX}{payload}");
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{tag}")
    }

    /// Verifies a retry's `requestState` (signature first, in constant time; then expiry, the
    /// principal, and the call) and says how the retry continues.
    pub fn open(
        &self,
        wire: &Value,
        tool: &str,
        arguments: &Value,
        principal: &str,
        now: DateTime<Utc>,
    ) -> Result<Continued, RequestStateError> {
        let s = wire.as_str().ok_or(RequestStateError::Malformed)?;
        let (signed, tag) = s.rsplit_once('.').ok_or(RequestStateError::Malformed)?;
        let payload = signed
            .strip_prefix(PREFIX)
            .ok_or(RequestStateError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| RequestStateError::Malformed)?;
        let mut mac = self.mac();
        mac.update(signed.as_bytes());
        let expected = mac.finalize().into_bytes();
        if !bool::from(expected.as_slice().ct_eq(&tag)) {
            return Err(RequestStateError::BadSignature);
        }
        let env: Envelope = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|e: &Envelope| e.v == VERSION)
            .ok_or(RequestStateError::Malformed)?;
        if now.timestamp_millis() >= env.exp {
            return Err(RequestStateError::Expired);
        }
        if env.principal != principal {
            return Err(RequestStateError::OtherPrincipal);
        }
        if env.hash != canonical::request_hash(tool, arguments) {
            return Err(RequestStateError::OtherCall);
        }
        Ok(Continued {
            ticket: env.ticket.map(TicketId),
            upstream_state: env.state,
        })
    }
}

/// The request body with the upstream's own `requestState` in place of ours (or none, when the
/// upstream gave none); `None` when the body is not a JSON object with params.
pub fn restore(body: &Bytes, upstream_state: Option<&str>) -> Option<Bytes> {
    let mut msg: Value = serde_json::from_slice(body).ok()?;
    let params = msg.get_mut("params")?.as_object_mut()?;
    match upstream_state {
        Some(s) => params.insert("requestState".to_owned(), Value::String(s.to_owned())),
        None => params.remove("requestState"),
    };
    serde_json::to_vec(&msg).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn states(key: &str) -> RequestStates {
        RequestStates::new(
            Some(&SecretString::from(key.to_owned())),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn issue(states: &RequestStates, ticket: Option<TicketId>, now: DateTime<Utc>) -> Value {
        let hash = canonical::request_hash("create_refund", &json!({"amount": 500}));
        let call = Issue {
            ticket,
            request_hash: &hash,
            principal: "billing-bot",
        };
        Value::String(states.seal(&call, Some("up-1".into()), now))
    }

    #[test]
    fn a_sealed_state_opens_for_the_same_call_only() {
        let s = states("k1-0123456789abcdef0123456789abcdef");
        let now = Utc::now();
        let t = TicketId::new();
        let wire = issue(&s, Some(t), now);
        let args = json!({"amount": 500});
        let ok = s.open(&wire, "create_refund", &args, "billing-bot", now);
        assert_eq!(
            ok,
            Ok(Continued {
                ticket: Some(t),
                upstream_state: Some("up-1".into())
            })
        );
        let other = s.open(
            &wire,
            "create_refund",
            &json!({"amount": 501}),
            "billing-bot",
            now,
        );
        assert_eq!(other, Err(RequestStateError::OtherCall));
        let who = s.open(&wire, "create_refund", &args, "other-bot", now);
        assert_eq!(who, Err(RequestStateError::OtherPrincipal));
        let late = now + chrono::Duration::seconds(61);
        let expired = s.open(&wire, "create_refund", &args, "billing-bot", late);
        assert_eq!(expired, Err(RequestStateError::Expired));
    }

    #[test]
    fn tampered_foreign_and_malformed_states_are_refused() {
        let (a, b) = (
            states("key-a-0123456789abcdef0123456789ab"),
            states("key-b-0123456789abcdef0123456789ab"),
        );
        let now = Utc::now();
        let wire = issue(&a, None, now);
        let args = json!({"amount": 500});
        let open =
            |s: &RequestStates, w: &Value| s.open(w, "create_refund", &args, "billing-bot", now);
        assert_eq!(open(&b, &wire), Err(RequestStateError::BadSignature));
        // Flip one character of the payload: the tag no longer matches.
        let text = wire.as_str().unwrap();
        let i = PREFIX.len() + 3;
        let flipped = if &text[i..=i] == "A" { "B" } else { "A" };
        let tampered = format!("{}{flipped}{}", &text[..i], &text[i + 1..]);
        assert_eq!(
            open(&a, &json!(tampered)),
            Err(RequestStateError::BadSignature)
        );
        for junk in [
            json!("eyJsb2NhdGlvbiI6Ik5ldyBZb3JrIn0"),
            json!(42),
            json!("airlock1.x.%%"),
        ] {
            assert_eq!(open(&a, &junk), Err(RequestStateError::Malformed), "{junk}");
        }
    }

    #[test]
    fn the_upstream_gets_its_own_state_back_or_none() {
        let body = Bytes::from(
            json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","requestState":"ours"}})
                .to_string(),
        );
        let back: Value = serde_json::from_slice(&restore(&body, Some("theirs")).unwrap()).unwrap();
        assert_eq!(back["params"]["requestState"], "theirs");
        let none: Value = serde_json::from_slice(&restore(&body, None).unwrap()).unwrap();
        assert!(none["params"].get("requestState").is_none());
    }
}
