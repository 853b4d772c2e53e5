//! Fresh databases and Redis key prefixes per test.

use std::time::Duration;

use airlock_shared::Keys;
use airlock_shared::db::Db;
use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::OnceCell;

/// The server URLs all tests of this process share.
struct Servers {
    database_url: String,
    redis_url: String,
    // Keeps containers alive for the life of the test process.
    _containers: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

static SERVERS: OnceCell<Servers> = OnceCell::const_new();

async fn servers() -> &'static Servers {
    SERVERS
        .get_or_init(|| async {
            let mut containers: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
            let database_url = match std::env::var("DATABASE_URL") {
                Ok(u) if !u.is_empty() => u,
                _ => {
                    let (url, c) = start_postgres().await;
                    containers.push(c);
                    url
                }
            };
            let redis_url = match std::env::var("REDIS_URL") {
                Ok(u) if !u.is_empty() => u,
                _ => {
                    let (url, c) = start_redis().await;
                    containers.push(c);
                    url
                }
            };
            Servers {
                database_url,
                redis_url,
                _containers: containers,
            }
        })
        .await
}

fn no_backing(what: &str, err: impl std::fmt::Display) -> ! {
    panic!(
        "{what} is not available: set DATABASE_URL and REDIS_URL (see README.md), \
         or run a Docker engine so testcontainers can start one ({err})"
    )
}

async fn start_postgres() -> (String, Box<dyn std::any::Any + Send + Sync>) {
    use testcontainers::runners::AsyncRunner;
    let c = testcontainers_modules::postgres::Postgres::default()
        .start()
        .await
        .unwrap_or_else(|e| no_backing("PostgreSQL", e));
    let port = c
        .get_host_port_ipv4(5432)
        .await
        .unwrap_or_else(|e| no_backing("PostgreSQL", e));
    (
        format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres"),
        Box::new(c),
    )
}

async fn start_redis() -> (String, Box<dyn std::any::Any + Send + Sync>) {
    use testcontainers::runners::AsyncRunner;
    let c = testcontainers_modules::redis::Redis::default()
        .start()
        .await
        .unwrap_or_else(|e| no_backing("Redis", e));
    let port = c
        .get_host_port_ipv4(6379)
        .await
        .unwrap_or_else(|e| no_backing("Redis", e));
    (format!("redis://127.0.0.1:{port}"), Box::new(c))
}

fn with_database(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).unwrap_or_else(|e| panic!("DATABASE_URL {url:?}: {e}"));
    u.set_path(&format!("/{db}"));
    u.to_string()
}

/// A database of its own, migrated, dropped when the value is dropped.
pub struct TestDb {
    /// A pool on the fresh database (direct, no pooler in between).
    pub pool: Db,
    /// Its URL, for services started by the test.
    pub url: String,
    name: String,
    admin_url: String,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb").field("name", &self.name).finish()
    }
}

/// Creates a fresh, migrated database for one test.
pub async fn fresh_db() -> TestDb {
    let servers = servers().await;
    let name = format!("airlock_t_{}", uuid::Uuid::new_v4().simple());
    let admin_url = servers.database_url.clone();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&admin_url)
        .await
        .unwrap_or_else(|e| no_backing("PostgreSQL", e));
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create test database");
    admin.close().await;
    let url = with_database(&admin_url, &name);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .expect("connect to test database");
    airlock_shared::db::migrate(&pool)
        .await
        .expect("migrations apply");
    TestDb {
        pool: Db::from(pool),
        url,
        name,
        admin_url,
    }
}

/// A lock held on the `tickets` table until [`TableLock::release`]; see
/// [`TestDb::lock_tickets_table`].
pub struct TableLock {
    conn: sqlx::pool::PoolConnection<sqlx::Postgres>,
}

impl std::fmt::Debug for TableLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableLock").finish_non_exhaustive()
    }
}

impl TableLock {
    /// Ends the blocking transaction, so queries on the table run again.
    pub async fn release(mut self) {
        self.conn
            .execute("ROLLBACK")
            .await
            .expect("release the tickets lock");
    }
}

// Fault injection: each way of making Postgres fail under a service is spelled here once.
impl TestDb {
    /// Renames `tickets` away, so every query on it fails as a broken schema would.
    pub async fn break_tickets_table(&self) {
        self.pool
            .execute("ALTER TABLE tickets RENAME TO tickets_gone")
            .await
            .expect("rename the tickets table");
    }

    /// Holds a lock that blocks every read of `tickets`, as a stuck migration or vacuum would.
    pub async fn lock_tickets_table(&self) -> TableLock {
        let mut conn = self
            .pool
            .acquire()
            .await
            .expect("a connection for the lock");
        conn.execute("BEGIN").await.expect("begin");
        conn.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock the tickets table");
        TableLock { conn }
    }

    /// Drops the database under live connections (they fail from then on).
    pub async fn drop_now(&self) {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.admin_url)
            .await
            .expect("connect as admin");
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {} WITH (FORCE)",
                self.name
            )))
            .await
            .expect("drop the test database");
        admin.close().await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime may block.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(&admin_url)
                    .await
                {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A Redis key prefix of its own; its keys are deleted when the value is dropped.
pub struct TestRedis {
    /// The server URL.
    pub url: String,
    /// Names under this test's prefix.
    pub keys: Keys,
    /// A client for the test's own commands.
    pub client: redis::Client,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("prefix", &self.keys.prefix())
            .finish()
    }
}

impl TestRedis {
    /// A multiplexed connection for the test's own commands.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| no_backing("Redis", e))
    }
}

/// Gives one test its own key prefix.
pub async fn fresh_redis() -> TestRedis {
    let servers = servers().await;
    let client =
        redis::Client::open(servers.redis_url.as_str()).unwrap_or_else(|e| no_backing("Redis", e));
    // Fail here, with a clear message, rather than deep inside the test.
    let _ = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| no_backing("Redis", e));
    TestRedis {
        url: servers.redis_url.clone(),
        keys: Keys::new(format!("t{}", uuid::Uuid::new_v4().simple())),
        client,
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let client = self.client.clone();
        let prefix = self.keys.prefix().to_owned();
        let _ = std::thread::spawn(move || {
            let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
                return;
            };
            for pattern in [format!("{prefix}:*"), format!("{{{prefix}}}*")] {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
                }
            }
        })
        .join();
    }
}
