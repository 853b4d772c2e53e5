//! One accepted connection: hyper, plus a watch that closes it when idle or slow.
//!
//! The header timer is ours, not hyper's: hyper's h1 timer also runs while a keep-alive
//! connection waits for its next request, which would cap the idle timeout at the header
//! timeout. Ours starts at the first byte read while no request is in flight, for h1 and h2.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
        let (reads_tx, reads_rx) = watch::channel(0u64);
        let requests = Requests::new(self.router, self.edge.clone(), Arc::new(busy_tx));
        let io = Watched {
            tcp,
            reads: reads_tx,
        };
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(io), requests);
        tokio::pin!(conn);
        let why = tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                None
            }
            why = watch(busy_rx, reads_rx, &self.edge) => Some(why),
            () = self.stop.cancelled() => Some(Close::Shutdown),
        };
        match why {
            None => {}
            Some(Close::SlowHeader) => {
                tracing::debug!(%peer, "request head too slow; closing");
            }
            Some(Close::Idle) => {
                conn.as_mut().graceful_shutdown();
                // A request that started just now still gets the header timeout to finish.
                let _ = tokio::time::timeout(self.edge.header_timeout, conn).await;
            }
            Some(Close::Shutdown) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection is closed from our side.
enum Close {
    SlowHeader,
    Idle,
    Shutdown,
}

/// Completes when the connection should close: no request in flight for the idle timeout,
/// or a request head begun and not finished within the header timeout.
async fn watch(
    mut busy: watch::Receiver<usize>,
    mut reads: watch::Receiver<u64>,
    edge: &Edge,
) -> Close {
    loop {
        if *busy.borrow_and_update() > 0 {
            if busy.changed().await.is_err() {
                return Close::Idle;
            }
            continue;
        }
        // Bytes read while busy were that request's; only new ones start a head.
        reads.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(edge.idle_timeout) => return Close::Idle,
            r = busy.changed() => if r.is_err() { return Close::Idle },
            r = reads.changed() => {
                if r.is_err() {
                    return Close::Idle;
                }
                tokio::select! {
                    () = tokio::time::sleep(edge.header_timeout) => return Close::SlowHeader,
                    r = busy.changed() => if r.is_err() { return Close::Idle },
                }
            }
        }
    }
}

/// The socket, telling the watch whenever bytes arrive.
struct Watched {
    tcp: TcpStream,
    reads: watch::Sender<u64>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.reads.send_modify(|n| *n = n.wrapping_add(1));
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
