//! A real Redis Cluster of six nodes (three primaries, three replicas) on loopback ports, made by
//! `redis-server --cluster-enabled yes` and `redis-cli --cluster create --cluster-replicas 1`.
//!
//! Groundwork for running the services against cluster mode: the services still use a
//! single-node client, so tests use this to check what Redis itself says (slots, state).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Nodes in the cluster.
pub const NODES: usize = 6;

/// Six `redis-server` processes of this test; killed when the value is dropped.
pub struct RedisCluster {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: PathBuf,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

/// Six ports whose cluster bus ports (port + 10000) are free too.
fn free_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < NODES {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let p = l.local_addr().expect("its address").port();
        drop(l);
        if p < 55_000 && port_free(p + 10_000) && !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
}

impl RedisCluster {
    /// Starts six nodes and joins them into one cluster; returns once every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir =
            std::env::temp_dir().join(format!("airlock-rc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temp dir for the cluster");
        let ports = free_ports();
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: ports.clone(),
            dir: dir.clone(),
        };
        for p in &ports {
            let child = Command::new("redis-server")
                .arg("--port")
                .arg(p.to_string())
                .args(["--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(dir.join(format!("nodes-{p}.conf")))
                .arg("--dir")
                .arg(&dir)
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server) must be installed");
            cluster.children.push(child);
        }
        for p in &ports {
            cluster.wait_ping(*p).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &ports {
            cluster.wait_state_ok(*p).await;
        }
        cluster
    }

    /// The nodes' URLs (seed nodes for a cluster client).
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// A plain client of node `i`.
    pub fn node(&self, i: usize) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.ports[i])).expect("a node URL")
    }

    /// The slot Redis computes for `key`.
    pub async fn slot(&self, key: &str) -> u16 {
        let mut conn = self
            .node(0)
            .get_multiplexed_async_connection()
            .await
            .expect("node 0");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT")
    }

    /// `CLUSTER INFO` of node `i`.
    pub async fn info(&self, i: usize) -> String {
        let mut conn = self
            .node(i)
            .get_multiplexed_async_connection()
            .await
            .expect("a node");
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER INFO")
    }

    async fn wait_ping(&self, port: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("a URL");
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_state_ok(&self, port: u16) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let i = self
            .ports
            .iter()
            .position(|p| *p == port)
            .expect("our node");
        loop {
            if self.info(i).await.contains("cluster_state:ok") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {port} did not reach cluster_state:ok"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
