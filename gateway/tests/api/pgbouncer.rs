//! The gateway behind a real PgBouncer 1.18 in transaction mode. With
//! `DATABASE_POOLER=transaction` the core cases pass with every statement going through the
//! pooler; without it (sqlx's statement cache on, or merely at 0) two clients' prepared
//! statements meet on one server connection and queries fail.

use std::time::Duration;

use airlock_shared::TicketStatus;
use airlock_shared::db::{self, Db, Pooler};
use airlock_shared::ticket::{self, Decision};
use airlock_test_support::fresh_db;
use airlock_test_support::pgbouncer::PgBouncer;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::helpers::*;

/// A gateway whose `DATABASE_URL` is PgBouncer (transaction mode, two server connections) in
/// front of its fresh database; the test plays the webhook on Postgres directly.
async fn behind_pgbouncer(opts: Opts) -> (TestApp, PgBouncer) {
    let db = fresh_db().await;
    let bouncer = PgBouncer::start_with(&db.url, 2).await;
    let url = bouncer.url().to_owned();
    let app = spawn_on(db, opts, |c| {
        c.database_url = url.into();
        c.database_pooler = Pooler::Transaction;
        c.migrate_on_start = false;
    })
    .await;
    (app, bouncer)
}

fn refund(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "usd"})
}

fn held(app: &TestApp, sid: &str, id: i64, amount: i64) -> tokio::task::JoinHandle<Answer> {
    spawn_call(
        app.url(),
        sid.to_owned(),
        id,
        "create_refund",
        refund(amount),
        BOTH,
    )
}

#[tokio::test]
async fn an_allowed_call_passes_through_pgbouncer() {
    let (app, bouncer) = behind_pgbouncer(Opts::default()).await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(BILLING_TOKEN, &sid, 7, "list_charges", json!({"limit": 3}))
        .await;
    assert!(a.code().is_none(), "{:?} {}", a.body, bouncer.log());
    assert_eq!(
        a.tool_text(),
        json!({"tool": "list_charges", "arguments": {"limit": 3}})
    );
    let denied = app
        .call(BILLING_TOKEN, &sid, 8, "delete_customer", json!({}))
        .await;
    assert_eq!(denied.message(), "denied by policy");
    assert_eq!(app.upstream.calls().len(), 1);
}

#[tokio::test]
async fn a_held_call_approved_through_pgbouncer_runs_once() {
    let (app, _bouncer) = behind_pgbouncer(Opts::default()).await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held(&app, &sid, 41, 150);
    let id = app.wait_for_request().await;
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    decide(&app.db, &app.redis, id, Decision::Approve, true).await;
    let a = call.await.unwrap();
    assert_eq!(
        a.tool_text(),
        json!({"tool": "create_refund", "arguments": refund(150)})
    );
    assert_eq!(app.upstream.calls().len(), 1);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Executed);
}

#[tokio::test]
async fn a_held_call_denied_through_pgbouncer_fails_with_the_denier() {
    let (app, _bouncer) = behind_pgbouncer(Opts::default()).await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held(&app, &sid, 1, 500);
    let id = app.wait_for_request().await;
    decide(&app.db, &app.redis, id, Decision::Deny, true).await;
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval denied"));
    assert_eq!(
        a.body.pointer("/error/data/decided_by"),
        Some(&json!("Ana Approver"))
    );
    assert!(app.upstream.calls().is_empty());
    assert_eq!(app.ticket(id).await.status, TicketStatus::Denied);
}

#[tokio::test]
async fn a_held_call_timing_out_through_pgbouncer_expires_its_ticket() {
    let (app, _bouncer) = behind_pgbouncer(Opts {
        approval_timeout: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held(&app, &sid, 1, 500);
    let id = app.wait_for_request().await;
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval timeout"));
    assert_eq!(app.ticket(id).await.status, TicketStatus::Expired);
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn many_held_calls_approved_at_once_through_pgbouncer_each_run_once() {
    // Twenty sessions on two PgBouncer servers: the gateway's statements interleave on them.
    let (app, bouncer) = behind_pgbouncer(Opts::default()).await;
    const N: usize = 20;
    let mut calls = Vec::new();
    for i in 0..N {
        let sid = app.initialize(BILLING_TOKEN).await;
        calls.push(held(&app, &sid, i as i64, 500 + i as i64));
    }
    let mut ids = Vec::new();
    for nth in 0..N {
        ids.push(wait_for_request(&app.redis, nth).await);
    }
    for id in &ids {
        decide(&app.db, &app.redis, *id, Decision::Approve, true).await;
    }
    for c in calls {
        let a = c.await.unwrap();
        assert!(a.code().is_none(), "{:?} {}", a.body, bouncer.log());
    }
    let executed = ticket::count_with_status(&app.db.pool, TicketStatus::Executed)
        .await
        .unwrap();
    assert_eq!(executed as usize, N);
    assert_eq!(app.upstream.calls().len(), N);
}

/// Two client connections, held at once, each run the same query twice through PgBouncer
/// with one server connection; the first failure, if any.
async fn two_clients_on_one_server(db: &Db) -> Result<(), sqlx::Error> {
    let mut a = db.acquire().await?;
    let mut b = db.acquire().await?;
    for _ in 0..2 {
        ticket::count_with_status(&mut *a, TicketStatus::Pending).await?;
        ticket::count_with_status(&mut *b, TicketStatus::Pending).await?;
    }
    Ok(())
}

/// A pool with sqlx's statement cache at `capacity` and nothing else changed.
async fn pool_with_cache(url: &str, capacity: usize) -> Db {
    let opts: PgConnectOptions = url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts.statement_cache_capacity(capacity))
        .await
        .unwrap();
    Db::from(pool)
}

#[tokio::test]
async fn the_statement_cache_on_fails_behind_pgbouncer_in_transaction_mode() {
    let test_db = fresh_db().await;
    let bouncer = PgBouncer::start_with(&test_db.url, 1).await;
    let direct = db::connect(bouncer.url(), Pooler::None, 2, Duration::from_secs(5))
        .await
        .unwrap();
    let err = two_clients_on_one_server(&direct)
        .await
        .expect_err("sqlx's cached statements collide behind a transaction pooler");
    assert!(
        err.to_string().contains("already exists"),
        "prepared statement sqlx_s_1 of one client meets the other's: {err}"
    );
}

#[tokio::test]
async fn a_statement_cache_of_zero_alone_still_fails_behind_pgbouncer() {
    // sqlx 0.9 still names each statement (`sqlx_s_N`) with the cache off, and never closes
    // it; so the cache setting alone is not enough: DATABASE_POOLER=transaction is needed.
    let test_db = fresh_db().await;
    let bouncer = PgBouncer::start_with(&test_db.url, 1).await;
    let uncached = pool_with_cache(bouncer.url(), 0).await;
    let err = two_clients_on_one_server(&uncached)
        .await
        .expect_err("named statements collide behind a transaction pooler");
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[tokio::test]
async fn with_database_pooler_transaction_clients_share_servers_safely() {
    let test_db = fresh_db().await;
    let bouncer = PgBouncer::start_with(&test_db.url, 1).await;
    let pooled = db::connect(
        bouncer.url(),
        Pooler::Transaction,
        8,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let pooled = pooled.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                ticket::count_with_status(&pooled, TicketStatus::Pending).await?;
                // An explicit transaction (grants use one): its statements are named and
                // stay on the server, where the next client's transaction finds them.
                let mut tx = pooled.begin().await?;
                ticket::count_with_status(&mut *tx, TicketStatus::Pending).await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
