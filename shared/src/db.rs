//! Postgres connections and migrations.

mod pooled;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use pooled::{Db, Pooler};

/// The migrations in `migrations/`, embedded in every binary that runs them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connection options for `url` as reached through `pooler`.
fn options(url: &str, pooler: Pooler) -> Result<PgConnectOptions, sqlx::Error> {
    let opts: PgConnectOptions = url.parse()?;
    Ok(match pooler {
        Pooler::None => opts,
        // A cached statement lives on one server connection; the pooler moves us between them.
        Pooler::Transaction => opts.statement_cache_capacity(0),
    })
}

/// A pool sized for one service instance, with bounded waits everywhere.
pub async fn connect(
    url: &str,
    pooler: Pooler,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<Db, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_with(options(url, pooler)?)
        .await?;
    Ok(Db::new(pool, pooler))
}

/// A pool that connects on first use, so a service can start (and report unready) while
/// Postgres is down. `min_connections` are kept open once made (see [`warm`]).
pub fn connect_lazy(
    url: &str,
    pooler: Pooler,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
) -> Result<Db, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(min_connections.min(max_connections))
        .acquire_timeout(acquire_timeout)
        .connect_lazy_with(options(url, pooler)?);
    Ok(Db::new(pool, pooler))
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

/// Applies pending migrations. Run them on a direct connection, never through a transaction
/// pooler: the migrator holds a session-level advisory lock across its statements.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether Postgres answers.
pub async fn ping(db: &Db) -> bool {
    sqlx::query("SELECT 1").execute(db).await.is_ok()
}
