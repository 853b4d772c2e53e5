//! The reconciler: jobs lost with Redis's data are redone from Postgres, once, by one replica
//! at a time. The FLUSHALL test runs against a private redis-server of its own.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airlock_shared::ticket::{self, Decision, Reconcile, Ticket, TicketStatus};
use airlock_shared::{Keys, TicketId};
use airlock_slack_fake::fake::{FakeSlack, FakeSlackConfig};
use airlock_test_support::{TestRedis, fresh_db};
use notifier_worker::metrics::Metrics;
use notifier_worker::reconcile::{Pass, Reconciler, ReconcilerParts};

use crate::support::{Running, TOKEN, TestApp, capture_logs, setup};

const T: Duration = Duration::from_secs(20);

/// Fast reconciler timings for tests.
const FAST: [(&str, &str); 3] = [
    ("RECONCILE_INTERVAL", "200ms"),
    ("RECONCILE_GRACE", "300ms"),
    ("RECONCILE_RETRY", "3s"),
];
const OFF: [(&str, &str); 1] = [("RECONCILE_INTERVAL", "off")];

/// A redis-server that only this test uses, so it may be wiped; killed on drop.
struct PrivateRedis {
    child: Child,
    url: String,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for the FLUSHALL test");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        PrivateRedis { child, url }
    }

    async fn flushall(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn private_app(redis: &PrivateRedis) -> TestApp {
    capture_logs();
    TestApp {
        db: fresh_db().await,
        redis: TestRedis {
            url: redis.url.clone(),
            keys: Keys::new("airlock"),
            client: redis::Client::open(redis.url.as_str()).unwrap(),
        },
        slack: FakeSlack::spawn(FakeSlackConfig::new(TOKEN)).await,
    }
}

/// The messages in the approvals channel that name `id`.
fn messages_of(app: &TestApp, id: TicketId) -> Vec<airlock_slack_fake::fake::Message> {
    app.slack
        .messages("C0APPROVALS")
        .into_iter()
        .filter(|m| m.blocks.to_string().contains(&id.to_string()))
        .collect()
}

fn has_buttons(m: &airlock_slack_fake::fake::Message) -> bool {
    m.blocks.to_string().contains("\"actions\"")
}

/// Whether the stored message state is final for the ticket.
fn shows_outcome(t: &Ticket) -> bool {
    t.message_status == Some(t.status)
        || (t.status == TicketStatus::Executed && t.message_status == Some(TicketStatus::Approved))
}

async fn wait_passes(w: &Running, more: f64) {
    let now = w.metric("airlock_notifier_reconcile_passes_total", "");
    let got = w
        .wait_metric("airlock_notifier_reconcile_passes_total", "", now + more)
        .await;
    assert!(got >= now + more, "the reconciler did not run: {got}");
}

/// Posted tickets, then closed in every way, and pending ones; then Redis loses every job.
async fn lose_jobs(app: &TestApp, redis: &PrivateRedis) -> (Vec<Ticket>, Vec<Ticket>) {
    let w = app.worker(&OFF).await;
    let mut decided = Vec::new();
    for _ in 0..6 {
        let t = app.ticket(|_| {}).await;
        app.request(&t).await;
        decided.push(t);
    }
    for t in &decided {
        app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    }
    app.wait_drained(T).await;
    w.stop().await.unwrap();
    let pool = &app.db.pool;
    for (i, t) in decided.iter().enumerate() {
        match i {
            0 | 1 => {
                ticket::decide(pool, t.id, Decision::Approve, "U0ANA", "ana", None)
                    .await
                    .unwrap();
            }
            2 => {
                ticket::decide(pool, t.id, Decision::Approve, "U0ANA", "ana", None)
                    .await
                    .unwrap();
                ticket::claim_execution(pool, t.id, t.fingerprint.as_deref().unwrap_or_default())
                    .await
                    .unwrap()
                    .unwrap();
            }
            3 => {
                ticket::decide(pool, t.id, Decision::Deny, "U0ANA", "ana", None)
                    .await
                    .unwrap();
            }
            4 => {
                ticket::close_pending(pool, t.id, TicketStatus::Cancelled)
                    .await
                    .unwrap()
                    .unwrap();
            }
            _ => {
                ticket::close_pending(pool, t.id, TicketStatus::Expired)
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
        app.closed(t).await;
    }
    let mut pending = Vec::new();
    for _ in 0..5 {
        let t = app.ticket(|_| {}).await;
        app.request(&t).await;
        pending.push(t);
    }
    assert_eq!(app.stream_state().await.0, 11, "every job is queued");
    redis.flushall().await;
    (decided, pending)
}

#[tokio::test]
async fn jobs_lost_with_redis_are_redone_from_postgres_exactly_once() {
    let redis = PrivateRedis::start().await;
    let app = private_app(&redis).await;
    let (decided, pending) = lose_jobs(&app, &redis).await;

    // Without the reconciler the lost jobs stay lost.
    let w = app.worker(&OFF).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    w.stop().await.unwrap();
    assert_eq!(app.slack.count_calls("chat.postMessage"), decided.len());
    assert_eq!(app.slack.count_calls("chat.update"), 0);
    for t in &pending {
        assert!(app.get(t.id).await.message_ts.is_none());
    }

    let w = app.worker(&FAST).await;
    for t in &pending {
        app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    }
    for t in &decided {
        app.wait_ticket(t.id, T, shows_outcome).await;
    }
    app.wait_drained(T).await;
    for t in pending.iter().chain(&decided) {
        let shown = messages_of(&app, t.id);
        assert_eq!(shown.len(), 1, "one message per ticket: {shown:?}");
        let stored = app.get(t.id).await;
        assert_eq!(
            has_buttons(&shown[0]),
            stored.status.is_pending(),
            "{stored:?}"
        );
        assert_eq!(Some(shown[0].ts.clone()), stored.message_ts);
    }
    assert!(app.slack.calls_to("chat.delete").is_empty());
    let requeued = |w: &Running, kind: &str| {
        w.metric(
            "airlock_notifier_reconcile_requeued_total",
            &format!("kind=\"{kind}\""),
        )
    };
    // Each count is raised just after its job is queued, so the worker may show the last
    // message before the reconciler counts it: wait for the count, then check it is exact.
    for (kind, n) in [
        ("approval_request", pending.len()),
        ("ticket_closed", decided.len()),
    ] {
        let labels = format!("kind=\"{kind}\"");
        let got = w
            .wait_metric(
                "airlock_notifier_reconcile_requeued_total",
                &labels,
                n as f64,
            )
            .await;
        assert_eq!(got, n as f64, "{kind} jobs re-queued");
    }

    // Every message matches its ticket: further passes queue nothing.
    let calls = app.slack.calls().len();
    wait_passes(&w, 3.0).await;
    assert_eq!(requeued(&w, "approval_request"), pending.len() as f64);
    assert_eq!(requeued(&w, "ticket_closed"), decided.len() as f64);
    assert_eq!(app.slack.calls().len(), calls);
    assert_eq!(app.stream_state().await, (0, 0));
}

fn reconciler(app: &TestApp, redis: redis::aio::ConnectionManager, name: &str) -> Reconciler {
    Reconciler::new(ReconcilerParts {
        pool: app.db.pool.clone(),
        keys: app.redis.keys.clone(),
        redis: airlock_shared::RedisConn::Single(redis),
        metrics: Metrics::new().unwrap(),
        every: Duration::from_secs(30),
        bounds: Reconcile {
            grace: Duration::from_millis(50),
            retry: Duration::from_secs(60),
            limit: 1000,
        },
        replica: name.into(),
    })
}

#[tokio::test]
async fn one_pass_at_a_time_and_a_repeat_or_overlap_takes_nothing_twice() {
    let app = setup().await;
    let mut unposted = Vec::new();
    for _ in 0..30 {
        unposted.push(app.ticket(|_| {}).await.id);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let conn = redis::aio::ConnectionManager::new(app.redis.client.clone())
        .await
        .unwrap();
    let a = reconciler(&app, conn.clone(), "a");
    let b = reconciler(&app, conn.clone(), "b");
    let (ra, rb) = tokio::join!(a.pass(), b.pass());
    let mut results = [ra.unwrap(), rb.unwrap()];
    results.sort_by_key(|p| matches!(p, Pass::Skipped));
    assert_eq!(
        results,
        [
            Pass::Ran {
                posts: 30,
                updates: 0
            },
            Pass::Skipped
        ]
    );
    assert_eq!(app.stream_state().await.0, 30);

    // Redis wiped (the lease with it): the other replica's pass finds the tickets taken.
    let mut c = app.redis.conn().await;
    let _: () = redis::cmd("DEL")
        .arg(app.redis.keys.reconcile_lease())
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        b.pass().await.unwrap(),
        Pass::Ran {
            posts: 0,
            updates: 0
        }
    );
    assert_eq!(app.stream_state().await.0, 30);

    // Two passes at once with no lease at all still share the work without overlap.
    // The retry window keeps a ticket one pass took from the other even when the two run one
    // after the other; the tickets taken above are past it by then.
    let bounds = Reconcile {
        grace: Duration::ZERO,
        retry: Duration::from_millis(500),
        limit: 1000,
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (x, y) = tokio::join!(
        ticket::take_unposted(&app.db.pool, bounds),
        ticket::take_unposted(&app.db.pool, bounds)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 30, "{} + {}", x.len(), y.len());
    assert!(x.iter().all(|id| !y.contains(id)));
}

#[tokio::test]
async fn two_replicas_run_one_pass_per_interval() {
    let app = setup().await;
    let timings = [
        ("RECONCILE_INTERVAL", "300ms"),
        ("RECONCILE_GRACE", "300ms"),
    ];
    let a = app.worker(&timings).await;
    let b = app.worker(&timings).await;
    let passes = |w: &Running| w.metric("airlock_notifier_reconcile_passes_total", "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = passes(&a) + passes(&b);
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let ran = passes(&a) + passes(&b) - before;
    // Without the lease each replica would run one per interval: about 20.
    assert!((3.0..=12.0).contains(&ran), "{ran} passes in {window:?}");
}

#[tokio::test]
async fn a_dead_lettered_ticket_is_not_posted_again() {
    let app = setup().await;
    let w = app
        .worker(&[
            ("RECONCILE_INTERVAL", "100ms"),
            ("RECONCILE_GRACE", "500ms"),
            ("RECONCILE_RETRY", "100ms"),
        ])
        .await;
    let lost = app
        .ticket(|n| n.slack_channel = Some("C0DOESNOTEXIST".into()))
        .await;
    app.request(&lost).await;
    app.wait_ticket(lost.id, T, |t| t.notify_error.is_some())
        .await;
    app.wait_drained(T).await;
    let posts = app.slack.count_calls("chat.postMessage");
    wait_passes(&w, 5.0).await;
    assert_eq!(app.slack.count_calls("chat.postMessage"), posts);
    assert_eq!(
        w.metric("airlock_notifier_reconcile_requeued_total", ""),
        0.0
    );
}
