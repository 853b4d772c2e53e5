//! The webhook on a real Redis Cluster: a click publishes its decision on the sharded channel
//! (one shard, not every node) and queues the message update on the same slot.

use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::{DecisionSignal, NotifyJob, TicketId, TicketStatus};
use airlock_test_support::cluster::RedisCluster;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::helpers::*;

/// The next decision signal among the pushes, within `within`.
async fn next_signal(
    rx: &mut UnboundedReceiver<PushInfo>,
    within: Duration,
) -> Option<DecisionSignal> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let push = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
        if push.kind == PushKind::SMessage
            && let Some(Value::BulkString(b)) = push.data.get(1)
        {
            return airlock_shared::signal::parse(b);
        }
    }
}

async fn click(app: &TestApp, action: &str, id: TicketId) {
    let body = form(&click_payload(action, &id.to_string(), "U0ANA", "Ana"));
    assert_eq!(app.post_signed(body).await.status(), 200);
}

#[tokio::test]
async fn cluster_a_click_publishes_on_the_sharded_channel_and_queues_on_its_slot() {
    let cluster = RedisCluster::start().await;
    let app = spawn_with(|c| {
        c.redis_url = cluster.urls()[0].clone().into();
        c.redis_mode = cluster.mode();
    })
    .await;
    let (mut sub, mut pushes) = cluster.subscriber().await;
    sub.ssubscribe(app.redis.keys.sharded_decisions_channel())
        .await
        .unwrap();

    let approved = app.open_ticket(&[], Duration::from_secs(600)).await;
    click(&app, APPROVE_ACTION_ID, approved).await;
    assert_eq!(app.ticket(approved).await.status, TicketStatus::Approved);
    assert_eq!(
        next_signal(&mut pushes, Duration::from_secs(5)).await,
        Some(DecisionSignal {
            ticket_id: approved,
            status: TicketStatus::Approved
        })
    );

    let denied = app.open_ticket(&[], Duration::from_secs(600)).await;
    click(&app, DENY_ACTION_ID, denied).await;
    assert_eq!(
        next_signal(&mut pushes, Duration::from_secs(5)).await,
        Some(DecisionSignal {
            ticket_id: denied,
            status: TicketStatus::Denied
        })
    );
    assert_eq!(
        cluster.notify_jobs(&app.redis.keys).await,
        vec![
            NotifyJob::TicketClosed {
                ticket_id: approved
            },
            NotifyJob::TicketClosed { ticket_id: denied }
        ]
    );
    // Nothing went to the single-node Redis the prefix came from.
    assert!(app.jobs().await.is_empty());
    assert!(
        !app.metrics()
            .await
            .contains("airlock_webhook_redis_failures_total{")
    );
}
