//! Checking a JWT access token locally: its issuer's key, signature, `iss`, `aud`, `exp`,
//! `nbf`, and the claim that names the principal.

use std::sync::Arc;

use airlock_shared::Principal;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use prometheus::IntCounterVec;
use serde_json::{Map, Value};

use super::config::OAuthConfig;
use super::jwks::Issuer;
use super::verified::{self, Verification, Verified};
use crate::identity::{Identity, scopes_of};

/// Why an access token is refused. Each one is a 401 `invalid_token`; the description is
/// safe to show the client (it names the check, never a key or the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    #[error("no key of the issuer verifies this token")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another resource")]
    Audience,
    #[error("the token's iss does not match its issuer")]
    Issuer,
    #[error("the token lacks a required claim (exp, iss, aud, or the principal claim)")]
    MissingClaim,
    /// Sessions, tasks and owners are keyed by principal: a token must not pass for an agent.
    #[error("the token's principal is the name of a static agent")]
    ReservedPrincipal,
}

impl TokenError {
    /// The metrics label of this refusal.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Audience => "audience",
            Self::Issuer => "issuer",
            Self::MissingClaim => "missing_claim",
            Self::ReservedPrincipal => "reserved_principal",
        }
    }
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        // ErrorKind is non-exhaustive: whatever the crate adds later counts as malformed.
        match e.kind() {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::MissingAlgorithm => Self::Algorithm,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::UnknownKey,
            _ => Self::Malformed,
        }
    }
}

/// Checks access tokens against the trusted issuers.
pub struct Verifier {
    issuers: Vec<Arc<Issuer>>,
    audience: String,
    principal_claim: String,
    leeway_secs: u64,
    algorithms: Vec<Algorithm>,
    verified: Verified,
}

/// The `iss` of an unverified token, only to pick whose keys to verify it with.
fn claimed_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

impl Verifier {
    /// A verifier for `config`'s issuers, whose keys are fetched with `http`.
    pub fn new(config: &OAuthConfig, http: &reqwest::Client, fetches: &IntCounterVec) -> Self {
        Self {
            issuers: config
                .issuers
                .iter()
                .map(|i| {
                    let fetches = fetches.clone();
                    Arc::new(Issuer::new(
                        i,
                        config.jwks_min_interval,
                        http.clone(),
                        fetches,
                    ))
                })
                .collect(),
            audience: config.audience.clone(),
            principal_claim: config.principal_claim.clone(),
            leeway_secs: config.leeway.as_secs(),
            algorithms: config.algorithms.clone(),
            verified: Verified::default(),
        }
    }

    /// The trusted issuers.
    pub fn issuers(&self) -> &[Arc<Issuer>] {
        &self.issuers
    }

    /// The identity a valid token stands for; a token verified before with the issuer's
    /// current keys, and not expired, is not checked again.
    pub async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let digest = verified::digest(token);
        let now = chrono::Utc::now().timestamp();
        let leeway = i64::try_from(self.leeway_secs).unwrap_or(i64::MAX);
        let keys_of = |i: usize| self.issuers.get(i).map(|x| x.current_keys());
        if let Some(identity) = self.verified.hit(&digest, now, leeway, keys_of) {
            return Ok(identity);
        }
        let (identity, exp, issuer, keys) = self.verify_fully(token).await?;
        let entry = Verification {
            identity: identity.clone(),
            exp,
            issuer,
            keys,
        };
        self.verified.put(digest, entry, now);
        Ok(identity)
    }

    /// Every check of a token: its identity, `exp`, issuer index and the key set that verified it.
    async fn verify_fully(
        &self,
        token: &str,
    ) -> Result<(Identity, i64, usize, Arc<super::jwks::KeySet>), TokenError> {
        // `alg: none` and unknown algorithms fail here: they are not in the crate's enum.
        let header = jsonwebtoken::decode_header(token)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let iss = claimed_issuer(token).ok_or(TokenError::MissingClaim)?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| *i.id == *iss)
            .ok_or(TokenError::UnknownIssuer)?;
        // Loaded before the key: if a fetch replaces the set meanwhile, the entry never hits.
        let keys = issuer.current_keys();
        let key = issuer
            .key(header.kid.as_deref(), header.alg)
            .await
            .ok_or(TokenError::UnknownKey)?;
        let mut v = Validation::new(header.alg);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[&*issuer.id]);
        v.set_audience(&[&self.audience]);
        v.validate_nbf = true;
        v.leeway = self.leeway_secs;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &v)?;
        let claims = data.claims;
        let principal = claims
            .get(&self.principal_claim)
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or(TokenError::MissingClaim)?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
            .ok_or(TokenError::MissingClaim)?;
        let identity = Identity {
            principal: Principal(principal.to_owned()),
            issuer: Some(issuer.id.clone()),
            scopes: scopes_of(&claims).into(),
            claims: Arc::new(claims),
        };
        Ok((identity, exp, index, keys))
    }
}
