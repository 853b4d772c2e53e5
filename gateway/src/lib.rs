//! Airlock's MCP gateway: a policy-gated proxy that holds approval-required tool calls until a
//! person decides in Slack.
//!
//! The request path, top to bottom (each step uses only the ones below it):
//! [`endpoint`] (the `/mcp` routes and dispatch) → [`batch`] (JSON-RPC batches) →
//! [`discovery`] (`initialize`, `tools/list`) → [`call`] (one call's pipeline: verdict, budget
//! and lock, [`approval`] hold, upstream, [`audit`]) → [`upstream_session`] (send, re-initialise)
//! → [`bridge`] (a request of one era to an upstream of the other) → [`answer`] (reading an
//! upstream answer) → [`relay`] → [`transport`] (client-side facts).

pub mod answer;
pub mod approval;
pub mod audit;
pub mod auth;
mod batch;
pub mod bridge;
pub mod call;
pub mod caller;
pub mod cli;
pub mod config;
pub mod continuation;
pub mod discovery;
pub mod endpoint;
pub mod era;
pub mod error;
pub mod grant;
pub mod health;
pub mod held_stream;
pub mod identity;
pub mod input_schema;
pub mod lock;
pub mod mcp;
pub mod metrics;
pub mod oauth;
mod param_headers;
pub mod policy;
pub mod relay;
pub mod request_state;
pub mod rules;
pub mod run;
pub mod session;
pub mod sse;
pub mod state;
mod stateless;
pub mod task;
pub mod tool_call;
pub mod tool_listing;
pub mod trace_context;
pub mod transport;
pub mod upstream;
pub mod upstream_session;

pub use run::{Gateway, StartError, app, build, run};
pub use state::AppState;
