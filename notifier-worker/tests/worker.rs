//! The notifier against real Redis and Postgres and a fake Slack Web API over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "worker/support.rs"]
mod support;

#[path = "worker/binary.rs"]
mod binary;
#[path = "worker/cluster.rs"]
mod cluster;
#[path = "worker/delivery.rs"]
mod delivery;
#[path = "worker/faults.rs"]
mod faults;
#[path = "worker/grants.rs"]
mod grants;
#[path = "worker/groups.rs"]
mod groups;
#[path = "worker/messages.rs"]
mod messages;
#[path = "worker/reconcile.rs"]
mod reconcile;
#[path = "worker/replicas.rs"]
mod replicas;
