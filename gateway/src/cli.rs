//! The commands beside serving: `migrate`, `policy check FILE`, `policy test FILE CASES`, and
//! `grants list|revoke` (see `grant`).

use std::process::ExitCode;

use airlock_shared::config::{Env, LogFormat};
use airlock_shared::db::Pooler;

use crate::policy::{self, Policy};

/// Runs the command that `args` (without the program name) names; `None` means "serve".
pub async fn run(args: &[String]) -> Option<ExitCode> {
    if args.first().map(String::as_str) == Some("grants") {
        return Some(crate::grant::cli(&args[1..]).await);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Some(match args.as_slice() {
        [] => return None,
        ["migrate"] => migrate().await,
        ["policy", "check", file] => policy_check(file),
        ["policy", "test", file, cases] => policy_test(file, cases),
        _ => {
            eprintln!(
                "usage: airlock-gateway [migrate | policy check FILE | policy test FILE CASES | grants list | grants revoke ID]"
            );
            ExitCode::from(2)
        }
    })
}

fn policy_check(file: &str) -> ExitCode {
    let described = std::fs::read_to_string(file)
        .map_err(|source| policy::PolicyError::Read {
            path: file.to_owned(),
            source,
        })
        .and_then(|text| policy::describe(&text));
    match described {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn policy_test(file: &str, cases: &str) -> ExitCode {
    let report = Policy::load(file).and_then(|p| {
        let text = std::fs::read_to_string(cases).map_err(|source| policy::PolicyError::Read {
            path: cases.to_owned(),
            source,
        })?;
        policy::cases::run(&p, &text)
    });
    match report {
        Ok(r) => {
            print!("{}", r.text);
            if r.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn migrate() -> ExitCode {
    let _logs = airlock_shared::telemetry::init(LogFormat::Pretty, None);
    let mut env = Env::from_process();
    let url: Option<String> = env.required("DATABASE_URL");
    // The migrator holds a session-level advisory lock across its statements: through a
    // transaction pooler it would take it on one server connection and release it on another.
    if env.or("DATABASE_POOLER", Pooler::None) == Pooler::Transaction {
        env.problem(
            "DATABASE_POOLER=transaction: migrations need a DATABASE_URL that reaches Postgres \
             directly, not through PgBouncer or RDS Proxy (unset DATABASE_POOLER for this command)",
        );
    }
    if let Err(e) = env.finish() {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let Some(url) = url else {
        return ExitCode::from(2);
    };
    let applied = async {
        let pool =
            airlock_shared::db::connect(&url, Pooler::None, 2, std::time::Duration::from_secs(10))
                .await?;
        airlock_shared::db::migrate(&pool).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    match applied.await {
        Ok(()) => {
            tracing::info!("migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %airlock_shared::telemetry::chain(e.as_ref()), "migration failed");
            ExitCode::FAILURE
        }
    }
}
