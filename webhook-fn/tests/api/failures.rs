//! Failure injection: Postgres down or hung means 500 and nothing published; Redis down means
//! 200 with the decision stored.

use std::time::{Duration, Instant};

use airlock_shared::ticket;
use airlock_shared::{TicketId, TicketStatus};
use futures::StreamExt;

use crate::helpers::*;

#[tokio::test]
async fn postgres_down_answers_500_and_publishes_nothing() {
    let port = closed_port().await;
    let app = spawn_with(|c| {
        c.database_url = format!("postgres://postgres@127.0.0.1:{port}/airlock").into();
    })
    .await;
    let mut signals = Signals::subscribe(&app.redis).await;
    // A ticket that exists in the real database, so only the outage can stop the click.
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let started = Instant::now();
    let resp = app.post_signed(approve_body(id, "U1")).await;
    assert_eq!(resp.status(), 500);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(signals.drain(Duration::from_millis(200)).await.is_empty());
    assert!(app.jobs().await.is_empty());
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(
        app.metrics()
            .await
            .contains("airlock_webhook_requests_total{outcome=\"database_error\"} 1")
    );
}

#[tokio::test]
async fn a_dropped_database_answers_500() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    // Warm the app's pool first, so the failure hits live connections.
    assert_eq!(
        app.post_signed(approve_body(TicketId::new(), "U1"))
            .await
            .status(),
        200
    );
    app.db.drop_now().await;
    let resp = app.post_signed(approve_body(id, "U1")).await;
    assert_eq!(resp.status(), 500);
    let got = signals.drain(Duration::from_millis(200)).await;
    assert!(got.is_empty(), "{got:?}");
    // Only the refusal for the warm-up click is on the stream.
    assert_eq!(app.jobs().await.len(), 1);
}

#[tokio::test]
async fn a_hung_postgres_times_out_with_500_inside_slacks_budget() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let lock = app.db.lock_tickets_table().await;
    let started = Instant::now();
    let resp = app.post_signed(approve_body(id, "U1")).await;
    let took = started.elapsed();
    assert_eq!(resp.status(), 500);
    assert!(took < Duration::from_secs(3), "{took:?}");
    lock.release().await;
    assert!(signals.drain(Duration::from_millis(200)).await.is_empty());
    assert!(app.jobs().await.is_empty());
    // The timed-out read never reached the update.
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
}

#[tokio::test]
async fn redis_down_still_answers_200_and_the_decision_is_stored() {
    let port = closed_port().await;
    let app = spawn_with(|c| {
        c.redis_url = format!("redis://127.0.0.1:{port}").into();
    })
    .await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let started = Instant::now();
    let resp = app.post_signed(approve_body(id, "U1")).await;
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let row = app.ticket(id).await;
    assert_eq!(row.status, TicketStatus::Approved);
    // The gateway's Postgres check finds it without any signal.
    let settled = ticket::settled(&app.db.pool, &[id]).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].status, TicketStatus::Approved);
    let m = app.metrics().await;
    assert!(
        m.contains("airlock_webhook_redis_failures_total{step=\"publish\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("airlock_webhook_redis_failures_total{step=\"enqueue\"} 1"),
        "{m}"
    );
    // Nothing reached the real Redis under this prefix either.
    assert!(app.jobs().await.is_empty());

    // A refused click with Redis down is also a 200.
    assert_eq!(app.post_signed(approve_body(id, "U2")).await.status(), 200);
    assert!(
        app.metrics()
            .await
            .contains("airlock_webhook_redis_failures_total{step=\"enqueue_refusal\"} 1")
    );
}

/// A warm instance whose Redis was down reconnects once Redis is back, without a restart.
#[tokio::test]
async fn redis_coming_back_is_picked_up() {
    let port = closed_port().await;
    let app = spawn_with(|c| {
        c.redis_url = format!("redis://127.0.0.1:{port}").into();
    })
    .await;
    let first = app.open_ticket(&[], Duration::from_secs(600)).await;
    assert_eq!(
        app.post_signed(approve_body(first, "U1")).await.status(),
        200
    );
    assert_eq!(app.ticket(first).await.status, TicketStatus::Approved);

    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server runs");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(child);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pubsub = loop {
        if let Ok(p) = client.get_async_pubsub().await {
            break p;
        }
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    pubsub
        .subscribe(app.redis.keys.decisions_channel())
        .await
        .unwrap();
    let mut messages = pubsub.into_on_message();

    let second = app.open_ticket(&[], Duration::from_secs(600)).await;
    assert_eq!(
        app.post_signed(approve_body(second, "U1")).await.status(),
        200
    );
    // The connection manager reconnects on its own backoff; on a loaded machine that can take
    // a few seconds, and the point is that it comes back without a restart.
    let msg = tokio::time::timeout(Duration::from_secs(6), messages.next())
        .await
        .expect("a signal once redis is back")
        .unwrap();
    let signal = airlock_shared::signal::parse(msg.get_payload_bytes()).unwrap();
    assert_eq!(signal.ticket_id, second);
    assert_eq!(signal.status, TicketStatus::Approved);
}
