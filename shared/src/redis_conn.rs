//! One Redis connection type for both deployments: a single node (or a primary with replicas
//! behind one endpoint) and Redis Cluster.
//!
//! Every service holds a [`RedisConn`] and sends commands through [`redis::aio::ConnectionLike`],
//! so the code above it does not know which one it talks to. In cluster mode each
//! [`RedisConn`] keeps one multiplexed connection per cluster node (the redis crate's
//! `ClusterConnection`), and every multi-key command, script and transaction stays on one slot
//! (see [`crate::keys`]).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::config::Env;

/// How the services reach Redis (`REDIS_CLUSTER`, `REDIS_CLUSTER_NODES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// One endpoint (`REDIS_URL`).
    #[default]
    Single,
    /// Redis Cluster. `nodes` (`host:port`) are the seeds asked for the topology; when empty,
    /// `REDIS_URL`'s node is the seed. Seeds take `REDIS_URL`'s scheme and credentials.
    Cluster { nodes: Vec<String> },
}

impl RedisMode {
    /// Reads `REDIS_CLUSTER` (`true`/`false`) and `REDIS_CLUSTER_NODES` (`host:port,...`, which
    /// implies cluster mode); problems go to `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let explicit = env.raw("REDIS_CLUSTER").is_some();
        let flag = env.flag("REDIS_CLUSTER", false);
        let raw = env.raw("REDIS_CLUSTER_NODES").map(str::to_owned);
        let Some(raw) = raw else {
            return if flag {
                Self::Cluster { nodes: Vec::new() }
            } else {
                Self::Single
            };
        };
        if explicit && !flag {
            env.problem("REDIS_CLUSTER_NODES is set but REDIS_CLUSTER is false");
        }
        let mut nodes = Vec::new();
        for n in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match n.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    nodes.push(n.to_owned());
                }
                _ => env.problem(format!(
                    "REDIS_CLUSTER_NODES: {n:?} is not host:port (e.g. 10.0.0.5:6379)"
                )),
            }
        }
        Self::Cluster { nodes }
    }

    /// Whether this is Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }

    /// The seed URLs of a cluster: each node with `url`'s scheme and credentials.
    pub fn seeds(&self, url: &str) -> Result<Vec<String>, RedisError> {
        let Self::Cluster { nodes } = self else {
            return Ok(vec![url.to_owned()]);
        };
        if nodes.is_empty() {
            return Ok(vec![url.to_owned()]);
        }
        let base = url::Url::parse(url).map_err(|e| invalid("REDIS_URL", e.to_string()))?;
        nodes
            .iter()
            .map(|node| {
                let (host, port) = node
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .ok_or_else(|| invalid("cluster node", node.clone()))?;
                let mut u = base.clone();
                u.set_host(Some(host))
                    .map_err(|e| invalid("cluster node", e.to_string()))?;
                u.set_port(Some(port))
                    .map_err(|()| invalid("cluster node", node.clone()))?;
                Ok(u.to_string())
            })
            .collect()
    }
}

fn invalid(what: &'static str, detail: String) -> RedisError {
    RedisError::from((redis::ErrorKind::InvalidClientConfig, what, detail))
}

/// Timeouts and retries of one connection.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnOpts {
    /// How long connecting to a node may take.
    pub connection_timeout: Option<Duration>,
    /// How long one reply may take (a blocking read needs more than its block time).
    pub response_timeout: Option<Duration>,
    /// Retries of a failed command (reconnects, redirects).
    pub retries: Option<usize>,
}

