//! The state one gateway instance shares between requests.

use std::sync::Arc;

use airlock_shared::RedisConn;
use airlock_shared::db::Db;

use crate::call::Pipeline;
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use crate::oauth::OAuth;
use crate::rules::Rules;
use crate::upstream_session::UpstreamSessions;

/// Shared state of one gateway instance.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

/// The parts of [`AppState`].
pub struct Inner {
    /// The policy and agent keys in force.
    pub rules: Rules,
    /// One call's pipeline, shared by single calls and batch parts.
    pub pipeline: Arc<Pipeline>,
    pub discovery: Discovery,
    pub metrics: Metrics,
    pub pool: Db,
    pub redis: RedisConn,
    pub max_body_bytes: usize,
    /// The OAuth resource server, when `OAUTH_ISSUERS` is set.
    pub oauth: Option<Arc<OAuth>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    /// The upstream sessions behind the gateway's.
    pub fn link(&self) -> &UpstreamSessions {
        &self.pipeline.link
    }
}
