//! Canonical JSON and the request hash that lets a retried call find its ticket.

use sha2::{Digest, Sha256};

/// Writes `v` with object keys sorted and no insignificant whitespace.
pub fn to_canonical_string(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lowercase hex SHA-256 of the canonical form of a tool call (name and arguments).
pub fn request_hash(tool: &str, arguments: &serde_json::Value) -> String {
    let body = serde_json::json!({ "tool": tool, "arguments": arguments });
    hex::encode(Sha256::digest(to_canonical_string(&body).as_bytes()))
}

/// How many hex characters of a fingerprint the approver sees (and the button carries): 64 bits,
/// enough that nobody can make two calls look alike on purpose within a ticket's lifetime.
pub const FINGERPRINT_SHOWN: usize = 16;

/// Lowercase hex SHA-256 of the canonical call an approver is asked about: the tool, its
/// arguments and, where one exists, the policy revision that held it.
pub fn fingerprint(tool: &str, arguments: &serde_json::Value, revision: Option<&str>) -> String {
    let body = match revision {
        Some(r) => serde_json::json!({ "tool": tool, "arguments": arguments, "revision": r }),
        None => serde_json::json!({ "tool": tool, "arguments": arguments }),
    };
    hex::encode(Sha256::digest(to_canonical_string(&body).as_bytes()))
}

/// The part of a fingerprint that is shown and carried by the buttons.
pub fn short_fingerprint(fingerprint: &str) -> &str {
    fingerprint.get(..FINGERPRINT_SHOWN).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_spacing_do_not_change_the_hash() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"é","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(request_hash("t", &a), request_hash("t", &b));
        assert_ne!(request_hash("t", &a), request_hash("u", &a));
        assert_ne!(
            request_hash("t", &a),
            request_hash("t", &json!({"b": 2, "a": {"x": "é", "y": [1, 2]}}))
        );
        assert_eq!(
            to_canonical_string(&b),
            r#"{"a":{"x":"é","y":[1,2]},"b":1}"#
        );
    }

    #[test]
    fn the_fingerprint_covers_tool_arguments_and_revision() {
        let args = json!({"amount": 250, "charge_id": "ch_1"});
        let f = fingerprint("create_refund", &args, None);
        assert_eq!(f.len(), 64);
        assert_eq!(
            f,
            fingerprint(
                "create_refund",
                &json!({"charge_id": "ch_1", "amount": 250}),
                None
            )
        );
        assert_ne!(
            f,
            fingerprint(
                "create_refund",
                &json!({"amount": 251, "charge_id": "ch_1"}),
                None
            )
        );
        assert_ne!(f, fingerprint("create_charge", &args, None));
        assert_ne!(f, fingerprint("create_refund", &args, Some("r2")));
        assert_eq!(short_fingerprint(&f).len(), FINGERPRINT_SHOWN);
        assert!(f.starts_with(short_fingerprint(&f)));
    }
}
