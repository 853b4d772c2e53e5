//! `airlock-gateway`: serve, or run one of the commands in `cli` (`migrate`, `policy …`).

use std::process::ExitCode;

use airlock_gateway::config::Config;
use airlock_shared::config::Env;

/// jemalloc, not glibc's malloc: when thousands of held calls resume at once, glibc spent a
/// third of the gateway's CPU in malloc and free (perf, holds bench); jemalloc halves the
/// CPU per resumed call.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = airlock_gateway::cli::run(&args).await {
        return code;
    }
    let config = match Config::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = airlock_shared::telemetry::init(config.log_format, config.otel.as_ref());
    let code = match airlock_gateway::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "gateway failed to start");
            eprintln!("airlock-gateway: {}", airlock_shared::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    };
    // The batch exporter still holds the last spans: send them before the process ends.
    telemetry.shutdown();
    code
}
