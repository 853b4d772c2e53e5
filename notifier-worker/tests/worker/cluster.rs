//! The notifier on a real Redis Cluster: one message per ticket, and dead letters after too many
//! failed attempts (the dead-letter move is one transaction on the streams' shared slot).

use std::time::Duration;

use airlock_shared::NotifyJob;
use airlock_slack_fake::fake::Fault;
use airlock_test_support::cluster::RedisCluster;

use crate::support::{Running, TestApp, setup};

const T: Duration = Duration::from_secs(15);

/// A worker whose Redis is `cluster`, seeded with every node.
async fn worker_on(app: &TestApp, cluster: &RedisCluster, extra: &[(&str, &str)]) -> Running {
    let url = cluster.urls()[0].clone();
    let nodes = cluster
        .urls()
        .iter()
        .map(|u| u.trim_start_matches("redis://").to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let mut overrides = vec![
        ("REDIS_URL", url.as_str()),
        ("REDIS_CLUSTER_NODES", nodes.as_str()),
    ];
    overrides.extend_from_slice(extra);
    let config = app.config(&overrides);
    assert!(config.redis_mode.is_cluster());
    Running::start(config).await
}

async fn enqueue(app: &TestApp, cluster: &RedisCluster, job: &NotifyJob) {
    let mut conn = cluster.conn().await;
    airlock_shared::job::enqueue(&mut conn, &app.redis.keys, job)
        .await
        .unwrap();
}

/// Waits until the cluster's notification stream is empty.
async fn wait_drained(app: &TestApp, cluster: &RedisCluster) {
    let deadline = tokio::time::Instant::now() + T;
    while !cluster
        .entries(&app.redis.keys.notify_stream())
        .await
        .is_empty()
    {
        assert!(tokio::time::Instant::now() < deadline, "stream not drained");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn cluster_each_ticket_gets_exactly_one_message() {
    let cluster = RedisCluster::start().await;
    let app = setup().await;
    let _w = worker_on(&app, &cluster, &[]).await;
    let tickets = [app.ticket(|_| {}).await, app.ticket(|_| {}).await];
    for t in &tickets {
        // A duplicated job (a retry, a reconciler pass) must not post twice.
        for _ in 0..2 {
            enqueue(
                &app,
                &cluster,
                &NotifyJob::ApprovalRequest { ticket_id: t.id },
            )
            .await;
        }
    }
    for t in &tickets {
        app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    }
    wait_drained(&app, &cluster).await;
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 2);
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    assert!(
        cluster
            .entries(&app.redis.keys.dead_letter_stream())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn cluster_too_many_failed_attempts_go_to_dead_letter() {
    let cluster = RedisCluster::start().await;
    let app = setup().await;
    let _w = worker_on(&app, &cluster, &[("NOTIFY_MAX_ATTEMPTS", "3")]).await;
    for _ in 0..5 {
        app.slack.fail_next("chat.postMessage", Fault::Http(502));
    }
    let t = app.ticket(|_| {}).await;
    enqueue(
        &app,
        &cluster,
        &NotifyJob::ApprovalRequest { ticket_id: t.id },
    )
    .await;
    let deadline = tokio::time::Instant::now() + T;
    let dead = loop {
        let dead = cluster.entries(&app.redis.keys.dead_letter_stream()).await;
        if !dead.is_empty() || tokio::time::Instant::now() >= deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempts"], "3");
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    wait_drained(&app, &cluster).await;
    assert!(app.get(t.id).await.message_ts.is_none());
}
