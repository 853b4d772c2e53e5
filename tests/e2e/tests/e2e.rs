//! End-to-end tests: the real gateway, webhook, notifier, Slack emulator and demo upstream, each
//! a separate process, against real PostgreSQL and Redis (`DATABASE_URL`, `REDIS_URL`).
//!
//! The gateway, webhook and notifier binaries are built by `cargo build` on first use (they
//! belong to other packages, so cargo does not build them for this test binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "e2e/stack.rs"]
mod stack;

#[path = "e2e/approval.rs"]
mod approval;
#[path = "e2e/browser.rs"]
mod browser;
#[path = "e2e/demo.rs"]
mod demo;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/grant.rs"]
mod grant;
#[path = "e2e/policy.rs"]
mod policy;
#[path = "e2e/replicas.rs"]
mod replicas;
#[path = "e2e/traces.rs"]
mod traces;
#[path = "e2e/two_person.rs"]
mod two_person;
