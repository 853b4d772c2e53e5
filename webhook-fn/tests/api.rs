//! Integration tests for `airlock-webhook`, against real Postgres and Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

#[path = "api/cluster.rs"]
mod cluster;
#[path = "api/decisions.rs"]
mod decisions;
#[path = "api/edges.rs"]
mod edges;
#[path = "api/failures.rs"]
mod failures;
#[path = "api/grants.rs"]
mod grants;
#[path = "api/groups.rs"]
mod groups;
#[path = "api/lambda.rs"]
mod lambda;
#[path = "api/lambda_runtime.rs"]
mod lambda_runtime;
#[path = "api/lambda_traces.rs"]
mod lambda_traces;
#[path = "api/pgbouncer.rs"]
mod pgbouncer;
#[path = "api/process.rs"]
mod process;
#[path = "api/quorum.rs"]
mod quorum;
#[path = "api/races.rs"]
mod races;
#[path = "api/signing.rs"]
mod signing;
