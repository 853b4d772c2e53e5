//! Postgres connections and migrations.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// The migrations in `migrations/`, embedded in every binary that runs them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool sized for one service instance, with bounded waits everywhere.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(opts)
        .await
}

/// A pool that connects on first use, so a service can start (and report unready) while
/// Postgres is down. `min_connections` are kept open once made (see [`warm`]).
pub fn connect_lazy(
    url: &str,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(min_connections.min(max_connections))
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(opts))
}

/// Opens up to `n` connections in the background, so that a burst does not pay for new ones
/// (a TLS connection to Postgres costs over 100 ms to open here, most of it loading root certs).
pub fn warm(pool: &PgPool, n: u32) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..n {
            match pool.acquire().await {
                Ok(c) => held.push(c),
                Err(e) => {
                    tracing::debug!(error = %e, "could not warm the Postgres pool; it connects on use");
                    break;
                }
            }
        }
    });
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether Postgres answers.
pub async fn ping(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
