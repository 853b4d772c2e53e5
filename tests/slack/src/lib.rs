//! The one Slack fake.
//!
//! - [`web_api`]: the one fake of the Web API: message store, method dispatch, Block Kit
//!   validation ([`blocks`]), faults, latency and a record of every call.
//! - [`usergroups`]: the workspace's user groups and `usergroups.users.list`.
//! - [`fake`]: that Web API in-process for tests and benches ([`fake::FakeSlack`]).
//! - [`emulator`]: the same Web API behind a channel page a person clicks in a browser, a JSON
//!   API for tests, and signed clicks to the webhook (binary `airlock-slack-emulator`).
//!
//! Block Kit limits come from [`airlock_shared::block_kit`].

pub mod blocks;
pub mod emulator;
pub mod fake;
pub mod usergroups;
pub mod web_api;

use std::future::Future;
use std::process::ExitCode;

use airlock_shared::config::{ConfigError, Env, LogFormat};

/// The `main` of a local stand-in service (this emulator, the e2e demo upstream): configuration
/// from the environment (exit 2 naming every problem), telemetry, then `run` until it ends.
pub async fn service_main<C, F>(
    name: &str,
    from_env: impl FnOnce(Env) -> Result<C, ConfigError>,
    run: impl FnOnce(C) -> F,
) -> ExitCode
where
    F: Future<Output = std::io::Result<()>>,
{
    let mut env = Env::from_process();
    let log_format = env.or("LOG_FORMAT", LogFormat::Pretty);
    let config = match from_env(env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let _logs = airlock_shared::telemetry::init(log_format, None);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), service = name, "failed");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
