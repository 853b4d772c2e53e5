//! Test support for every Airlock crate.
//!
//! Our own storage is real: [`fresh_db`] gives each test its own PostgreSQL database with the
//! migrations applied, and [`fresh_redis`] its own key prefix. They use `DATABASE_URL` and
//! `REDIS_URL` when set (CI, README), and otherwise start containers with testcontainers.
//! Only systems we do not own are faked: upstream MCP servers ([`upstream`], and
//! [`single_era`] for servers of one era only) and Slack.

// Test support fails loudly: a panic with a reason is the right answer to a broken fixture.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod backing;
pub mod cluster;
pub mod nginx;
pub mod otlp;
pub mod pgbouncer;
pub mod restart;
pub mod single_era;
pub mod streams;
pub mod upstream;

pub use backing::{TestDb, TestRedis, fresh_db, fresh_redis};
