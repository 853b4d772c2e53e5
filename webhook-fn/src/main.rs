//! `airlock-webhook`: load config, init tracing, run; map failure to an exit code.

use std::process::ExitCode;

use airlock_shared::config::Env;
use airlock_shared::telemetry;
use webhook_fn::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-webhook: {e}");
            return ExitCode::from(2);
        }
    };
    let traces = telemetry::init(config.log_format, config.otel.as_ref());
    let code = match webhook_fn::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %telemetry::chain(&e), "airlock-webhook stopped");
            ExitCode::FAILURE
        }
    };
    // The batch exporter still holds the last spans: send them before the process ends.
    traces.shutdown();
    code
}
