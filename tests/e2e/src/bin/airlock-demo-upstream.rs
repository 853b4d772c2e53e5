//! `airlock-demo-upstream`: the demo payments MCP server.

use std::process::ExitCode;

use airlock_e2e::demo_upstream::{Config, run};

#[tokio::main]
async fn main() -> ExitCode {
    airlock_slack_fake::service_main("airlock-demo-upstream", Config::from_env, run).await
}
