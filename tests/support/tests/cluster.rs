//! A real six-node Redis Cluster: it forms, and every group of keys that one script or `MULTI`
//! of the services touches lands in one slot, by Redis's own hashing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_shared::Keys;
use airlock_shared::ids::SessionId;
use airlock_test_support::cluster::RedisCluster;

#[tokio::test]
async fn six_nodes_form_a_cluster_and_multi_key_groups_share_a_slot() {
    let cluster = RedisCluster::start().await;
    let info = cluster.info(0).await;
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_size:3"), "three primaries: {info}");
    assert!(info.contains("cluster_known_nodes:6"), "{info}");
    assert_eq!(cluster.urls().len(), 6);

    let keys = Keys::new("airlock");
    // Stream ack/dead-letter/give-back transactions (notifier stream.rs).
    assert_eq!(
        cluster.slot(&keys.notify_stream()).await,
        cluster.slot(&keys.dead_letter_stream()).await
    );
    // The session lock scripts (gateway lock/): admit, acquire, release, leave.
    let s = SessionId::new();
    let lock = cluster.slot(&keys.session_lock(&s)).await;
    for k in [
        keys.budget(&s),
        keys.session_lock_queue(&s),
        keys.session_lock_waiters(&s),
    ] {
        assert_eq!(cluster.slot(&k).await, lock, "{k}");
    }
    // And two sessions need not share one: locks spread over the shards.
    let mut slots = std::collections::HashSet::new();
    for _ in 0..20 {
        slots.insert(cluster.slot(&keys.session_lock(&SessionId::new())).await);
    }
    assert!(slots.len() > 1);
}
