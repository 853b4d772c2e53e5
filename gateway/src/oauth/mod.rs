//! The gateway as an OAuth 2.1 resource server (the MCP authorization spec's server side):
//! JWT access tokens from trusted issuers checked locally, the protected resource metadata,
//! and the challenges that lead a client to an authorization server.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::identity::Identity;

pub mod config;
pub mod jwks;
pub mod metadata;
pub mod token;

pub use config::OAuthConfig;
pub use metadata::{Challenge, ResourceMetadata};
pub use token::{TokenError, Verifier};

/// Why a presented access token gets no access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401 `invalid_token`.
    #[error(transparent)]
    Invalid(#[from] TokenError),
    /// 403 `insufficient_scope`: valid, but without every required scope.
    #[error("the token lacks a required scope")]
    InsufficientScope,
}

/// The resource server: the verifier, the metadata, and the scopes every token needs.
pub struct OAuth {
    pub verifier: Verifier,
    pub metadata: ResourceMetadata,
    required_scopes: Vec<String>,
    refresh: Duration,
}

impl OAuth {
    /// The resource server for `config`; keys are fetched when [`OAuth::start`] runs or a
    /// token first needs them.
    pub fn new(config: &OAuthConfig) -> Result<Self, reqwest::Error> {
        // Bounded, and no redirects: an issuer's keys come from where its metadata says.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            verifier: Verifier::new(config, &http),
            metadata: ResourceMetadata::new(config),
            required_scopes: config.required_scopes.clone(),
            refresh: config.jwks_refresh,
        })
    }

    /// The identity of a valid token that carries every required scope.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Refusal> {
        let identity = self.verifier.verify(token).await?;
        if !identity.has_scopes(&self.required_scopes) {
            return Err(Refusal::InsufficientScope);
        }
        Ok(identity)
    }

    /// The challenge of a 401 or 403: for `None`, no token (or none we could read) was sent.
    pub fn challenge(&self, refusal: Option<Refusal>) -> Challenge {
        let resource_metadata = Some(self.metadata.url.clone());
        match refusal {
            None => Challenge {
                resource_metadata,
                ..Challenge::default()
            },
            Some(Refusal::Invalid(e)) => Challenge {
                resource_metadata,
                error: Some(("invalid_token", e.to_string())),
                scope: None,
            },
            Some(Refusal::InsufficientScope) => Challenge {
                resource_metadata,
                error: Some((
                    "insufficient_scope",
                    "the token lacks a required scope".into(),
                )),
                scope: Some(self.required_scopes.join(" ")),
            },
        }
    }

    /// Loads every issuer's keys now, then again every `OAUTH_JWKS_REFRESH` until `stop`.
    /// An issuer that cannot be reached keeps its last keys and is tried on the next round
    /// (or when a token needs a key).
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                for issuer in me.verifier.issuers() {
                    if let Err(e) = issuer.refresh().await {
                        tracing::warn!(issuer = %issuer.id, error = %airlock_shared::telemetry::chain(&e), "cannot load the issuer's keys");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(me.refresh) => {}
                }
            }
        });
    }

    /// `GET /.well-known/oauth-protected-resource` and its path-suffixed form, unauthenticated.
    pub fn routes(self: &Arc<Self>) -> Router {
        let doc = Arc::new(self.metadata.document.clone());
        let serve = move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        };
        let router = Router::new().route(metadata::WELL_KNOWN, get(serve.clone()));
        if self.metadata.suffixed_path == metadata::WELL_KNOWN {
            router
        } else {
            router.route(&self.metadata.suffixed_path, get(serve))
        }
    }
}
