//! The Redis lease against a real Redis (`REDIS_URL`, default 127.0.0.1:6379).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_shared::{Keys, TicketId, lease};
use redis::aio::MultiplexedConnection;

async fn setup() -> (MultiplexedConnection, String) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = redis::Client::open(url).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new(format!("leasetest-{}", uuid::Uuid::new_v4().simple()));
    (conn, keys.notify_post_claim(&TicketId::new()))
}

#[tokio::test]
async fn one_owner_at_a_time_and_only_the_owner_releases() {
    let (mut conn, key) = setup().await;
    let ttl = Duration::from_secs(10);
    assert!(lease::acquire(&mut conn, &key, "a", ttl).await.unwrap());
    assert!(!lease::acquire(&mut conn, &key, "b", ttl).await.unwrap());
    assert!(!lease::release(&mut conn, &key, "b").await.unwrap());
    assert!(!lease::extend(&mut conn, &key, "b", ttl).await.unwrap());
    assert!(
        !lease::acquire(&mut conn, &key, "b", ttl).await.unwrap(),
        "a wrong owner's release did nothing"
    );
    assert!(lease::release(&mut conn, &key, "a").await.unwrap());
    assert!(lease::acquire(&mut conn, &key, "b", ttl).await.unwrap());
    lease::release(&mut conn, &key, "b").await.unwrap();
}

#[tokio::test]
async fn a_lease_lapses_unless_extended() {
    let (mut conn, key) = setup().await;
    let short = Duration::from_millis(300);
    assert!(lease::acquire(&mut conn, &key, "a", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(lease::extend(&mut conn, &key, "a", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !lease::acquire(&mut conn, &key, "b", short).await.unwrap(),
        "extended past its first expiry"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lease::acquire(&mut conn, &key, "b", short).await.unwrap(),
        "lapsed"
    );
    assert!(!lease::extend(&mut conn, &key, "a", short).await.unwrap());
    assert!(!lease::release(&mut conn, &key, "a").await.unwrap());
    lease::release(&mut conn, &key, "b").await.unwrap();
}
