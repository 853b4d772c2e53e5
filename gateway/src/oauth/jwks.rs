//! An issuer's signing keys: found through its metadata, cached, and fetched again on a
//! schedule or when a token names a key the cache lacks (at most once per interval, so a flood
//! of tokens with made-up `kid`s cannot make the gateway hammer the issuer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::IntCounterVec;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Why an issuer's keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch {url}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "no authorization server metadata for issuer {0} (tried RFC 8414 and OpenID discovery)"
    )]
    NoMetadata(String),
    #[error("metadata of {issuer} names issuer {named:?}")]
    IssuerMismatch { issuer: String, named: String },
    #[error("metadata of {0} has no jwks_uri")]
    NoJwksUri(String),
    #[error("JWKS of {0} is not a JSON object with keys")]
    BadJwks(String),
}

/// A usable public key and what it may verify.
pub struct Key {
    pub decoding: DecodingKey,
    jwk: Jwk,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: the key's type and curve must be
    /// the algorithm's, and an `alg` on the key must be that algorithm (no confusion attacks).
    pub fn fits(&self, alg: Algorithm) -> bool {
        let family_fits = match &self.jwk.algorithm {
            AlgorithmParameters::RSA(_) => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            AlgorithmParameters::EllipticCurve(p) => matches!(
                (&p.curve, alg),
                (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
            ),
            AlgorithmParameters::OctetKeyPair(p) => {
                p.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
            }
            // A shared secret in a public key set is never a way to verify anything.
            AlgorithmParameters::OctetKey(_) => false,
        };
        let alg_fits = self
            .jwk
            .common
            .key_algorithm
            .is_none_or(|k| key_algorithm(k) == Some(alg));
        family_fits && alg_fits
    }
}

fn key_algorithm(k: KeyAlgorithm) -> Option<Algorithm> {
    match k {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        KeyAlgorithm::HS256
        | KeyAlgorithm::HS384
        | KeyAlgorithm::HS512
        | KeyAlgorithm::RSA1_5
        | KeyAlgorithm::RSA_OAEP
        | KeyAlgorithm::RSA_OAEP_256
        | KeyAlgorithm::UNKNOWN_ALGORITHM => None,
    }
}

/// The keys of one fetch: by `kid`, and those without one.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    unnamed: Vec<Arc<Key>>,
}

impl KeySet {
    /// Reads a JWKS document, keeping the signing keys it can use and skipping the rest (an
    /// encryption key or an unknown key type beside them is no reason to refuse the set).
    pub fn parse(doc: &Value) -> Option<Self> {
        let keys = doc.get("keys")?.as_array()?;
        let mut set = Self::default();
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                continue;
            };
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != PublicKeyUse::Signature)
            {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let kid = jwk.common.key_id.clone();
            let key = Arc::new(Key { decoding, jwk });
            match kid {
                Some(k) => {
                    set.by_kid.insert(k, key);
                }
                None => set.unnamed.push(key),
            }
        }
        Some(set)
    }

    /// The key for a token's header: by `kid`; without one, the only key that fits `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        match kid {
            Some(k) => self.by_kid.get(k).filter(|key| key.fits(alg)).cloned(),
            None => {
                let mut fitting = self
                    .by_kid
                    .values()
                    .chain(&self.unnamed)
                    .filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only.clone()),
                    (Some(_), Some(_)) | (None, _) => None,
                }
            }
        }
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One trusted issuer and its cached keys.
pub struct Issuer {
    /// The issuer identifier, as `iss` carries it.
    pub id: Arc<str>,
    keys: ArcSwap<KeySet>,
    /// Serialises fetches; holds when the last fetch forced by an unknown key was made.
    fetching: Mutex<Option<Instant>>,
    min_interval: Duration,
    http: reqwest::Client,
    /// `airlock_oauth_jwks_fetches_total`.
    fetches: IntCounterVec,
}

/// The metadata documents an issuer may publish, in the order tried (RFC 8414 puts the
/// well-known segment before the issuer's path; OpenID Connect Discovery after it).
fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let Ok(url) = url::Url::parse(trimmed) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{origin}/.well-known/openid-configuration{path}"),
        format!("{trimmed}/.well-known/openid-configuration"),
    ];
    urls.dedup();
    urls
}

