//! A real Redis Cluster of six nodes (three primaries, three replicas) on loopback ports, made by
//! `redis-server --cluster-enabled yes` and `redis-cli --cluster create --cluster-replicas 1`.
//!
//! The services run against it in cluster mode (`RedisMode::Cluster`); tests also use it to check
//! what Redis itself says (slots, state) and to fail a primary over to its replica.

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

    /// The services' cluster mode for this cluster (every node a seed).
    pub fn mode(&self) -> airlock_shared::RedisMode {
        airlock_shared::RedisMode::Cluster {
            nodes: self
                .ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
        }
    }

    /// A cluster connection for the test's own commands.
    pub async fn conn(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .expect("a cluster client")
            .get_async_connection()
            .await
            .expect("a cluster connection")
    }

    /// A RESP3 cluster connection whose pub/sub messages arrive on the returned receiver.
    pub async fn subscriber(
        &self,
    ) -> (
        redis::cluster_async::ClusterConnection,
        tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = redis::cluster::ClusterClientBuilder::new(self.urls())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()
            .expect("a cluster client")
            .get_async_connection()
            .await
            .expect("a cluster connection");
        (conn, rx)
    }

    /// `CLUSTER NODES` as node `i` sees it: (port, is primary, primary's id or "-", own id, slots).
    async fn nodes(&self, i: usize) -> Vec<(u16, bool, String, String, String)> {
        let mut conn = self
            .node(i)
            .get_multiplexed_async_connection()
            .await
            .expect("a node");
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER NODES");
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let primary = f.get(2)?.contains("master");
                let slots = f.get(8..).map(|s| s.join(" ")).unwrap_or_default();
                Some((
                    port,
                    primary,
                    f.get(3)?.to_string(),
                    f.first()?.to_string(),
                    slots,
                ))
            })
            .collect()
    }

    /// The index of the primary that serves `key` now.
    pub async fn primary_of(&self, key: &str) -> usize {
        let slot = self.slot(key).await;
        for (port, primary, _, _, slots) in self.nodes(0).await {
            let owns = slots.split(' ').any(|r| {
                let mut b = r.split('-').filter_map(|x| x.parse::<u16>().ok());
                match (b.next(), b.next()) {
                    (Some(lo), Some(hi)) => (lo..=hi).contains(&slot),
                    (Some(one), None) => one == slot,
                    _ => false,
                }
            });
            if primary && owns {
                return self.index(port);
            }
        }
        panic!("no primary serves slot {slot}");
    }

    /// The index of a replica of primary `i`. Waits up to 10 s: right after the cluster is
    /// created, gossip may not have told node `i` of its replica yet.
    pub async fn replica_of(&self, i: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let nodes = self.nodes(i).await;
            let id = nodes
                .iter()
                .find(|n| n.0 == self.ports[i])
                .map(|n| n.3.clone())
                .expect("the node itself");
            if let Some(port) = nodes.iter().find(|n| n.2 == id).map(|n| n.0) {
                return self.index(port);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {i} has no replica after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `CLUSTER FAILOVER` on replica `i`; returns once node `i` is a primary and the cluster is ok.
    pub async fn failover(&self, i: usize) {
        let mut conn = self
            .node(i)
            .get_multiplexed_async_connection()
            .await
            .expect("the replica");
        let _: String = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER FAILOVER");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(&mut conn)
                .await
                .expect("ROLE");
            if matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "failover did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Every node's view (node 0's is the one `primary_of` reads) must show the new primary.
        for j in 0..NODES {
            loop {
                let view = self.nodes(j).await;
                if view.iter().any(|n| n.0 == self.ports[i] && n.1) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {j} missed the failover"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for p in self.ports.clone() {
            self.wait_state_ok(p).await;
        }
    }

    /// Every entry of `stream`, oldest first, as field maps (read through the cluster).
    pub async fn entries(&self, stream: &str) -> Vec<std::collections::HashMap<String, String>> {
        crate::streams::read_entries(&mut self.conn().await, stream).await
    }

    /// The jobs on `keys`' notification stream, oldest first.
    pub async fn notify_jobs(&self, keys: &airlock_shared::Keys) -> Vec<airlock_shared::NotifyJob> {
        self.entries(&keys.notify_stream())
            .await
            .into_iter()
            .map(|e| serde_json::from_str(&e[airlock_shared::keys::JOB_FIELD]).expect("job json"))
            .collect()
    }

    fn index(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("our node")
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
