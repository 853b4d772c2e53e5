//! The HTTP edge over real sockets: slow clients are dropped, long responses are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_shared::edge::{Edge, Server, Stats};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/stream", get(stream))
}

/// Five chunks, 400 ms apart: longer than the idle timeout in these tests.
async fn stream() -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tx.send(Ok(Bytes::from(format!("data: {i}\n\n")))).await;
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn limits() -> Edge {
    Edge {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        max_connections: 64,
        max_body_bytes: 1024,
    }
}

struct Running {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(edge: Edge) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(edge);
    let stats = server.stats();
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(server.serve(listener, router(), async move { s.cancelled().await }));
    Running {
        addr,
        stats,
        _stop: stop.drop_guard(),
    }
}

/// Reads until the peer closes; returns what came and when it closed.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> (String, Option<Instant>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::sleep(within);
    tokio::pin!(end);
    loop {
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return (String::from_utf8_lossy(&out).into_owned(), Some(Instant::now())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            },
            () = &mut end => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

/// Reads until `needle` shows (or `within` passes).
async fn read_until(tcp: &mut TcpStream, needle: &str, within: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(within, async {
        while !String::from_utf8_lossy(&out).contains(needle) {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn get_ok(tcp: &mut TcpStream) {
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until(tcp, "\r\n\r\nok", Duration::from_secs(1)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
}

#[tokio::test]
async fn a_trickled_header_is_cut_at_the_header_timeout_while_others_are_served() {
    let app = start(Edge {
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let trickle = tokio::spawn(async move {
        let head =
            b"GET / HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(500), slow.read(&mut byte));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return Some(Instant::now());
            }
        }
        None
    });
    let mut other = TcpStream::connect(app.addr).await.unwrap();
    for _ in 0..4 {
        get_ok(&mut other).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed = trickle
        .await
        .unwrap()
        .expect("the trickling connection was never closed");
    let took = closed - started;
    assert!(took < Duration::from_millis(2000), "closed after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_the_body_timeout() {
    let app = start(limits()).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), rd.read_to_end(&mut out)).await;
    let took = started.elapsed();
    let got = String::from_utf8_lossy(&out);
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    trickle.abort();
}

#[tokio::test]
async fn a_declared_oversized_body_gets_413_at_once_unread() {
    let app = start(limits()).await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1073741824\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (got, closed) = read_to_close(&mut tcp, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got:?}");
    assert!(closed.is_some(), "the connection stayed open: {got:?}");
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_stream_is_not() {
    let app = start(Edge {
        header_timeout: Duration::from_secs(5),
        ..limits()
    })
    .await;
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    get_ok(&mut idle).await;
    let served = Instant::now();

    let mut streaming = TcpStream::connect(app.addr).await.unwrap();
    streaming
        .write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let body = read_until(&mut streaming, "data: 4", Duration::from_secs(4)).await;
    assert!(body.contains("data: 4"), "stream cut short: {body:?}");

    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(2)).await;
    let closed = closed.expect("the idle connection was never closed");
    let took = closed - served;
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_millis(3000), "closed after {took:?}");
}

#[tokio::test]
async fn the_connection_cap_pauses_accepting_until_a_slot_frees() {
    let app = start(Edge {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        max_connections: 2,
        ..limits()
    })
    .await;
    let mut first = TcpStream::connect(app.addr).await.unwrap();
    get_ok(&mut first).await;
    let mut second = TcpStream::connect(app.addr).await.unwrap();
    get_ok(&mut second).await;
    assert_eq!(app.stats.open(), 2);

    let mut third = TcpStream::connect(app.addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let early = read_until(&mut third, "ok", Duration::from_millis(500)).await;
    assert_eq!(early, "", "the third connection was served over the cap");
    assert!(app.stats.saturated() >= 1);

    drop(first);
    let late = read_until(&mut third, "\r\n\r\nok", Duration::from_secs(2)).await;
    assert!(late.starts_with("HTTP/1.1 200"), "{late:?}");
    get_ok(&mut second).await;
}

#[tokio::test]
async fn an_idle_connection_outlives_a_shorter_header_timeout() {
    let app = start(Edge {
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(1500),
        ..limits()
    })
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    get_ok(&mut tcp).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    get_ok(&mut tcp).await;
    let served = Instant::now();
    let (_, closed) = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    let took = closed.expect("the idle connection was never closed") - served;
    assert!(
        took >= Duration::from_millis(1400),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn a_head_sent_in_part_at_once_is_cut_at_the_header_timeout() {
    let app = start(Edge {
        idle_timeout: Duration::from_secs(30),
        ..limits()
    })
    .await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut tcp, Duration::from_secs(3)).await;
    let took = closed.expect("the half-sent head was kept open") - started;
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
}
