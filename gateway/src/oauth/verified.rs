//! Tokens verified lately, by their SHA-256. An agent sends the same access token with every
//! request until it expires; its signature needs checking once per key set of its issuer, not
//! once per request. An entry counts only while the issuer's keys are the very set that
//! verified it (any fetch, scheduled or forced, starts afresh) and until the token's `exp`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::jwks::KeySet;
use crate::identity::Identity;

/// How many verified tokens are kept at most; past that, expired ones go, then all.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    identity: Identity,
    /// The token's `exp` (seconds since the epoch).
    exp: i64,
    /// The issuer (its index among the trusted ones) and the key set that verified it.
    issuer: usize,
    keys: Arc<KeySet>,
}

/// A token just verified: who it stands for, its `exp`, its issuer's index, and the key set.
pub struct Verification {
    pub identity: Identity,
    pub exp: i64,
    pub issuer: usize,
    pub keys: Arc<KeySet>,
}

/// The cache of verified tokens.
#[derive(Default)]
pub struct Verified(Mutex<HashMap<[u8; 32], Entry>>);

/// A token's cache key.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Verified {
    /// The identity of a token verified earlier, if its issuer's keys now (`keys_of`) are the
    /// set that verified it and it has not expired at `now` (with `leeway` seconds).
    pub fn hit(
        &self,
        key: &[u8; 32],
        now: i64,
        leeway: i64,
        keys_of: impl Fn(usize) -> Option<Arc<KeySet>>,
    ) -> Option<Identity> {
        let (identity, issuer, keys) = {
            let map = self.0.lock().ok()?;
            let e = map.get(key)?;
            if now > e.exp.saturating_add(leeway) {
                return None;
            }
            (e.identity.clone(), e.issuer, e.keys.clone())
        };
        let current = keys_of(issuer)?;
        Arc::ptr_eq(&keys, &current).then_some(identity)
    }

    /// Remembers a token just verified with `keys`.
    pub fn put(&self, key: [u8; 32], entry: Verification, now: i64) {
        let Ok(mut map) = self.0.lock() else { return };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.exp >= now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(
            key,
            Entry {
                identity: entry.identity,
                exp: entry.exp,
                issuer: entry.issuer,
                keys: entry.keys,
            },
        );
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_shared::Principal;

    fn verification(exp: i64, keys: &Arc<KeySet>) -> Verification {
        Verification {
            identity: Identity::agent(Principal("p".into())),
            exp,
            issuer: 0,
            keys: keys.clone(),
        }
    }

    #[test]
    fn a_token_counts_only_with_the_keys_that_verified_it_and_until_it_expires() {
        let (set, other) = (Arc::new(KeySet::default()), Arc::new(KeySet::default()));
        let v = Verified::default();
        let key = digest("header.payload.signature");
        v.put(key, verification(1_000, &set), 900);
        let now_keys = |_| Some(set.clone());
        assert!(v.hit(&key, 950, 30, now_keys).is_some());
        assert!(
            v.hit(&key, 1_030, 30, now_keys).is_some(),
            "within the leeway"
        );
        assert!(v.hit(&key, 1_031, 30, now_keys).is_none(), "expired");
        assert!(
            v.hit(&key, 950, 30, |_| Some(other.clone())).is_none(),
            "keys fetched again"
        );
        assert!(v.hit(&key, 950, 30, |_| None).is_none(), "no such issuer");
        assert!(
            v.hit(&digest("header.payload.signaturf"), 950, 30, now_keys)
                .is_none()
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let set = Arc::new(KeySet::default());
        let v = Verified::default();
        for i in 0..MAX_ENTRIES + 5 {
            // Half of them expired by `now`, so those go first.
            let exp = if i % 2 == 0 { 10 } else { 1_000 };
            v.put(digest(&i.to_string()), verification(exp, &set), 100);
        }
        assert!(v.len() <= MAX_ENTRIES, "{}", v.len());
        assert!(!v.is_empty());
    }
}
