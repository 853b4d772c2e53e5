//! `airlock-notifier`: load config, init tracing, run, map failure to an exit code.

use std::process::ExitCode;

use airlock_shared::config::Env;
use airlock_shared::telemetry;
use notifier_worker::Config;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock-notifier: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(config.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    match notifier_worker::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %telemetry::chain(&e), "airlock-notifier failed");
            ExitCode::FAILURE
        }
    }
}

/// Cancels on SIGTERM or Ctrl-C.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = ctrl_c => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
