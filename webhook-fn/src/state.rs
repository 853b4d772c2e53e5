//! What every request shares, built once at start.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::db;
use airlock_shared::redis_conn::{ConnOpts, RedisConn};
use airlock_shared::secret::{self, SecretError};
use secrecy::ExposeSecret;

use crate::approval::{self, Approvals};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::signature::Verifier;

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the signing secret failed")]
    Secret(#[from] SecretError),
    #[error("DATABASE_URL is not usable")]
    Database(#[source] sqlx::Error),
    #[error("REDIS_URL is not usable")]
    Redis(#[source] redis::RedisError),
    #[error("metrics registry")]
    Metrics(#[source] prometheus::Error),
    #[error("binding or serving {addr}")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Lambda runtime stopped")]
    Lambda(#[source] lambda_http::Error),
}

/// Shared by every request; cheap to clone. Connections live here so that a warm Lambda
/// instance reuses them across invocations.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// Checks Slack's signature.
    pub verifier: Verifier,
    /// Records decisions and tells others.
    pub approvals: Approvals,
    /// This app's metrics.
    pub metrics: Metrics,
    /// Bound on reading a request body.
    pub body_timeout: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Resolves the secret and prepares lazy connections: start-up does not wait for Postgres or
/// Redis, so a cold start stays short and a down dependency shows in `/readyz`, not as a crash.
pub async fn build(config: &Config) -> Result<AppState, StartError> {
    let secret = secret::read(&config.signing_secret, config.secrets_timeout, &[]).await?;
    // As a long-running server, keep a few connections open and warm: a click burst must not
    // wait for new TLS connections (batched decisions need about two). A Lambda instance serves
    // one click at a time and must start fast.
    let min_connections = if config.lambda {
        0
    } else {
        config.db_max_connections.min(WARM_CONNECTIONS)
    };
    let pool = db::connect_lazy(
        config.database_url.expose_secret(),
        config.database_pooler,
        config.db_max_connections,
        min_connections,
        config.db_timeout,
    )
    .map_err(StartError::Database)?;
    if !config.lambda {
        db::warm(&pool, min_connections);
    }
    // One connection per Redis node (in cluster mode), made on first use.
    let redis = RedisConn::lazy(
        config.redis_url.expose_secret(),
        &config.redis_mode,
        ConnOpts {
            connection_timeout: Some(config.redis_timeout),
            response_timeout: Some(config.redis_timeout),
            retries: Some(1),
        },
    )
    .map_err(StartError::Redis)?;
    let metrics = Metrics::new().map_err(StartError::Metrics)?;
    Ok(AppState(Arc::new(Inner {
        verifier: Verifier::new(secret),
        approvals: Approvals {
            batch: approval::decision_batcher(pool.clone(), 256),
            pool,
            redis,
            keys: config.keys.clone(),
            approvers: config.approvers.clone(),
            membership_max_age: config.membership_max_age,
            team_id: config.team_id.clone(),
            api_app_id: config.api_app_id.clone(),
            db_timeout: config.db_timeout,
            redis_timeout: config.redis_timeout,
            metrics: metrics.clone(),
        },
        metrics,
        body_timeout: config.body_timeout,
    })))
}

/// Connections a long-running webhook server keeps open.
const WARM_CONNECTIONS: u32 = 2;
