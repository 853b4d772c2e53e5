//! MCP sessions: which principal owns each, and the upstream's own session id behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::db::Db;
use airlock_shared::{Principal, SessionId, session};

/// What the gateway needs to know about a live session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    pub principal: Principal,
    pub upstream_session_id: Option<String>,
}

/// The session registry: Postgres behind a small in-process cache (ownership never changes).
#[derive(Clone)]
pub struct Sessions {
    pool: Db,
    cache: Arc<Mutex<HashMap<SessionId, Arc<SessionInfo>>>>,
}

const CACHE_LIMIT: usize = 100_000;

impl Sessions {
    /// A registry on `pool`.
    pub fn new(pool: Db) -> Self {
        Self {
            pool,
            cache: Arc::default(),
        }
    }

    /// Records a new session for `principal`.
    pub async fn create(
        &self,
        id: &SessionId,
        principal: &Principal,
        upstream_session_id: Option<&str>,
        protocol_version: Option<&str>,
        init_request: Option<&serde_json::Value>,
    ) -> Result<(), sqlx::Error> {
        session::create(
            &self.pool,
            id,
            principal,
            upstream_session_id,
            protocol_version,
            init_request,
        )
        .await?;
        self.remember(
            id,
            Arc::new(SessionInfo {
                principal: principal.clone(),
                upstream_session_id: upstream_session_id.map(str::to_owned),
            }),
        );
        Ok(())
    }

    /// The live session `id` if `principal` owns it; another principal's session looks unknown.
    pub async fn owned_by(
        &self,
        id: &SessionId,
        principal: &Principal,
    ) -> Result<Option<Arc<SessionInfo>>, sqlx::Error> {
        let cached = self.cache.lock().ok().and_then(|c| c.get(id).cloned());
        let info = match cached {
            Some(i) => Some(i),
            None => match session::get_live(&self.pool, id).await? {
                Some(row) => {
                    let info = Arc::new(SessionInfo {
                        principal: Principal(row.principal),
                        upstream_session_id: row.upstream_session_id,
                    });
                    self.remember(id, info.clone());
                    Some(info)
                }
                None => None,
            },
        };
        Ok(info.filter(|i| &i.principal == principal))
    }

    /// Records the upstream session now behind `id` (after a re-initialise).
    pub async fn set_upstream(
        &self,
        id: &SessionId,
        upstream_session_id: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        session::set_upstream(&self.pool, id, upstream_session_id).await?;
        self.remember_upstream(id, upstream_session_id);
        Ok(())
    }

    /// Updates the cached upstream session of `id`, if it is cached.
    pub fn remember_upstream(&self, id: &SessionId, upstream_session_id: Option<&str>) {
        if let Ok(mut c) = self.cache.lock()
            && let Some(info) = c.get_mut(id)
        {
            *info = Arc::new(SessionInfo {
                principal: info.principal.clone(),
                upstream_session_id: upstream_session_id.map(str::to_owned),
            });
        }
    }

    /// Ends a session.
    pub async fn delete(&self, id: &SessionId) -> Result<bool, sqlx::Error> {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(id);
        }
        session::mark_deleted(&self.pool, id).await
    }

    fn remember(&self, id: &SessionId, info: Arc<SessionInfo>) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(id.clone(), info);
        }
    }
}
