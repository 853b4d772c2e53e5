//! The HTTP edge both services sit behind: bounded header and body reads, an idle keep-alive
//! timeout, a connection cap, an immediate 413 for a declared oversized body, and graceful
//! shutdown. One accept loop over hyper, serving an axum `Router`.

mod conn;
mod request;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Env;

/// Limits at the edge, from `HEADER_READ_TIMEOUT`, `BODY_TIMEOUT`, `IDLE_TIMEOUT` and
/// `MAX_CONNECTIONS`; `max_body_bytes` is the service's own body limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// A request head must arrive completely within this, from the first byte.
    pub header_timeout: Duration,
    /// A request body must arrive completely within this, from the end of its head; late
    /// bodies get 408 and the connection is closed.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this. Long
    /// responses (held calls, SSE streams) count as in flight.
    pub idle_timeout: Duration,
    /// Connections served at once; when full, accepting pauses until one closes.
    pub max_connections: usize,
    /// A declared `Content-Length` above this gets 413 at once, unread.
    pub max_body_bytes: usize,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
            max_body_bytes: 4 << 20,
        }
    }
}

impl Edge {
    /// Reads the edge variables, falling back to `defaults` (whose `max_body_bytes` is kept).
    pub fn from_env(env: &mut Env, defaults: Edge) -> Edge {
        let max_connections: usize = env.or("MAX_CONNECTIONS", defaults.max_connections);
        if max_connections == 0 {
            env.problem("MAX_CONNECTIONS: must be at least 1");
        }
        Edge {
            header_timeout: env.duration("HEADER_READ_TIMEOUT", defaults.header_timeout),
            body_timeout: env.duration("BODY_TIMEOUT", defaults.body_timeout),
            idle_timeout: env.duration("IDLE_TIMEOUT", defaults.idle_timeout),
            max_connections: max_connections.max(1),
            max_body_bytes: defaults.max_body_bytes,
        }
    }
}

/// What the edge has seen, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    saturated: AtomicU64,
}

impl Stats {
    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Times accepting paused because every connection slot was taken.
    pub fn saturated(&self) -> u64 {
        self.saturated.load(Ordering::Relaxed)
    }
}

/// An HTTP server with the edge's limits.
#[derive(Debug)]
pub struct Server {
    edge: Arc<Edge>,
    stats: Arc<Stats>,
}

impl Server {
    /// A server with these limits.
    pub fn new(edge: Edge) -> Self {
        Self {
            edge: Arc::new(edge),
            stats: Arc::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves `router` until `shutdown` completes; then stops accepting and returns once every
    /// open connection has finished its requests. Dropping the future closes them all.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let slots = Arc::new(Semaphore::new(self.edge.max_connections));
        let stop = CancellationToken::new();
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    let times = self.stats.saturated.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(
                        max = self.edge.max_connections,
                        times,
                        "connection limit reached; accepting paused until one closes"
                    );
                    tokio::select! {
                        p = slots.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                        () = &mut shutdown => break,
                    }
                }
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let conn = conn::Conn {
                edge: self.edge.clone(),
                stats: self.stats.clone(),
                router: router.clone(),
                stop: stop.clone(),
                _permit: permit,
            };
            conns.spawn(conn.run(tcp, peer));
        }
        drop(listener);
        stop.cancel();
        while conns.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_environment_and_bad_ones_are_reported() {
        let mut env = Env::from_pairs(&[
            ("HEADER_READ_TIMEOUT", "2s"),
            ("IDLE_TIMEOUT", "90s"),
            ("MAX_CONNECTIONS", "0"),
            ("BODY_TIMEOUT", "soon"),
        ]);
        let defaults = Edge {
            max_body_bytes: 64,
            ..Edge::default()
        };
        let edge = Edge::from_env(&mut env, defaults.clone());
        assert_eq!(edge.header_timeout, Duration::from_secs(2));
        assert_eq!(edge.idle_timeout, Duration::from_secs(90));
        assert_eq!(edge.body_timeout, defaults.body_timeout);
        assert_eq!(edge.max_body_bytes, 64);
        let err = env.finish().unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
    }
}
