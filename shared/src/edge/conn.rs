//! One accepted connection: hyper with a header timer, plus the idle watch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use super::request::Requests;
use super::{Edge, Stats};

/// What a connection task needs.
pub(super) struct Conn {
    pub edge: Arc<Edge>,
    pub stats: Arc<Stats>,
    pub router: Router,
    pub stop: CancellationToken,
    /// Held for the connection's life: its slot under the cap.
    pub _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Serves the connection until it closes, idles out, or the server stops and it drains.
    pub async fn run(self, tcp: TcpStream, peer: SocketAddr) {
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        // Relayed bodies are written in several small pieces; without TCP_NODELAY, Nagle and
        // delayed ACKs add ~40 ms to every streamed answer.
        let _ = tcp.set_nodelay(true);
        let (busy_tx, busy_rx) = watch::channel(0usize);
        let requests = Requests::new(self.router, self.edge.clone(), Arc::new(busy_tx));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.edge.header_timeout);
        builder.http2().timer(TokioTimer::new());
        let conn = builder.serve_connection(TokioIo::new(tcp), requests);
        tokio::pin!(conn);
        let why = tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                None
            }
            () = idle(busy_rx, self.edge.idle_timeout) => Some("idle"),
            () = self.stop.cancelled() => Some("shutdown"),
        };
        if let Some(why) = why {
            tracing::debug!(%peer, why, "closing connection");
            conn.as_mut().graceful_shutdown();
            if why == "idle" {
                // A request that started just now still gets its header timeout to finish.
                let _ = tokio::time::timeout(self.edge.header_timeout, conn).await;
            } else {
                let _ = conn.await;
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Completes once no request has been in flight for `timeout`.
async fn idle(mut busy: watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *busy.borrow_and_update() > 0 {
            if busy.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(timeout) => return,
            r = busy.changed() => if r.is_err() { return },
        }
    }
}
