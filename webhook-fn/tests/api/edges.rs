//! The webhook's HTTP server sits behind the shared edge: slow and idle clients are dropped.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_with;

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let app = spawn_with(|c| {
        c.edge.header_timeout = Duration::from_millis(500);
        c.edge.idle_timeout = Duration::from_millis(800);
    })
    .await;

    let started = Instant::now();
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /slack/actions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "a half-sent head was kept open");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut out)).await;
    let got = String::from_utf8_lossy(&out);
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}
