//! Airlock's shared domain.
//!
//! Every service spells tables, Redis keys, stream names and job shapes through this crate and
//! nowhere else, so the gateway, the webhook and the notifier cannot drift apart.

pub mod audit;
pub mod batch;
pub mod block_kit;
pub mod buttons;
pub mod canonical;
pub mod config;
pub mod db;
pub mod edge;
pub mod grant;
pub mod ids;
pub mod job;
pub mod keys;
pub mod lease;
pub mod otel;
pub mod probes;
pub mod redis_conn;
pub mod secret;
pub mod session;
pub mod shutdown;
pub mod signal;
pub mod telemetry;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod ticket;
pub mod trace_context;
pub mod usergroup;

pub use ids::{Principal, SessionId, TicketId};
pub use job::{NotifyJob, Refusal};
pub use keys::Keys;
pub use redis_conn::{RedisConn, RedisMode};
pub use signal::DecisionSignal;
pub use ticket::{Decision, Ticket, TicketStatus};
