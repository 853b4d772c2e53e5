//! `airlock-slack-emulator`: a local Slack workspace to click approvals in.

use std::process::ExitCode;

use airlock_e2e::slack::{Config, run};
use airlock_shared::config::{Env, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let mut env = Env::from_process();
    let log_format = env.or("LOG_FORMAT", LogFormat::Pretty);
    let config = match Config::from_env(env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-slack-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    airlock_shared::telemetry::init(log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "Slack emulator failed");
            ExitCode::FAILURE
        }
    }
}
