//! [`Db`]: a pool that knows whether a transaction-mode pooler (PgBouncer, RDS Proxy) stands
//! between it and Postgres, and runs every statement the way that pooler needs.
//!
//! Why a statement cache of 0 is not enough behind PgBouncer 1.18 in transaction mode: sqlx
//! sends each statement as Parse + Describe + Sync, waits, then Bind + Execute + Sync. PgBouncer
//! hands the server connection back to its pool at every ReadyForQuery outside a transaction,
//! so the Bind can reach another server, where the statement is missing or (unnamed) is another
//! client's. And with the cache at 0 sqlx still names its statements (`sqlx_s_1`, …) and never
//! closes them, so a second client's `sqlx_s_1` meets the first one's on a shared server:
//! "prepared statement already exists". So here each statement runs unnamed inside its own
//! transaction (which pins one server connection from BEGIN to COMMIT), and an explicit
//! transaction first drops what earlier clients left prepared on its server.

use std::ops::Deref;
use std::str::FromStr;

use futures::{StreamExt, TryStreamExt, future::BoxFuture, stream::BoxStream};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Either, Execute, Executor, PgPool, Postgres, SqlStr, Transaction};

/// What stands between the services and Postgres (`DATABASE_POOLER`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pooler {
    /// Postgres itself, or a pooler in session mode (or one that tracks prepared statements,
    /// like PgBouncer 1.21+ with `max_prepared_statements`): the statement cache is on.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer before 1.21, or without
    /// `max_prepared_statements`): no statement cache, one transaction per statement.
    Transaction,
}

impl FromStr for Pooler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "transaction" => Ok(Self::Transaction),
            other => Err(format!("expected none or transaction, got {other:?}")),
        }
    }
}

/// A Postgres pool and how it reaches Postgres; `&Db` is an executor for every query in
/// `shared`, and derefs to the pool for the rest (size, close).
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    pooler: Pooler,
}

impl Db {
    /// A pool reached through `pooler`.
    pub fn new(pool: PgPool, pooler: Pooler) -> Self {
        Self { pool, pooler }
    }

    /// What stands between this pool and Postgres.
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction. Behind a transaction pooler it first deallocates the statements
    /// earlier transactions left on this server connection: sqlx names the statements of a
    /// transaction (`sqlx_s_N`, numbered per client) and, with no cache, never closes them.
    pub async fn begin(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        match self.pooler {
            Pooler::None => self.pool.begin().await,
            Pooler::Transaction => self.pool.begin_with("BEGIN; DEALLOCATE ALL").await,
        }
    }
}

impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        Self::new(pool, Pooler::None)
    }
}

impl Deref for Db {
    type Target = PgPool;

    fn deref(&self) -> &PgPool {
        &self.pool
    }
}

/// A query sent as an unnamed statement, which nothing outlives its transaction.
struct Unnamed<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for Unnamed<E> {
    fn sql(self) -> SqlStr {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}

type Step = Either<PgQueryResult, PgRow>;

/// Runs one query unnamed in a transaction of its own, committed before the results are
/// handed on (so a caller that acts on them acts on committed rows).
async fn in_transaction<'q, E>(pool: PgPool, query: E) -> Result<Vec<Step>, sqlx::Error>
where
    E: 'q + Execute<'q, Postgres>,
{
    let mut tx = pool.begin().await?;
    let steps: Vec<Step> = (&mut *tx).fetch_many(Unnamed(query)).try_collect().await?;
    tx.commit().await?;
    Ok(steps)
}

impl<'p> Executor<'p> for &'_ Db {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Step, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.pooler {
            Pooler::None => (&self.pool).fetch_many(query),
            Pooler::Transaction => futures::stream::once(in_transaction(self.pool.clone(), query))
                .map_ok(|steps| {
                    futures::stream::iter(steps.into_iter().map(Ok::<Step, sqlx::Error>))
                })
                .try_flatten()
                .boxed(),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        match self.pooler {
            Pooler::None => (&self.pool).fetch_optional(query),
            Pooler::Transaction => {
                let pool = self.pool.clone();
                Box::pin(async move {
                    let steps = in_transaction(pool, query).await?;
                    Ok(steps.into_iter().find_map(|s| s.right()))
                })
            }
        }
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        // A prepared statement is tied to one server connection: behind a transaction pooler
        // it would be another's by the time it ran. Nothing in Airlock prepares explicitly.
        (&self.pool).prepare_with(sql, parameters)
    }

    fn describe<'e>(
        self,
        sql: SqlStr,
    ) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        (&self.pool).describe(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poolers_parse() {
        assert_eq!("none".parse::<Pooler>(), Ok(Pooler::None));
        assert_eq!("Transaction".parse::<Pooler>(), Ok(Pooler::Transaction));
        assert!("session".parse::<Pooler>().is_err());
    }
}
