//! Which revisions the upstream speaks: told by `UPSTREAM_ERA`, or learnt from a
//! `server/discover` probe whose answer is kept for a while and dropped when it is doubted.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::era::MODERN;
use crate::transport::SUPPORTED_PROTOCOL_VERSIONS;

/// `UPSTREAM_ERA`: what the operator says the upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamEra {
    /// Probe with `server/discover` and bridge only where the upstream lacks a revision.
    Auto,
    /// Only 2026-07-28: sessions of the older revisions are bridged.
    Modern,
    /// Only the revisions before 2026-07-28: stateless requests are bridged.
    Legacy,
    /// Both: every request is relayed in its own revision, nothing is bridged.
    Both,
}

impl FromStr for UpstreamEra {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "modern" => Ok(Self::Modern),
            "legacy" => Ok(Self::Legacy),
            "both" => Ok(Self::Both),
            other => Err(format!(
                "expected auto, modern, legacy or both, got {other:?}"
            )),
        }
    }
}

/// The revisions the upstream speaks: 2026-07-28 (modern), the older ones (legacy), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speaks {
    /// 2026-07-28.
    pub modern: bool,
    /// The older revisions, as far as told: `server/discover` may leave them out, so only an
    /// `initialize` refused settles that they are gone (see `Bridge::open`).
    pub legacy: bool,
}

impl Speaks {
    /// An upstream of the older revisions only.
    pub const LEGACY_ONLY: Self = Self {
        modern: false,
        legacy: true,
    };
    /// An upstream of 2026-07-28 only.
    pub const MODERN_ONLY: Self = Self {
        modern: true,
        legacy: false,
    };
    /// A dual-era upstream.
    pub const BOTH: Self = Self {
        modern: true,
        legacy: true,
    };

    /// What a list of protocol versions (`supportedVersions`, or an error's `supported`) says;
    /// versions the gateway does not speak count for nothing.
    fn from_versions(versions: &[Value]) -> Self {
        let known = versions
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| SUPPORTED_PROTOCOL_VERSIONS.contains(v));
        let mut s = Self {
            modern: false,
            legacy: false,
        };
        for v in known {
            match v == MODERN {
                true => s.modern = true,
                false => s.legacy = true,
            }
        }
        s
    }
}

impl UpstreamEra {
    /// What the setting fixes, if it fixes anything.
    pub fn fixed(self) -> Option<Speaks> {
        match self {
            Self::Auto => None,
            Self::Modern => Some(Speaks::MODERN_ONLY),
            Self::Legacy => Some(Speaks::LEGACY_ONLY),
            Self::Both => Some(Speaks::BOTH),
        }
    }
}

/// MCP's own error codes of 2026-07-28: an answer carrying one comes from a modern server.
const MODERN_ERRORS: &[i64] = &[-32020, -32021, -32022];

/// What the answer to a `server/discover` probe says: None when it says nothing (the upstream
/// is down or broken), so the probe is made again next time.
pub fn classify(status: u16, response: Option<&Value>) -> Option<Speaks> {
    // An outage, or a refusal of who asks rather than of what (auth, rate limits), says nothing
    // about the revisions.
    if status >= 500 || matches!(status, 401 | 403 | 407 | 408 | 429) {
        return None;
    }
    if let Some(result) = response.and_then(|r| r.get("result")) {
        return Some(
            match result.get("supportedVersions").and_then(Value::as_array) {
                Some(v) => Speaks::from_versions(v),
                // A discover result without versions still comes from a modern server.
                None => Speaks::MODERN_ONLY,
            },
        );
    }
    let code = response
        .and_then(|r| r.pointer("/error/code"))
        .and_then(Value::as_i64);
    match code {
        Some(c) if MODERN_ERRORS.contains(&c) => {
            let supported = response
                .and_then(|r| r.pointer("/error/data/supported"))
                .and_then(Value::as_array);
            Some(supported.map_or(Speaks::MODERN_ONLY, |v| Speaks::from_versions(v)))
        }
        // Every modern server implements `server/discover`; any other refusal (no session, method
        // not found, a bare 4xx) comes from one of the older revisions (the spec's fallback rule).
        Some(_) | None => Some(Speaks::LEGACY_ONLY),
    }
}

