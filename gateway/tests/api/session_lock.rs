//! The session lock: a retry takes over its own call, waiters are served in arrival order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use airlock_shared::SessionId;
use airlock_shared::ticket::Decision;
use serde_json::{Value, json};

use super::helpers::*;

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp")
}

/// Counts the hand-overs announced to other pods on the release channel from now on.
async fn announcements(app: &TestApp) -> Arc<AtomicUsize> {
    let client = redis::Client::open(app.redis.url.as_str()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(app.redis.keys.lock_released_channel())
        .await
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut messages = sub.on_message();
        while messages.next().await.is_some() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    seen
}

/// Sends calls `slow {ms, n}` for n in 0..8, 20 ms apart, through `urls` in turn, and checks
/// they reach the upstream in that order with no `session busy`, each waiter woken when its turn
/// comes (a lost wake-up would leave it to its half-second re-check). Returns how many
/// hand-overs were announced to other pods.
async fn eight_in_order(app: &TestApp, urls: &[String]) -> usize {
    let sid = app.initialize(BILLING_TOKEN).await;
    // Each instance has looked the session up once, so none starts slower than the other.
    for u in urls {
        let warm = spawn_call(
            u.clone(),
            sid.clone(),
            99,
            "list_charges",
            json!({}),
            "application/json",
        );
        assert!(warm.await.unwrap().code().is_none());
    }
    let announced = announcements(app).await;
    let started = Instant::now();
    let mut calls = Vec::new();
    for n in 0..8i64 {
        let u = urls[n as usize % urls.len()].clone();
        let args = json!({"ms": 40, "n": n});
        calls.push(spawn_call(
            u,
            sid.clone(),
            n,
            "slow",
            args,
            "application/json",
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in calls {
        let a = c.await.unwrap();
        assert!(a.code().is_none(), "{:?}", a.body);
    }
    // 8 × 40 ms of upstream work, 160 ms of arrivals; turns left to the re-check take seconds.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    let order: Vec<Value> = app
        .upstream
        .calls()
        .iter()
        .filter(|c| c.tool == "slow")
        .map(|c| c.arguments["n"].clone())
        .collect();
    assert_eq!(order, (0..8).map(Value::from).collect::<Vec<_>>());
    announced.load(Ordering::SeqCst)
}

#[tokio::test]
async fn eight_parallel_calls_run_in_arrival_order() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    // Every waiter is on the releasing pod: woken from the release's reply, nothing announced.
    assert_eq!(eight_in_order(&app, &[app.url()]).await, 0);
}

#[tokio::test]
async fn across_two_instances_the_order_holds() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    // Each turn passes to the other instance, which only the announcement wakes.
    let announced = eight_in_order(&app, &[app.url(), url(addr)]).await;
    assert!(announced >= 6, "{announced} hand-overs announced");
    shutdown.cancel();
}

#[tokio::test]
async fn a_retry_after_a_crash_takes_over_its_own_lock() {
    let app = spawn_with(Opts {
        shutdown_grace: Duration::from_millis(200),
        lock_acquire_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let args = json!({"amount": 500, "currency": "usd"});
    let first = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "create_refund",
        args.clone(),
        "application/json",
    );
    let id = app.wait_for_request().await;
    let key = app.redis.keys.session_lock(&SessionId(sid.clone()));
    let mut conn = app.redis.conn().await;
    let held: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    app.shutdown.cancel();
    assert_eq!(first.await.unwrap().message(), "approval interrupted");
    // A crashed pod releases nothing: its lock stays until the TTL.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&held)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    let started = Instant::now();
    let retry = spawn_call(
        url(addr),
        sid.clone(),
        2,
        "create_refund",
        args,
        "application/json",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    decide(&app.db, &app.redis, id, Decision::Approve, true).await;
    let a = retry.await.unwrap();
    assert!(a.code().is_none(), "{:?}", a.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(app.upstream.calls().len(), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn a_different_call_waits_then_is_told_when_to_retry_and_leaves_the_queue() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_millis(300),
        ..Opts::default()
    })
    .await;
    // A second instance whose waiters wait longer.
    let mut cfg = app.second_config();
    cfg.lock_acquire_timeout = Duration::from_secs(5);
    let (addr, shutdown, _h) = start_gateway(&cfg).await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let holder = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "slow",
        json!({"ms": 1000}),
        "application/json",
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quitter = app
        .call(BILLING_TOKEN, &sid, 2, "slow", json!({"ms": 1, "n": 2}))
        .await;
    assert_eq!(
        (quitter.code(), quitter.message()),
        (Some(-32002), "session busy")
    );
    let left = quitter.body.pointer("/error/data/retry_after_ms");
    let left = left.and_then(Value::as_u64).expect("retry_after_ms");
    assert!((1..=60_000).contains(&left), "{left}");
    // The quitter left the queue: the next waiter gets the lock as soon as the holder is done.
    let next = spawn_call(
        url(addr),
        sid.clone(),
        3,
        "slow",
        json!({"ms": 1, "n": 3}),
        "application/json",
    );
    assert!(holder.await.unwrap().code().is_none());
    let done = Instant::now();
    let a = next.await.unwrap();
    assert!(a.code().is_none(), "{:?}", a.body);
    assert!(
        done.elapsed() < Duration::from_millis(300),
        "{:?}",
        done.elapsed()
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_waiter_whose_pod_died_at_the_head_of_the_queue_does_not_wedge_the_session() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(8),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let holder = spawn_call(
        app.url(),
        sid.clone(),
        1,
        "slow",
        json!({"ms": 300}),
        "application/json",
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A waiter queued first whose pod then died: it checked in just now and never will again,
    // so the holder's release hands the lock to it.
    let s = SessionId(sid.clone());
    let mut conn = app.redis.conn().await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now_us = secs * 1_000_000 + micros;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(app.redis.keys.session_lock_queue(&s))
        .arg(now_us)
        .arg("deadwaiter")
        .ignore()
        .cmd("HSET")
        .arg(app.redis.keys.session_lock_waiters(&s))
        .arg("deadwaiter")
        .arg(format!("{} deadwaiter 0000", now_us + 2_000_000))
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    let next = app
        .call(BILLING_TOKEN, &sid, 2, "slow", json!({"ms": 1, "n": 2}))
        .await;
    assert!(holder.await.unwrap().code().is_none());
    assert!(next.code().is_none(), "{:?}", next.body);
    // The dead waiter's turn lapses within the hand-over window, far below the lock's TTL.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    let dead_holds: Option<String> = redis::cmd("GET")
        .arg(app.redis.keys.session_lock(&s))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(dead_holds.is_none(), "{dead_holds:?}");
}

#[tokio::test]
async fn a_lock_handed_over_outlives_its_short_hand_over_lease() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(8),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = |n: i64, ms: u64| {
        spawn_call(
            app.url(),
            sid.clone(),
            n,
            "slow",
            json!({"ms": ms, "n": n}),
            "application/json",
        )
    };
    let first = call(1, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Handed the lock by the first call's release, with a 2 s lease that its holder extends.
    let long = call(2, 3_000);
    tokio::time::sleep(Duration::from_millis(2_700)).await;
    // Past that lease: had it not been extended, this call would take the lock and run now.
    let late = call(3, 1);
    let mut done = Vec::new();
    let (long, late) = (
        tokio::spawn(async move { (long.await.unwrap(), Instant::now()) }),
        tokio::spawn(async move { (late.await.unwrap(), Instant::now()) }),
    );
    assert!(first.await.unwrap().code().is_none());
    for h in [long, late] {
        let (a, at) = h.await.unwrap();
        assert!(a.code().is_none(), "{:?}", a.body);
        done.push(at);
    }
    assert!(
        done[0] < done[1],
        "the late call ran while the handed-over lock was held"
    );
    let m = app.metrics().await;
    assert!(m.contains("airlock_session_lock_lost_total 0"), "{m}");
}
