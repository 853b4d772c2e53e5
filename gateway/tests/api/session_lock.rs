//! The session lock: a retry takes over its own call, waiters are served in arrival order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use airlock_shared::SessionId;
use airlock_shared::ticket::Decision;
use serde_json::{Value, json};

use super::helpers::*;

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/mcp")
}

/// Sends calls `slow {ms, n}` for n in 0..8, 20 ms apart, through `urls` in turn, and checks
/// they reach the upstream in that order with no `session busy`.
async fn eight_in_order(app: &TestApp, urls: &[String]) {
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
    let order: Vec<Value> = app
        .upstream
        .calls()
        .iter()
        .filter(|c| c.tool == "slow")
        .map(|c| c.arguments["n"].clone())
        .collect();
    assert_eq!(order, (0..8).map(Value::from).collect::<Vec<_>>());
}

#[tokio::test]
async fn eight_parallel_calls_run_in_arrival_order() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    eight_in_order(&app, &[app.url()]).await;
}

#[tokio::test]
async fn across_two_instances_the_order_holds() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_secs(5),
        ..Opts::default()
    })
    .await;
    let (addr, shutdown, _h) = start_gateway(&app.second_config()).await;
    eight_in_order(&app, &[app.url(), url(addr)]).await;
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
