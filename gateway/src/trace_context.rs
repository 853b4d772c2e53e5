//! W3C trace context carried in a request's `_meta` (`traceparent`, `tracestate`): checked for
//! shape before it is recorded on tickets and audit rows. The request body itself goes upstream
//! unchanged, so the upstream sees exactly what the client sent, valid or not; a malformed
//! value is only left unrecorded, never a reason to refuse a call.

use airlock_shared::otel::Carrier;
use axum::http::HeaderMap;
use serde_json::Value;

/// The longest `tracestate` W3C allows (32 members of at most 256 bytes each, but 512 in all).
const MAX_TRACESTATE: usize = 512;
/// The most list members a `tracestate` may have.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The trace context worth recording for one call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// A `traceparent` of valid shape.
    pub traceparent: Option<String>,
    /// The `tracestate`, kept only beside a valid `traceparent` (W3C: without one it is void).
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// What of `params._meta`'s trace context can be recorded.
    pub fn from_params(params: &Value) -> Self {
        let meta = params.get("_meta");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        let Some(parent) = field("traceparent").filter(|p| is_traceparent(p)) else {
            return Self::default();
        };
        Self {
            traceparent: Some(parent.to_owned()),
            tracestate: field("tracestate")
                .filter(|s| is_tracestate(s))
                .map(str::to_owned),
        }
    }

    /// The parent of the gateway's span for this call: the HTTP `traceparent` header (with its
    /// `tracestate`) when it is valid, else this `_meta` context. Both empty: a trace of its own.
    pub fn parent(&self, headers: &HeaderMap) -> Carrier {
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        match header("traceparent").filter(|p| is_traceparent(p)) {
            Some(p) => Carrier::new(
                Some(p.to_owned()),
                header("tracestate")
                    .filter(|s| is_tracestate(s))
                    .map(str::to_owned),
            ),
            None => Carrier::new(self.traceparent.clone(), self.tracestate.clone()),
        }
    }

    /// What a new ticket keeps: with OpenTelemetry on, the current span (the call's, in the
    /// agent's trace), so that the click and the message update join the trace under it;
    /// without, what the agent sent, as before.
    pub fn for_ticket(&self) -> Carrier {
        Carrier::current()
            .unwrap_or_else(|| Carrier::new(self.traceparent.clone(), self.tracestate.clone()))
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `version-traceid-parentid-flags` in lowercase hex; version `ff`, an all-zero trace id and an
/// all-zero parent id are invalid. Version 00 has exactly these four fields; a later version
/// may append more after a `-`, which a 00 parser must accept.
pub fn is_traceparent(s: &str) -> bool {
    if s.len() < 55 || !s.is_ascii() {
        return false;
    }
    let (head, rest) = s.split_at(55);
    let parts: Vec<&str> = head.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return false;
    };
    let shapes = [(version, 2), (trace_id, 32), (parent_id, 16), (flags, 2)];
    if !shapes.iter().all(|(p, n)| p.len() == *n && is_lower_hex(p)) {
        return false;
    }
    if *version == "ff"
        || trace_id.bytes().all(|b| b == b'0')
        || parent_id.bytes().all(|b| b == b'0')
    {
        return false;
    }
    match *version {
        "00" => rest.is_empty(),
        _ => rest.is_empty() || rest.starts_with('-'),
    }
}

/// A `tracestate` that can be stored as it is: visible ASCII and spaces, at most 512 characters
/// and 32 comma-separated members, each `key=value`.
pub fn is_tracestate(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_TRACESTATE || !s.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return false;
    }
    let members: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    members.len() <= MAX_TRACESTATE_MEMBERS
        && members.iter().all(|m| {
            m.split_once('=')
                .is_some_and(|(k, v)| !k.is_empty() && !v.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept_with_its_tracestate() {
        let t = TraceContext::from_params(
            &json!({"_meta": {"traceparent": GOOD, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}}),
        );
        assert_eq!(t.traceparent.as_deref(), Some(GOOD));
        assert_eq!(
            t.tracestate.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );
    }

    #[test]
    fn malformed_traceparents_are_not_recorded_nor_their_tracestate() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7",
            "00-0AF7651916CD43DD8448EB211C80319C-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-extra",
            "00_0af7651916cd43dd8448eb211c80319c_00f067aa0ba902b7_01",
            "zz-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad:?}");
            let t = TraceContext::from_params(
                &json!({"_meta": {"traceparent": bad, "tracestate": "a=b"}}),
            );
            assert_eq!(t, TraceContext::default(), "{bad:?}");
        }
        let not_a_string = TraceContext::from_params(&json!({"_meta": {"traceparent": 7}}));
        assert_eq!(not_a_string, TraceContext::default());
    }

    #[test]
    fn the_header_wins_over_meta_when_it_is_valid() {
        let meta = TraceContext::from_params(&json!({"_meta": {"traceparent": GOOD}}));
        let other = "00-11111111111111111111111111111111-2222222222222222-01";
        let mut headers = HeaderMap::new();
        assert_eq!(meta.parent(&headers).traceparent.as_deref(), Some(GOOD));
        headers.insert("traceparent", "not-one".parse().unwrap());
        assert_eq!(meta.parent(&headers).traceparent.as_deref(), Some(GOOD));
        headers.insert("traceparent", other.parse().unwrap());
        headers.insert("tracestate", "k=v".parse().unwrap());
        let p = meta.parent(&headers);
        assert_eq!(p.traceparent.as_deref(), Some(other));
        assert_eq!(p.tracestate.as_deref(), Some("k=v"));
        assert_eq!(
            TraceContext::default().parent(&HeaderMap::new()),
            Carrier::default()
        );
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        assert!(is_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-what-comes-next"
        ));
        assert!(!is_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01what"
        ));
    }

    #[test]
    fn a_bad_tracestate_is_dropped_but_the_traceparent_kept() {
        for bad in [
            "novalue",
            "a=b,\u{7}=c",
            &"k=v,".repeat(40),
            &"x".repeat(600),
        ] {
            let t = TraceContext::from_params(
                &json!({"_meta": {"traceparent": GOOD, "tracestate": bad}}),
            );
            assert_eq!(t.traceparent.as_deref(), Some(GOOD));
            assert_eq!(t.tracestate, None, "{bad:?}");
        }
    }
}