/// A fact learnt from the upstream, trusted for `max_age` (the spec: cache the era per origin,
/// re-probe when the assumption fails).
pub struct Fresh<T> {
    known: Mutex<Option<(T, Instant)>>,
    max_age: Duration,
}

/// What the last `server/discover` probe said.
pub type EraCache = Fresh<Speaks>;

impl<T: Copy> Fresh<T> {
    /// Nothing known yet; what is learnt is trusted for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            known: Mutex::new(None),
            max_age,
        }
    }

    /// The fact as of `now`, if it was learnt recently enough.
    pub fn get(&self, now: Instant) -> Option<T> {
        let known = self.known.lock().ok()?;
        known
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.max_age)
            .map(|(v, _)| v)
    }

    /// Keeps a fact learnt at `now`.
    pub fn put(&self, value: T, now: Instant) {
        if let Ok(mut k) = self.known.lock() {
            *k = Some((value, now));
        }
    }

    /// Drops the fact: the upstream did not behave as it said.
    pub fn forget(&self) {
        if let Ok(mut k) = self.known.lock() {
            *k = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_discover_answer_tells_the_eras() {
        let both = json!({"result": {"supportedVersions": ["2025-06-18", "2026-07-28"]}});
        assert_eq!(classify(200, Some(&both)), Some(Speaks::BOTH));
        let modern = json!({"result": {"supportedVersions": ["2026-07-28", "2099-01-01"]}});
        assert_eq!(classify(200, Some(&modern)), Some(Speaks::MODERN_ONLY));
        let unsupported = json!({"error": {"code": -32022, "data": {"supported": ["2025-11-25"]}}});
        assert_eq!(classify(400, Some(&unsupported)), Some(Speaks::LEGACY_ONLY));
        let mismatch = json!({"error": {"code": -32020}});
        assert_eq!(classify(400, Some(&mismatch)), Some(Speaks::MODERN_ONLY));
    }

    #[test]
    fn any_other_refusal_means_the_older_revisions_and_an_outage_means_nothing() {
        let not_found = json!({"error": {"code": -32601, "message": "Method not found"}});
        assert_eq!(classify(200, Some(&not_found)), Some(Speaks::LEGACY_ONLY));
        assert_eq!(classify(404, Some(&not_found)), Some(Speaks::LEGACY_ONLY));
        assert_eq!(classify(400, None), Some(Speaks::LEGACY_ONLY));
        assert_eq!(classify(503, None), None);
        assert_eq!(classify(500, Some(&not_found)), None);
        assert_eq!(classify(401, None), None);
        assert_eq!(classify(429, None), None);
    }

    #[test]
    fn the_answer_is_kept_for_its_age_and_dropped_when_doubted() {
        let cache = EraCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(cache.get(t0), None);
        cache.put(Speaks::LEGACY_ONLY, t0);
        assert_eq!(
            cache.get(t0 + Duration::from_secs(59)),
            Some(Speaks::LEGACY_ONLY)
        );
        assert_eq!(cache.get(t0 + Duration::from_secs(60)), None);
        cache.put(Speaks::BOTH, t0);
        cache.forget();
        assert_eq!(cache.get(t0), None);
    }

    #[test]
    fn the_setting_parses_and_fixes_what_it_names() {
        assert_eq!("auto".parse::<UpstreamEra>().unwrap().fixed(), None);
        assert_eq!(
            "legacy".parse::<UpstreamEra>().unwrap().fixed(),
            Some(Speaks::LEGACY_ONLY)
        );
        assert_eq!(
            "modern".parse::<UpstreamEra>().unwrap().fixed(),
            Some(Speaks::MODERN_ONLY)
        );
        assert_eq!(
            "both".parse::<UpstreamEra>().unwrap().fixed(),
            Some(Speaks::BOTH)
        );
        assert!("sometimes".parse::<UpstreamEra>().is_err());
    }
}
