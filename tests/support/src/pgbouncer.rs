//! A real PgBouncer (the Debian package's `pgbouncer` binary) in transaction pooling mode, in
//! front of one test database, on a free loopback port; killed when the value is dropped.
//!
//! It is the pooler the services meet in production (PgBouncer, RDS Proxy): a client's
//! statements outside a transaction may each run on a different server connection.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether the `pgbouncer` binary is on the PATH (or in Debian's `/usr/sbin`).
pub fn installed() -> bool {
    binary().is_some()
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("pgbouncer"))
        .find(|p| p.is_file())
}

/// One `pgbouncer` process of this test.
pub struct PgBouncer {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl std::fmt::Debug for PgBouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBouncer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What a `postgres://` URL names: the server, the user and the database.
struct Target {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
}

fn target(url: &str) -> Target {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("database URL {url:?}: {e}"));
    Target {
        host: u.host_str().unwrap_or("127.0.0.1").to_owned(),
        port: u.port().unwrap_or(5432),
        user: if u.username().is_empty() {
            "postgres".to_owned()
        } else {
            u.username().to_owned()
        },
        password: u.password().map(str::to_owned),
        dbname: u.path().trim_start_matches('/').to_owned(),
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

/// PgBouncer refuses to run as root; as root it is told to switch to `nobody`, which must be
/// able to write its log into the directory.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn ini(t: &Target, port: u16, dir: &std::path::Path, pool_size: u32) -> String {
    let password = t
        .password
        .as_deref()
        .map(|p| format!(" password={p}"))
        .unwrap_or_default();
    format!(
        "[databases]\n\
         {db} = host={host} port={pgport} dbname={db} user={user}{password}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = 500\n\
         logfile = {dir}/pgbouncer.log\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         ignore_startup_parameters = extra_float_digits\n",
        db = t.dbname,
        host = t.host,
        pgport = t.port,
        user = t.user,
        dir = dir.display(),
    )
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode in front of the database `database_url` names,
    /// with 4 server connections.
    pub async fn start(database_url: &str) -> PgBouncer {
        Self::start_with(database_url, 4).await
    }

    /// The same with `pool_size` server connections (1 makes every client share one server).
    pub async fn start_with(database_url: &str, pool_size: u32) -> PgBouncer {
        let bin = binary().expect("pgbouncer (Debian package pgbouncer) must be installed");
        let t = target(database_url);
        let dir =
            std::env::temp_dir().join(format!("airlock-pgb-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temp dir for pgbouncer");
        let port = free_port();
        std::fs::write(dir.join("pgbouncer.ini"), ini(&t, port, &dir, pool_size))
            .expect("write pgbouncer.ini");
        std::fs::write(dir.join("userlist.txt"), format!("\"{}\" \"\"\n", t.user))
            .expect("write userlist.txt");
        let mut cmd = Command::new(bin);
        if running_as_root() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .expect("let nobody write the log");
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let mut bouncer = PgBouncer {
            child,
            url: format!("postgres://{}@127.0.0.1:{port}/{}", t.user, t.dbname),
            dir,
        };
        bouncer.wait_listening(port).await;
        bouncer
    }

    async fn wait_listening(&mut self, port: u16) {
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgbouncer exited ({status}): {}", self.log());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("pgbouncer did not listen within 5 s: {}", self.log());
    }

    /// The URL of the database through PgBouncer.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
