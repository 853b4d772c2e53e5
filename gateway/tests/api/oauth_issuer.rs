//! A fake authorization server for the OAuth tests: RFC 8414 metadata and a JWKS on
//! 127.0.0.1, whose published keys a test can change, and which counts JWKS fetches. Tokens
//! are signed with fixed test keys (`oauth_keys/keys.json`, made with Python's
//! `cryptography`; test material only).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_gateway::config::OAuthConfig;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The test keys: kid → { alg, pem (PKCS#8), public_pem (RSA only), jwk }.
const KEYS: &str = include_str!("oauth_keys/keys.json");

/// The resource (audience) the test gateways call themselves.
pub const AUDIENCE: &str = "https://gw.test/mcp";
/// Where their metadata says it lives.
pub const METADATA_URL: &str = "https://gw.test/.well-known/oauth-protected-resource/mcp";

fn keys() -> Value {
    serde_json::from_str(KEYS).unwrap()
}

/// The public JWK of a test key.
pub fn jwk(kid: &str) -> Value {
    keys()[kid]["jwk"].clone()
}

/// The PEM of an RSA test key's public half.
pub fn public_pem(kid: &str) -> String {
    keys()[kid]["public_pem"].as_str().unwrap().to_owned()
}

struct Shared {
    url: String,
    published: Mutex<Vec<Value>>,
    jwks_fetches: AtomicUsize,
}

/// A running fake issuer.
pub struct FakeIssuer {
    shared: Arc<Shared>,
    pub url: String,
}

async fn metadata(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": s.url,
        "jwks_uri": format!("{}/jwks", s.url),
        "token_endpoint": format!("{}/token", s.url),
        "grant_types_supported": ["client_credentials"],
    }))
}

async fn jwks(State(s): State<Arc<Shared>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = s.published.lock().unwrap().clone();
    Json(json!({ "keys": keys }))
}

impl FakeIssuer {
    /// Starts an issuer that publishes the keys named in `kids`.
    pub async fn spawn(kids: &[&str]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            published: Mutex::new(kids.iter().map(|k| jwk(k)).collect()),
            jwks_fetches: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/.well-known/oauth-authorization-server", get(metadata))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { shared, url }
    }

    /// Publishes exactly the keys named in `kids` from now on.
    pub fn publish(&self, kids: &[&str]) {
        *self.shared.published.lock().unwrap() = kids.iter().map(|k| jwk(k)).collect();
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The gateway settings that trust this issuer (short leeway, default claim `sub`).
    pub fn config(&self) -> OAuthConfig {
        OAuthConfig {
            issuers: vec![self.url.clone()],
            audience: AUDIENCE.to_owned(),
            principal_claim: "sub".to_owned(),
            leeway: Duration::from_secs(5),
            required_scopes: Vec::new(),
            scopes_supported: vec!["mcp".to_owned()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            jwks_refresh: Duration::from_secs(300),
            jwks_min_interval: Duration::from_secs(10),
        }
    }

    /// Claims of a token this issuer would give `sub` for the test audience, valid for 5 min.
    pub fn claims(&self, sub: &str) -> Value {
        let now = now();
        json!({ "iss": self.url, "sub": sub, "aud": AUDIENCE, "iat": now, "nbf": now - 1, "exp": now + 300 })
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `claims` signed with the test key `kid` (its own algorithm), the header naming `kid`.
pub fn sign(kid: &str, claims: &Value) -> String {
    sign_as(kid, kid, claims)
}

/// `claims` signed with test key `key`, the header naming `kid` (which may be another key's).
pub fn sign_as(key: &str, kid: &str, claims: &Value) -> String {
    let k = &keys()[key];
    let pem = k["pem"].as_str().unwrap().as_bytes();
    let (alg, enc) = match k["alg"].as_str().unwrap() {
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem).unwrap()),
        "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem).unwrap()),
        "EdDSA" => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem).unwrap()),
        other => panic!("no test key of type {other}"),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &enc).unwrap()
}

/// HS256 with an RSA key's public PEM as the HMAC secret: the algorithm-confusion attack.
pub fn sign_hs256_with_public_key(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let enc = EncodingKey::from_secret(public_pem(kid).as_bytes());
    jsonwebtoken::encode(&header, claims, &enc).unwrap()
}

/// An unsigned token (`alg: none`).
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(claims)
    )
}

/// The token with its payload replaced by `claims`, the signature kept.
pub fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{}.{payload}.{}", parts[0], parts[2])
}
