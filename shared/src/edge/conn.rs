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
        let (activity, seen) = watch::channel(Activity::default());
        let activity = Arc::new(activity);
        let requests = Requests::new(self.router, self.edge.clone(), activity.clone());
        let io = Watched { tcp, activity };
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
            why = watch(seen, &self.edge) => Some(why),
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

/// What the watch needs to know about a connection.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests whose head has arrived and whose response is not done.
    pub busy: usize,
    /// Bytes arrived while nothing was in flight: a request head has begun.
    pub head_begun: bool,
}

/// Why a connection is closed from our side.
enum Close {
    SlowHeader,
    Idle,
    Shutdown,
}

/// Completes when the connection should close: no request in flight for the idle timeout,
/// or a request head begun and not finished within the header timeout.
async fn watch(mut seen: watch::Receiver<Activity>, edge: &Edge) -> Close {
    loop {
        let (busy, head_begun) = {
            let a = seen.borrow_and_update();
            (a.busy > 0, a.head_begun)
        };
        let bound = if busy {
            None
        } else if head_begun {
            Some((edge.header_timeout, Close::SlowHeader))
        } else {
            Some((edge.idle_timeout, Close::Idle))
        };
        let Some((after, why)) = bound else {
            if seen.changed().await.is_err() {
                return Close::Idle;
            }
            continue;
        };
        // Every change is a step (a head begins, a request comes or goes, perhaps several
        // at once): look again and restart the clock.
        tokio::select! {
            () = tokio::time::sleep(after) => return why,
            r = seen.changed() => if r.is_err() { return Close::Idle },
        }
    }
}

/// The socket, telling the watch whenever bytes arrive.
struct Watched {
    tcp: TcpStream,
    activity: Arc<watch::Sender<Activity>>,
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
            // Bytes read while a request is in flight are its body (or a pipelined head
            // hyper parses next), not the start of a new head.
            self.activity.send_if_modified(|a| {
                let begins = a.busy == 0 && !a.head_begun;
                a.head_begun |= begins;
                begins
            });
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
