//! Slack request signing: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw body}`.
//!
//! See Slack's "Verifying requests from Slack". Verification works on the raw bytes as received,
//! never on a re-encoded body, and compares in constant time.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the request's Unix timestamp (seconds).
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Header carrying `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// How far, in seconds and in either direction, a timestamp may be from now.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request is not from Slack (all answer 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("timestamp header is not a whole number of seconds")]
    BadTimestamp,
    #[error("timestamp {timestamp} is {skew} s away from now (limit {MAX_SKEW_SECS} s)")]
    Stale { timestamp: i64, skew: i64 },
    #[error("signature does not match")]
    Mismatch,
}

/// Holds the signing secret and checks requests against it.
#[derive(Clone)]
pub struct Verifier {
    secret: SecretString,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { secret: [redacted] }")
    }
}

impl Verifier {
    /// A verifier for one signing secret.
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
    }

    /// Checks headers and raw body; `now` is Unix seconds.
    pub fn verify(
        &self,
        timestamp: Option<&[u8]>,
        signature: Option<&[u8]>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let timestamp = timestamp.ok_or(SignatureError::MissingHeader(TIMESTAMP_HEADER))?;
        let signature = signature.ok_or(SignatureError::MissingHeader(SIGNATURE_HEADER))?;
        let ts = parse_timestamp(timestamp)?;
        let skew = now.saturating_sub(ts).saturating_abs();
        if skew > MAX_SKEW_SECS {
            return Err(SignatureError::Stale {
                timestamp: ts,
                skew,
            });
        }
        // The base string uses the header exactly as received (already known to be ASCII digits).
        let expected = sign_raw(self.secret.expose_secret().as_bytes(), timestamp, body);
        if bool::from(expected.as_bytes().ct_eq(signature)) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The `X-Slack-Signature` value Slack would send for this timestamp and body.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    sign_raw(secret.as_bytes(), timestamp.as_bytes(), body)
}

fn sign_raw(secret: &[u8], timestamp: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC never matches anyway.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(b"v0:");
    mac.update(timestamp);
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Digits only: `+5`, ` 5` or `5.0` would sign a different string than the one we parse.
fn parse_timestamp(raw: &[u8]) -> Result<i64, SignatureError> {
    if raw.is_empty() || raw.len() > 18 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(SignatureError::BadTimestamp);
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(SignatureError::BadTimestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn verifier() -> Verifier {
        Verifier::new(SecretString::from(SECRET))
    }

    #[test]
    fn window_is_symmetric_and_inclusive() {
        let v = verifier();
        let body = b"payload=x";
        for (ts, now, ok) in [
            (1000, 1300, true),
            (1000, 700, true),
            (1000, 1301, false),
            (1000, 699, false),
        ] {
            let t = ts.to_string();
            let sig = sign(SECRET, &t, body);
            let got = v.verify(Some(t.as_bytes()), Some(sig.as_bytes()), body, now);
            assert_eq!(got.is_ok(), ok, "ts={ts} now={now}: {got:?}");
        }
    }

    #[test]
    fn timestamps_must_be_plain_digits() {
        for raw in [
            "",
            "+1000",
            " 1000",
            "1000.0",
            "-5",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_timestamp(raw.as_bytes()),
                Err(SignatureError::BadTimestamp),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn missing_headers_are_named() {
        let v = verifier();
        assert_eq!(
            v.verify(None, Some(b"v0=00"), b"", 0),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            v.verify(Some(b"0"), None, b"", 0),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn uppercase_hex_is_not_the_signature_slack_sends() {
        let v = verifier();
        let sig = sign(SECRET, "1000", b"a")
            .to_uppercase()
            .replace("V0=", "v0=");
        assert_eq!(
            v.verify(Some(b"1000"), Some(sig.as_bytes()), b"a", 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        assert!(!format!("{:?}", verifier()).contains(SECRET));
    }
}
