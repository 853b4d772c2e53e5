//! `OAUTH_*`: the issuers the gateway trusts and what it checks in their access tokens.

use std::time::Duration;

use airlock_shared::config::Env;
use jsonwebtoken::Algorithm;

/// OAuth 2.1 resource server settings; present only when `OAUTH_ISSUERS` is set.
#[derive(Clone, Debug, PartialEq)]
pub struct OAuthConfig {
    /// Issuer identifiers, exactly as tokens carry them in `iss` (`OAUTH_ISSUERS`).
    pub issuers: Vec<String>,
    /// This gateway's resource URL: every token's `aud` must name it (`OAUTH_AUDIENCE`).
    pub audience: String,
    /// The claim that names the principal (`OAUTH_PRINCIPAL_CLAIM`, default `sub`).
    pub principal_claim: String,
    /// Clock skew allowed on `exp` and `nbf` (`OAUTH_LEEWAY`, default 30s).
    pub leeway: Duration,
    /// Scopes every token must carry, else 403 `insufficient_scope` (`OAUTH_REQUIRED_SCOPES`).
    pub required_scopes: Vec<String>,
    /// Scopes advertised in the protected resource metadata (`OAUTH_SCOPES_SUPPORTED`).
    pub scopes_supported: Vec<String>,
    /// Signature algorithms accepted (`OAUTH_ALGORITHMS`, default `RS256,ES256,EdDSA`).
    pub algorithms: Vec<Algorithm>,
    /// How often each issuer's keys are fetched again (`OAUTH_JWKS_REFRESH`, default 5m).
    pub jwks_refresh: Duration,
    /// The least time between two fetches caused by an unknown `kid`, per issuer
    /// (`OAUTH_JWKS_MIN_INTERVAL`, default 10s).
    pub jwks_min_interval: Duration,
}

/// The asymmetric algorithms a token may use; HMAC is never accepted (its "key" would be the
/// issuer's public key, which anyone has).
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn list(raw: Option<&str>) -> Vec<String> {
    raw.map(|v| {
        v.split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

fn is_http_url(u: &str) -> bool {
    (u.starts_with("https://") || u.starts_with("http://")) && url::Url::parse(u).is_ok()
}

impl OAuthConfig {
    /// Reads `OAUTH_*`; `None` (OAuth off) unless `OAUTH_ISSUERS` is set. Problems go to `env`.
    pub fn from_env(env: &mut Env) -> Option<Self> {
        let issuers = list(env.raw("OAUTH_ISSUERS"));
        if issuers.is_empty() {
            for name in ["OAUTH_AUDIENCE", "OAUTH_REQUIRED_SCOPES"] {
                if env.raw(name).is_some() {
                    env.problem(format!("{name}: set, but OAUTH_ISSUERS is not"));
                }
            }
            return None;
        }
        for i in issuers.iter().filter(|i| !is_http_url(i)) {
            env.problem(format!("OAUTH_ISSUERS: {i:?} is not an http(s) URL"));
        }
        let audience: Option<String> = env.required("OAUTH_AUDIENCE");
        if let Some(a) = audience.as_deref().filter(|a| !is_http_url(a)) {
            env.problem(format!(
                "OAUTH_AUDIENCE: expected this gateway's resource URL (like https://gw.example/mcp), got {a:?}"
            ));
        }
        let algorithms = algorithms(env);
        let config = Self {
            issuers,
            audience: audience.unwrap_or_default(),
            principal_claim: env.or("OAUTH_PRINCIPAL_CLAIM", "sub".to_owned()),
            leeway: leeway(env),
            required_scopes: list(env.raw("OAUTH_REQUIRED_SCOPES")),
            scopes_supported: list(env.raw("OAUTH_SCOPES_SUPPORTED")),
            algorithms,
            jwks_refresh: env.duration("OAUTH_JWKS_REFRESH", Duration::from_secs(300)),
            jwks_min_interval: env.duration("OAUTH_JWKS_MIN_INTERVAL", Duration::from_secs(10)),
        };
        Some(config)
    }
}

/// `OAUTH_LEEWAY`: zero is allowed here (unlike most durations), at most 5 minutes.
fn leeway(env: &mut Env) -> Duration {
    let Some(raw) = env.raw("OAUTH_LEEWAY").map(str::to_owned) else {
        return Duration::from_secs(30);
    };
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if d <= Duration::from_secs(300) => d,
        Ok(_) => {
            env.problem("OAUTH_LEEWAY: at most 5m (a larger skew makes expiry meaningless)");
            Duration::from_secs(30)
        }
        Err(e) => {
            env.problem(format!("OAUTH_LEEWAY: invalid duration {raw:?}: {e}"));
            Duration::from_secs(30)
        }
    }
}

/// `OAUTH_ALGORITHMS`: asymmetric ones only.
fn algorithms(env: &mut Env) -> Vec<Algorithm> {
    let names = list(env.raw("OAUTH_ALGORITHMS"));
    if names.is_empty() {
        return vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    }
    let mut out = Vec::new();
    for n in names {
        match n.parse::<Algorithm>() {
            Ok(a) if ASYMMETRIC.contains(&a) => out.push(a),
            Ok(_) | Err(_) => env.problem(format!(
                "OAUTH_ALGORITHMS: {n:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_issuers_are_set() {
        let mut env = Env::from_pairs(&[]);
        assert_eq!(OAuthConfig::from_env(&mut env), None);
        assert!(env.finish().is_ok());
        let mut env = Env::from_pairs(&[("OAUTH_AUDIENCE", "https://gw/mcp")]);
        assert_eq!(OAuthConfig::from_env(&mut env), None);
        assert!(env.finish().is_err());
    }

    #[test]
    fn defaults_and_every_problem_at_once() {
        let mut env = Env::from_pairs(&[
            (
                "OAUTH_ISSUERS",
                "https://as.example, https://other.example/t",
            ),
            ("OAUTH_AUDIENCE", "https://gw.example/mcp"),
        ]);
        let c = OAuthConfig::from_env(&mut env).unwrap();
        assert!(env.finish().is_ok());
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.principal_claim, "sub");
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert_eq!(c.jwks_min_interval, Duration::from_secs(10));
        assert_eq!(c.algorithms.len(), 3);

        let mut env = Env::from_pairs(&[
            ("OAUTH_ISSUERS", "as.example"),
            ("OAUTH_ALGORITHMS", "RS256,HS256,none"),
            ("OAUTH_LEEWAY", "1h"),
        ]);
        OAuthConfig::from_env(&mut env);
        let text = env.finish().unwrap_err().to_string();
        for want in [
            "OAUTH_ISSUERS",
            "OAUTH_AUDIENCE",
            "\"HS256\"",
            "\"none\"",
            "OAUTH_LEEWAY",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
    }
}
