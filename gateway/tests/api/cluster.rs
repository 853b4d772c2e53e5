//! The gateway on a real Redis Cluster (three primaries, three replicas): held calls decided by a
//! sharded signal, denied, timed out, found by the Postgres poll when the signal is lost, and
//! nothing lost when the primary that carries the decisions channel fails over.

use std::time::{Duration, Instant};

use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::{self, Decided, Decision};
use airlock_shared::{DecisionSignal, Keys, TicketId, TicketStatus, signal};
use airlock_test_support::cluster::RedisCluster;
use serde_json::json;

use super::helpers::*;

fn refund(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "usd"})
}

/// A held call in a session of its own.
async fn held(app: &TestApp, id: i64) -> tokio::task::JoinHandle<Answer> {
    let sid = app.initialize(BILLING_TOKEN).await;
    spawn_call(
        app.url(),
        sid,
        id,
        "create_refund",
        refund(500),
        "application/json",
    )
}

/// Waits for `n` approval requests on the cluster's stream; returns their tickets.
async fn requests(cluster: &RedisCluster, keys: &Keys, n: usize) -> Vec<TicketId> {
    eventually(Duration::from_secs(20), || async {
        let ids: Vec<TicketId> = cluster
            .notify_jobs(keys)
            .await
            .into_iter()
            .filter_map(|j| match j {
                NotifyJob::ApprovalRequest { ticket_id } => Some(ticket_id),
                _ => None,
            })
            .collect();
        (ids.len() >= n).then_some(ids)
    })
    .await
    .expect("approval requests on the cluster's stream")
}

/// Decides like the webhook: the row, then (when `publish`) `SPUBLISH` through the cluster.
async fn decide_on(
    app: &TestApp,
    cluster: &RedisCluster,
    id: TicketId,
    d: Decision,
    publish: bool,
) {
    let decided = ticket::decide(&app.db.pool, id, d, APPROVER, "Ana Approver", None)
        .await
        .unwrap();
    let Decided::Changed(t) = decided else {
        panic!("ticket {id} was already decided");
    };
    if publish {
        let mut conn = cluster.conn().await;
        let sig = DecisionSignal {
            ticket_id: t.id,
            status: t.status,
        };
        signal::spublish(&mut conn, &app.redis.keys, &sig)
            .await
            .unwrap();
    }
}

/// With a 60 s poll, only the sharded signal can wake a held call within seconds.
fn signal_only() -> Opts {
    Opts {
        poll_interval: Duration::from_secs(60),
        approval_timeout: Duration::from_secs(60),
        ..Opts::default()
    }
}

#[tokio::test]
async fn cluster_a_held_call_is_approved_by_a_sharded_signal_and_runs_once() {
    let cluster = RedisCluster::start().await;
    let app = spawn_on_cluster(signal_only(), &cluster).await;
    let call = held(&app, 1).await;
    let id = requests(&cluster, &app.redis.keys, 1).await[0];
    let started = Instant::now();
    decide_on(&app, &cluster, id, Decision::Approve, true).await;
    let a = call.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        a.tool_text(),
        json!({"tool": "create_refund", "arguments": refund(500)})
    );
    assert_eq!(app.upstream.calls().len(), 1);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Executed);
}

#[tokio::test]
async fn cluster_a_denied_call_names_who_denied() {
    let cluster = RedisCluster::start().await;
    let app = spawn_on_cluster(signal_only(), &cluster).await;
    let call = held(&app, 1).await;
    let id = requests(&cluster, &app.redis.keys, 1).await[0];
    decide_on(&app, &cluster, id, Decision::Deny, true).await;
    let a = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the signal woke the call")
        .unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval denied"));
    assert_eq!(
        a.body.pointer("/error/data/decided_by"),
        Some(&json!("Ana Approver"))
    );
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn cluster_a_call_nobody_decides_expires_and_queues_the_message_update() {
    let cluster = RedisCluster::start().await;
    let app = spawn_on_cluster(
        Opts {
            approval_timeout: Duration::from_secs(1),
            ..Opts::default()
        },
        &cluster,
    )
    .await;
    let call = held(&app, 1).await;
    let id = requests(&cluster, &app.redis.keys, 1).await[0];
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval timeout"));
    assert_eq!(app.ticket(id).await.status, TicketStatus::Expired);
    // The signal and the job went out in one pipeline on the prefix's slot.
    let jobs = eventually(Duration::from_secs(5), || async {
        let jobs = cluster.notify_jobs(&app.redis.keys).await;
        (jobs.len() == 2).then_some(jobs)
    })
    .await;
    assert_eq!(
        jobs,
        Some(vec![
            NotifyJob::ApprovalRequest { ticket_id: id },
            NotifyJob::TicketClosed { ticket_id: id }
        ])
    );
}

#[tokio::test]
async fn cluster_a_lost_signal_is_found_by_the_postgres_poll() {
    let cluster = RedisCluster::start().await;
    let app = spawn_on_cluster(
        Opts {
            poll_interval: Duration::from_millis(300),
            ..Opts::default()
        },
        &cluster,
    )
    .await;
    let call = held(&app, 1).await;
    let id = requests(&cluster, &app.redis.keys, 1).await[0];
    decide_on(&app, &cluster, id, Decision::Approve, false).await;
    let a = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the poll found the decision")
        .unwrap();
    assert_eq!(a.body["id"], json!(1));
    assert_eq!(app.upstream.calls().len(), 1);
    assert!(app.metrics().await.contains("airlock_signal_lost_total 1"));
}

#[tokio::test]
async fn cluster_failing_over_the_decisions_primary_loses_no_held_call() {
    const HELD: usize = 4;
    let cluster = RedisCluster::start().await;
    let app = spawn_on_cluster(signal_only(), &cluster).await;
    let mut calls = Vec::new();
    for i in 0..HELD {
        calls.push(held(&app, i as i64).await);
        // Call i's ticket before call i + 1 starts, so that ids[i] is call i's: concurrent
        // calls may open their tickets in either order.
        requests(&cluster, &app.redis.keys, i + 1).await;
    }
    let ids = requests(&cluster, &app.redis.keys, HELD).await;
    let channel = app.redis.keys.sharded_decisions_channel();
    let primary = cluster.primary_of(&channel).await;
    let replica = cluster.replica_of(primary).await;
    cluster.failover(replica).await;
    assert_eq!(cluster.primary_of(&channel).await, replica);

    // Decided after the failover: with a 60 s poll, the signals must reach the gateway through
    // the new primary. The last ticket is decided after those calls are answered.
    let started = Instant::now();
    for id in &ids[..HELD - 1] {
        decide_on(&app, &cluster, *id, Decision::Approve, true).await;
    }
    for (i, call) in calls.drain(..HELD - 1).enumerate() {
        let a = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .unwrap_or_else(|_| panic!("held call {i} was lost after the failover"))
            .unwrap();
        assert_eq!(a.body["id"], json!(i), "{a:?}");
        assert!(a.code().is_none(), "{a:?}");
    }
    eprintln!(
        "signalled calls after failover answered in {:?}",
        started.elapsed()
    );
    // The last one is denied a while later, through the new primary too.
    decide_on(&app, &cluster, ids[HELD - 1], Decision::Deny, true).await;
    let last = tokio::time::timeout(Duration::from_secs(15), calls.remove(0))
        .await
        .expect("the last call held across the failover is woken")
        .unwrap();
    assert_eq!(
        (last.code(), last.message()),
        (Some(-32001), "approval denied")
    );
    assert_eq!(
        app.upstream.calls().len(),
        HELD - 1,
        "each approved call ran once"
    );
}