/// A Redis connection for commands: a single node's `ConnectionManager` or a cluster's
/// `ClusterConnection`. Cloning shares the underlying connections.
#[derive(Clone)]
pub enum RedisConn {
    /// One node; reconnects on its own.
    Single(ConnectionManager),
    /// Redis Cluster: one multiplexed connection per node, routed by slot, following
    /// `MOVED`/`ASK` and topology changes.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// Connects now (start-up fails if Redis is down).
    pub async fn connect(url: &str, mode: &RedisMode, opts: ConnOpts) -> Result<Self, RedisError> {
        match mode {
            RedisMode::Single => {
                let client = redis::Client::open(url)?;
                Ok(Self::Single(
                    ConnectionManager::new_with_config(client, manager_config(opts)).await?,
                ))
            }
            RedisMode::Cluster { .. } => {
                let client = cluster_builder(url, mode, opts)?.build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Connects on first use (a cold start does not wait for Redis).
    pub fn lazy(url: &str, mode: &RedisMode, opts: ConnOpts) -> Result<Self, RedisError> {
        match mode {
            RedisMode::Single => {
                let client = redis::Client::open(url)?;
                Ok(Self::Single(ConnectionManager::new_lazy_with_config(
                    client,
                    manager_config(opts),
                )?))
            }
            RedisMode::Cluster { .. } => {
                let client = cluster_builder(url, mode, opts)?.build()?;
                // This config replaces the client's timeouts, so it carries them again.
                let mut cfg = redis::cluster::ClusterConfig::new();
                if let Some(t) = opts.connection_timeout {
                    cfg = cfg.set_connection_timeout(t);
                }
                if let Some(t) = opts.response_timeout {
                    cfg = cfg.set_response_timeout(t);
                }
                Ok(Self::Cluster(
                    client.get_pending_async_connection_with_config(cfg),
                ))
            }
        }
    }

    /// Whether this talks to Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

fn manager_config(opts: ConnOpts) -> ConnectionManagerConfig {
    // Unset options keep the crate's defaults (it has default timeouts).
    let mut cfg = ConnectionManagerConfig::new();
    if let Some(t) = opts.connection_timeout {
        cfg = cfg.set_connection_timeout(Some(t));
    }
    if let Some(t) = opts.response_timeout {
        cfg = cfg.set_response_timeout(Some(t));
    }
    if let Some(n) = opts.retries {
        cfg = cfg.set_number_of_retries(n);
    }
    cfg
}

/// A cluster client builder for `url` and `mode`'s seeds, with `opts` applied.
pub fn cluster_builder(
    url: &str,
    mode: &RedisMode,
    opts: ConnOpts,
) -> Result<ClusterClientBuilder, RedisError> {
    let mut b = ClusterClientBuilder::new(mode.seeds(url)?);
    if let Some(t) = opts.connection_timeout {
        b = b.connection_timeout(t);
    }
    if let Some(t) = opts.response_timeout {
        b = b.response_timeout(t);
    }
    if let Some(n) = opts.retries {
        b = b.retries(u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(b)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(pairs: &[(&str, &str)]) -> (RedisMode, Result<(), crate::config::ConfigError>) {
        let mut env = Env::from_pairs(pairs);
        let m = RedisMode::from_env(&mut env);
        (m, env.finish())
    }

    #[test]
    fn cluster_mode_from_the_flag_or_the_node_list() {
        assert_eq!(mode(&[]).0, RedisMode::Single);
        assert_eq!(mode(&[("REDIS_CLUSTER", "false")]).0, RedisMode::Single);
        assert_eq!(
            mode(&[("REDIS_CLUSTER", "true")]).0,
            RedisMode::Cluster { nodes: vec![] }
        );
        let (m, ok) = mode(&[("REDIS_CLUSTER_NODES", "a:1, b:2,")]);
        assert!(ok.is_ok());
        assert_eq!(
            m,
            RedisMode::Cluster {
                nodes: vec!["a:1".into(), "b:2".into()]
            }
        );
    }

    #[test]
    fn every_bad_setting_is_reported() {
        let (_, err) = mode(&[
            ("REDIS_CLUSTER", "false"),
            ("REDIS_CLUSTER_NODES", "a:1,nope,b:99999"),
        ]);
        let problems = err.err().map(|e| e.problems).unwrap_or_default();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn seeds_take_the_url_scheme_and_credentials() {
        let m = RedisMode::Cluster {
            nodes: vec!["10.0.0.5:7000".into(), "cache-2:7001".into()],
        };
        let seeds = m.seeds("rediss://:pw@cache:6379").unwrap_or_default();
        assert_eq!(
            seeds,
            vec!["rediss://:pw@10.0.0.5:7000", "rediss://:pw@cache-2:7001"]
        );
        let seeds = RedisMode::Cluster { nodes: vec![] }
            .seeds("redis://h:1")
            .unwrap_or_default();
        assert_eq!(seeds, vec!["redis://h:1"]);
    }
}
