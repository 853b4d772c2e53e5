//! User groups as approvers: the notifier reads `usergroups.users.list`, stores each answer as
//! the group's snapshot (the webhook's only source), keeps it fresh while a pending ticket names
//! the group, and writes nothing when Slack fails, so the snapshot ages and clicks fail closed.

use std::time::Duration;

use airlock_shared::ticket::TicketStatus;
use airlock_shared::{NotifyJob, Refusal, usergroup};
use airlock_slack_fake::fake::Fault;
use notifier_worker::Tuning;
use notifier_worker::usergroups::{MembershipError, UserGroups};
use notifier_worker::web_api::{SlackClient, SlackError};
use secrecy::SecretString;

use crate::support::{TOKEN, TestApp, setup};

const T: Duration = Duration::from_secs(10);
const OPS: &str = "S0OPS";

impl TestApp {
    async fn stored(&self, group: &str) -> Option<usergroup::Snapshot> {
        usergroup::snapshots(&self.db.pool, &[group.to_owned()], Duration::from_secs(60))
            .await
            .unwrap()
            .pop()
    }

    async fn wait_stored(
        &self,
        group: &str,
        pred: impl Fn(&usergroup::Snapshot) -> bool,
    ) -> usergroup::Snapshot {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let s = self.stored(group).await;
            if let Some(s) = s.filter(|s| pred(s)) {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "snapshot of {group} never matched: {:?}",
                self.stored(group).await
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Takes the refresh loop's lease for a minute, as another replica would: the workers of
    /// this test then never refresh, and only the posts read groups.
    async fn hold_refresh_lease(&self) {
        let mut conn = self.redis.conn().await;
        let key = self.redis.keys.usergroup_refresh_lease();
        assert!(
            airlock_shared::lease::acquire(
                &mut conn,
                &key,
                "another-replica",
                Duration::from_secs(60)
            )
            .await
            .unwrap()
        );
    }

    /// The memberships on their own, against this test's fake Slack, with few quick retries.
    fn usergroups(&self) -> UserGroups {
        let client = SlackClient::new(
            self.slack.base_url().parse().unwrap(),
            SecretString::from(TOKEN),
            Duration::from_secs(2),
        )
        .unwrap();
        let tuning = Tuning {
            max_attempts: 3,
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(2),
            ..Tuning::default()
        };
        UserGroups::new(client, self.db.pool.clone(), tuning)
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn members_are_read_with_slacks_request_shape_and_stored_before_the_post() {
    let app = setup().await;
    app.slack.set_usergroup(OPS, &["U0ALICE", "U0BOB"]);
    app.hold_refresh_lease().await;
    let w = app.worker(&[]).await;
    let t = app.ticket(|t| t.approver_groups = ids(&[OPS])).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;

    let reads = app.slack.calls_to("usergroups.users.list");
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(reads[0].args, serde_json::json!({"usergroup": OPS}));
    assert_eq!(
        reads[0].authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(
        reads[0].response,
        serde_json::json!({"ok": true, "users": ["U0ALICE", "U0BOB"]})
    );
    let post = &app.slack.calls_to("chat.postMessage")[0];
    assert!(
        reads[0].seq < post.seq,
        "members are stored before the buttons appear"
    );
    let s = app.stored(OPS).await.expect("a snapshot");
    assert_eq!(s.users, ids(&["U0ALICE", "U0BOB"]));
    assert!(s.fresh);

    // A ticket naming no group reads nothing.
    let plain = app.ticket(|_| {}).await;
    app.request(&plain).await;
    app.wait_ticket(plain.id, T, |t| t.message_ts.is_some())
        .await;
    assert_eq!(app.slack.count_calls("usergroups.users.list"), 1);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn within_the_ttl_a_replica_reuses_what_it_read() {
    let app = setup().await;
    app.slack.set_usergroup(OPS, &["U0ALICE"]);
    app.hold_refresh_lease().await;
    let w = app.worker(&[("USERGROUP_TTL", "60s")]).await;
    for _ in 0..3 {
        let t = app.ticket(|t| t.approver_groups = ids(&[OPS])).await;
        app.request(&t).await;
        app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    }
    assert_eq!(app.slack.count_calls("usergroups.users.list"), 1);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn the_snapshot_is_refreshed_while_a_pending_ticket_names_the_group() {
    let app = setup().await;
    app.slack.set_usergroup(OPS, &["U0ALICE", "U0BOB"]);
    let w = app.worker(&[("USERGROUP_TTL", "300ms")]).await;
    let t = app.ticket(|t| t.approver_groups = ids(&[OPS])).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    let first = app.wait_stored(OPS, |s| s.users.len() == 2).await;

    // Bob leaves the group in Slack: the next refresh stores it, with a newer time.
    app.slack.set_usergroup(OPS, &["U0ALICE"]);
    let later = app.wait_stored(OPS, |s| s.users == ids(&["U0ALICE"])).await;
    assert!(later.fetched_at > first.fetched_at);
    let again = app
        .wait_stored(OPS, |s| s.fetched_at > later.fetched_at)
        .await;
    assert_eq!(again.users, ids(&["U0ALICE"]));

    // Once no pending ticket names it, the group is left alone.
    airlock_shared::ticket::close_pending(&app.db.pool, t.id, TicketStatus::Cancelled)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let settled = app.slack.count_calls("usergroups.users.list");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.slack.count_calls("usergroups.users.list"), settled);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn slack_failing_writes_nothing() {
    let app = setup().await;
    app.slack.set_usergroup(OPS, &["U0ALICE"]);
    let groups = app.usergroups();
    groups.refresh(OPS).await.unwrap();
    let before = app.stored(OPS).await.unwrap();
    // Alice leaves, but every read fails: what is stored must stay as it was.
    app.slack.set_usergroup(OPS, &[]);

    app.slack.fail_next(
        "usergroups.users.list",
        Fault::SlackError("missing_scope".into()),
    );
    let e = groups.refresh(OPS).await.unwrap_err();
    assert!(
        matches!(&e, MembershipError::Slack(SlackError::Permanent(m)) if m == "missing_scope"),
        "{e:?}"
    );
    for _ in 0..3 {
        app.slack
            .fail_next("usergroups.users.list", Fault::Http(500));
    }
    let e = groups.refresh(OPS).await.unwrap_err();
    assert!(
        matches!(e, MembershipError::Slack(SlackError::Transient(_))),
        "{e:?}"
    );
    for _ in 0..3 {
        app.slack.fail_next(
            "usergroups.users.list",
            Fault::RateLimited {
                retry_after_secs: 0,
            },
        );
    }
    let e = groups.refresh(OPS).await.unwrap_err();
    assert!(
        matches!(e, MembershipError::Slack(SlackError::RateLimited(_))),
        "{e:?}"
    );
    // A Retry-After beyond the budget is not waited out.
    app.slack.fail_next(
        "usergroups.users.list",
        Fault::RateLimited {
            retry_after_secs: 30,
        },
    );
    let started = std::time::Instant::now();
    assert!(groups.refresh(OPS).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    // An unknown group is Slack's `no_such_subteam`, and stores nothing either.
    let e = groups.refresh("S0GONE").await.unwrap_err();
    assert!(
        matches!(&e, MembershipError::Slack(SlackError::Permanent(m)) if m == "no_such_subteam"),
        "{e:?}"
    );
    assert_eq!(app.stored("S0GONE").await, None);

    let after = app.stored(OPS).await.unwrap();
    assert_eq!(after.users, before.users);
    assert_eq!(after.fetched_at, before.fetched_at);
    assert_eq!(
        app.slack.count_calls("usergroups.users.list"),
        1 + 1 + 3 + 3 + 1 + 1
    );

    // A failure short of the budget is retried, and the answer stored.
    app.slack
        .fail_next("usergroups.users.list", Fault::Http(503));
    app.slack.fail_next(
        "usergroups.users.list",
        Fault::RateLimited {
            retry_after_secs: 0,
        },
    );
    assert_eq!(groups.refresh(OPS).await.unwrap(), Vec::<String>::new());
    let fresh = app.stored(OPS).await.unwrap();
    assert!(fresh.users.is_empty() && fresh.fetched_at > before.fetched_at);
}

#[tokio::test]
async fn a_request_is_posted_even_when_its_group_cannot_be_read() {
    let app = setup().await;
    app.hold_refresh_lease().await;
    let w = app.worker(&[("USERGROUP_TTL", "60s")]).await;
    // No such group in the workspace: `no_such_subteam`.
    let t = app.ticket(|t| t.approver_groups = ids(&[OPS])).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    assert_eq!(app.slack.count_calls("usergroups.users.list"), 1);
    assert_eq!(app.stored(OPS).await, None);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn an_unconfirmed_membership_is_explained_privately() {
    let app = setup().await;
    let w = app.worker(&[]).await;
    let t = app.ticket(|t| t.approver_groups = ids(&[OPS])).await;
    app.enqueue(&NotifyJob::RefusedClick {
        ticket_id: Some(t.id),
        user_id: "U0ALICE".into(),
        channel: "C0APPROVALS".into(),
        refusal: Refusal::MembershipUnknown {
            group: OPS.to_owned(),
        },
    })
    .await;
    app.slack.wait_for_calls("chat.postEphemeral", 1, T).await;
    let shown = app.slack.ephemerals();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].user, "U0ALICE");
    let text = shown[0].blocks[0]["text"]["text"].as_str().unwrap();
    assert!(
        text.contains(
            "could not confirm your membership of <!subteam^S0OPS> just now; try again in a minute"
        ),
        "{text}"
    );
    assert!(shown[0].text.contains("could not confirm your membership"));
    w.stop().await.unwrap();
}
