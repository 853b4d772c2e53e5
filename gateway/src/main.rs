//! `airlock-gateway`: serve, `airlock-gateway migrate` to apply migrations and exit, or
//! `airlock-gateway grants list|revoke <id>` to see and end standing grants.

use std::process::ExitCode;

use airlock_gateway::config::Config;
use airlock_shared::config::{Env, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("grants") {
        return airlock_gateway::grant::cli(&args[1..]).await;
    }
    let migrate_only = std::env::args().nth(1).as_deref() == Some("migrate");
    if migrate_only {
        airlock_shared::telemetry::init(LogFormat::Pretty);
        let mut env = Env::from_process();
        let url: Option<String> = env.required("DATABASE_URL");
        if let Err(e) = env.finish() {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
        let Some(url) = url else {
            return ExitCode::from(2);
        };
        return match migrate(&url).await {
            Ok(()) => {
                tracing::info!("migrations applied");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %airlock_shared::telemetry::chain(e.as_ref()), "migration failed");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_env(Env::from_process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    airlock_shared::telemetry::init(config.log_format);
    match airlock_gateway::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "gateway failed to start");
            eprintln!("airlock-gateway: {}", airlock_shared::telemetry::chain(&e));
            ExitCode::FAILURE
        }
    }
}

async fn migrate(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pool = airlock_shared::db::connect(url, 2, std::time::Duration::from_secs(10)).await?;
    airlock_shared::db::migrate(&pool).await?;
    Ok(())
}
