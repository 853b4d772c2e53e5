//! `airlock-slack-emulator`: a local Slack workspace to click approvals in.

use std::process::ExitCode;

use airlock_slack_fake::emulator::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    airlock_slack_fake::service_main("airlock-slack-emulator", Config::from_env, run).await
}