impl Issuer {
    /// An issuer whose keys are not fetched yet.
    pub fn new(
        id: &str,
        min_interval: Duration,
        http: reqwest::Client,
        fetches: IntCounterVec,
    ) -> Self {
        Self {
            id: Arc::from(id),
            keys: ArcSwap::from_pointee(KeySet::default()),
            fetching: Mutex::new(None),
            min_interval,
            http,
            fetches,
        }
    }

    /// The key set in force now; a new fetch replaces it with another.
    pub fn current_keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// The key for a token's `kid` and `alg`: from the cache, else after one fetch, unless a
    /// fetch for an unknown key was made less than the minimum interval ago.
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<Key>> {
        if let Some(k) = self.keys.load().find(kid, alg) {
            return Some(k);
        }
        let mut last = self.fetching.lock().await;
        // Another request may have fetched while this one waited.
        if let Some(k) = self.keys.load().find(kid, alg) {
            return Some(k);
        }
        if last.is_some_and(|at| at.elapsed() < self.min_interval) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_locked().await {
            tracing::warn!(issuer = %self.id, error = %airlock_shared::telemetry::chain(&e), "cannot refresh the issuer's keys");
        }
        self.keys.load().find(kid, alg)
    }

    /// Fetches the keys again (the schedule); the old ones stay if the fetch fails.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _serial = self.fetching.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, JwksError> {
        let fetched = self.fetch_keys().await;
        let outcome = if fetched.is_ok() { "ok" } else { "failed" };
        self.fetches.with_label_values(&[&*self.id, outcome]).inc();
        fetched
    }

    async fn fetch_keys(&self) -> Result<usize, JwksError> {
        let jwks_uri = self.jwks_uri().await?;
        let doc = self.get_json(&jwks_uri).await?;
        let set = KeySet::parse(&doc).ok_or_else(|| JwksError::BadJwks(self.id.to_string()))?;
        let n = set.len();
        self.keys.store(Arc::new(set));
        tracing::debug!(issuer = %self.id, keys = n, "issuer keys loaded");
        Ok(n)
    }

    async fn jwks_uri(&self) -> Result<String, JwksError> {
        for url in metadata_urls(&self.id) {
            let meta = match self.get_json(&url).await {
                Ok(m) => m,
                Err(JwksError::Status { .. }) => continue,
                Err(e) => return Err(e),
            };
            let named = meta.get("issuer").and_then(Value::as_str).unwrap_or("");
            // RFC 8414 §3.3: metadata for another issuer must not be used.
            if named != &*self.id {
                return Err(JwksError::IssuerMismatch {
                    issuer: self.id.to_string(),
                    named: named.to_owned(),
                });
            }
            return meta
                .get("jwks_uri")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| JwksError::NoJwksUri(self.id.to_string()));
        }
        Err(JwksError::NoMetadata(self.id.to_string()))
    }

    async fn get_json(&self, url: &str) -> Result<Value, JwksError> {
        let fetch = |source| JwksError::Fetch {
            url: url.to_owned(),
            source,
        };
        let resp = self.http.get(url).send().await.map_err(fetch)?;
        if !resp.status().is_success() {
            return Err(JwksError::Status {
                url: url.to_owned(),
                status: resp.status().as_u16(),
            });
        }
        resp.json().await.map_err(fetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_urls_follow_both_specs() {
        assert_eq!(
            metadata_urls("https://as.example"),
            vec![
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_urls("https://as.example/tenant/"),
            vec![
                "https://as.example/.well-known/oauth-authorization-server/tenant",
                "https://as.example/.well-known/openid-configuration/tenant",
                "https://as.example/tenant/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn a_key_fits_only_its_own_algorithm() {
        let set = KeySet::parse(&json!({"keys": [
            {"kty": "EC", "kid": "ec", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "enc", "use": "enc", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird", "kid": "w"},
        ]}))
        .unwrap();
        assert!(set.find(Some("ec"), Algorithm::ES256).is_some());
        assert!(set.find(Some("ec"), Algorithm::RS256).is_none());
        assert!(set.find(Some("ec"), Algorithm::ES384).is_none());
        assert!(set.find(Some("secret"), Algorithm::RS256).is_none());
        assert!(set.find(Some("enc"), Algorithm::ES256).is_none());
        assert!(set.find(None, Algorithm::ES256).is_some());
    }
}
