//! The gateway's integration tests: real PostgreSQL and Redis, a fake upstream MCP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api {
    pub mod helpers;

    mod arguments;
    mod batch;
    mod bridge;
    mod cluster;
    mod connections;
    mod continuation;
    mod edges;
    mod grants;
    mod hold;
    mod modern;
    mod oauth;
    mod oauth_issuer;
    mod pgbouncer;
    mod proxy;
    mod quorum;
    mod races;
    mod reload;
    mod session_lock;
    mod task_listen;
    pub mod tasks;
    mod tasks_restart;
    mod transparent;
}
