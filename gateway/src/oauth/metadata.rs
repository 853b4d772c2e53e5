//! The protected resource metadata (RFC 9728) that tells a client where to get a token, and
//! the `WWW-Authenticate` challenges that point to it.

use axum::http::HeaderValue;
use serde_json::{Value, json};

use super::config::OAuthConfig;

/// Where the metadata lives: RFC 9728 §3.1 inserts the well-known segment before the
/// resource's path, so `https://gw.example/mcp` has it at
/// `https://gw.example/.well-known/oauth-protected-resource/mcp`.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document and its URL.
#[derive(Clone, Debug)]
pub struct ResourceMetadata {
    /// The document, served as it is.
    pub document: Value,
    /// Its URL, named in every challenge.
    pub url: String,
    /// The path-suffixed route this gateway serves it at (besides [`WELL_KNOWN`] itself).
    pub suffixed_path: String,
}

impl ResourceMetadata {
    /// The metadata for `config`.
    pub fn new(config: &OAuthConfig) -> Self {
        let (origin, path) = match url::Url::parse(&config.audience) {
            Ok(u) => (
                u.origin().ascii_serialization(),
                u.path().trim_end_matches('/').to_owned(),
            ),
            Err(_) => (String::new(), String::new()),
        };
        let mut document = json!({
            "resource": config.audience,
            "authorization_servers": config.issuers,
            "bearer_methods_supported": ["header"],
        });
        let supported: Vec<&String> = config
            .scopes_supported
            .iter()
            .chain(config.required_scopes.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !supported.is_empty() {
            document["scopes_supported"] = json!(supported);
        }
        Self {
            document,
            url: format!("{origin}{WELL_KNOWN}{path}"),
            suffixed_path: format!("{WELL_KNOWN}{path}"),
        }
    }
}

/// What a refusal tells the client (RFC 6750 §3, with RFC 9728's `resource_metadata`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    /// The metadata URL; `None` when OAuth is off (then the challenge is a bare `Bearer`).
    pub resource_metadata: Option<String>,
    /// `invalid_token` or `insufficient_scope`, with a description.
    pub error: Option<(&'static str, String)>,
    /// The scopes needed, on `insufficient_scope`.
    pub scope: Option<String>,
}

/// A quoted-string's content: descriptions are ours, but never let one break the header.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .map(|c| match c {
            '"' | '\\' => '\'',
            c => c,
        })
        .collect()
}

impl Challenge {
    /// The `WWW-Authenticate` header value.
    pub fn header(&self) -> HeaderValue {
        let mut params = Vec::new();
        if let Some((code, description)) = &self.error {
            params.push(format!("error=\"{code}\""));
            params.push(format!("error_description=\"{}\"", quoted(description)));
        }
        if let Some(scope) = &self.scope {
            params.push(format!("scope=\"{}\"", quoted(scope)));
        }
        if let Some(url) = &self.resource_metadata {
            params.push(format!("resource_metadata=\"{}\"", quoted(url)));
        }
        let value = match params.is_empty() {
            true => "Bearer".to_owned(),
            false => format!("Bearer {}", params.join(", ")),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OAuthConfig {
        let mut env = airlock_shared::config::Env::from_pairs(&[
            ("OAUTH_ISSUERS", "https://as.example"),
            ("OAUTH_AUDIENCE", "https://gw.example/mcp"),
            ("OAUTH_REQUIRED_SCOPES", "mcp"),
            ("OAUTH_SCOPES_SUPPORTED", "mcp refunds:write"),
        ]);
        OAuthConfig::from_env(&mut env).unwrap()
    }

    #[test]
    fn the_document_and_its_url() {
        let m = ResourceMetadata::new(&config());
        assert_eq!(
            m.url,
            "https://gw.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(m.suffixed_path, "/.well-known/oauth-protected-resource/mcp");
        assert_eq!(m.document["resource"], "https://gw.example/mcp");
        assert_eq!(
            m.document["authorization_servers"],
            json!(["https://as.example"])
        );
        assert_eq!(
            m.document["scopes_supported"],
            json!(["mcp", "refunds:write"])
        );
        assert_eq!(m.document["bearer_methods_supported"], json!(["header"]));
    }

    #[test]
    fn challenges() {
        assert_eq!(Challenge::default().header(), "Bearer");
        let c = Challenge {
            resource_metadata: Some("https://gw/.well-known/oauth-protected-resource/mcp".into()),
            error: Some(("invalid_token", "the \"token\" has expired".into())),
            scope: None,
        };
        assert_eq!(
            c.header(),
            "Bearer error=\"invalid_token\", error_description=\"the 'token' has expired\", resource_metadata=\"https://gw/.well-known/oauth-protected-resource/mcp\""
        );
    }
}
