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
use crate::metrics::OAuthMetrics;

pub mod config;
pub mod jwks;
pub mod metadata;
pub mod token;
pub mod verified;

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
    metrics: OAuthMetrics,
    pub metadata: ResourceMetadata,
    required_scopes: Vec<String>,
    refresh: Duration,
}

impl OAuth {
    /// The resource server for `config`; keys are fetched when [`OAuth::start`] runs or a
    /// token first needs them.
    pub fn new(config: &OAuthConfig, metrics: &OAuthMetrics) -> Result<Self, reqwest::Error> {
        // Bounded, and no redirects: an issuer's keys come from where its metadata says.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            verifier: Verifier::new(config, &http, &metrics.jwks_fetches),
            metrics: metrics.clone(),
            metadata: ResourceMetadata::new(config),
            required_scopes: config.required_scopes.clone(),
            refresh: config.jwks_refresh,
        })
    }

    /// The identity of a valid token that carries every required scope, and whose principal
    /// is not `reserved` (the static agents' names).
    pub async fn authenticate(
        &self,
        token: &str,
        reserved: impl Fn(&str) -> bool,
    ) -> Result<Identity, Refusal> {
        let checked = match self.verifier.verify(token).await {
            Ok(id) if reserved(&id.principal.0) => {
                Err(Refusal::Invalid(TokenError::ReservedPrincipal))
            }
            Ok(id) if !id.has_scopes(&self.required_scopes) => Err(Refusal::InsufficientScope),
            Ok(id) => Ok(id),
            Err(e) => Err(Refusal::Invalid(e)),
        };
        self.count(checked.as_ref().err().copied());
        checked
    }

    /// Counts one checked token: accepted, or the refusal.
    fn count(&self, refusal: Option<Refusal>) {
        let outcome = match refusal {
            None => "accepted",
            Some(Refusal::Invalid(e)) => e.label(),
            Some(Refusal::InsufficientScope) => "insufficient_scope",
        };
        self.metrics.tokens.with_label_values(&[outcome]).inc();
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
