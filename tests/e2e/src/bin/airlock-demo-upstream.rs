//! `airlock-demo-upstream`: the demo payments MCP server.

use std::process::ExitCode;

use airlock_e2e::demo_upstream::{Config, run};
use airlock_shared::config::{Env, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let mut env = Env::from_process();
    let log_format = env.or("LOG_FORMAT", LogFormat::Pretty);
    let config = match Config::from_env(env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-demo-upstream: {e}");
            return ExitCode::from(2);
        }
    };
    airlock_shared::telemetry::init(log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "demo upstream failed");
            ExitCode::FAILURE
        }
    }
}
