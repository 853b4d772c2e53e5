//! The gateway sits behind the shared HTTP edge: slow and oversized requests are cut there.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{spawn_app, start_gateway};

/// Reads until the peer closes (or `within` passes); what came, and whether it closed.
async fn read_to_close(tcp: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(within, tcp.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn slow_heads_and_declared_oversized_bodies_are_cut_at_the_edge() {
    let app = spawn_app().await;
    let mut config = app.second_config();
    config.edge.header_timeout = Duration::from_millis(500);
    config.edge.max_body_bytes = 1024;
    let (addr, shutdown, _server) = start_gateway(&config).await;

    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /mcp HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_to_close(&mut slow, Duration::from_secs(3)).await;
    assert!(closed, "a half-sent head was kept open");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(
        b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1073741824\r\n\r\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (got, closed) = read_to_close(&mut big, Duration::from_secs(2)).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got:?}");
    assert!(closed && started.elapsed() < Duration::from_millis(500));
    shutdown.cancel();
}
