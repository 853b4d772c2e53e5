//! Several replicas on one stream: no double post, a crashed replica's job finished by another,
//! and SIGTERM returning in-flight jobs.

use std::collections::HashMap;
use std::time::Duration;

use airlock_slack_fake::fake::Fault;

use crate::support::setup;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn two_workers_share_the_stream_without_a_double_post() {
    let app = setup().await;
    let a = app.worker(&[("CONCURRENCY", "8")]).await;
    let b = app.worker(&[("CONCURRENCY", "8")]).await;
    // Every job twice: duplicates land on both replicas at the same time.
    let mut tickets = Vec::new();
    for _ in 0..40 {
        let t = app.ticket(|_| {}).await;
        app.request(&t).await;
        app.request(&t).await;
        tickets.push(t);
    }
    for t in &tickets {
        app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    }
    app.wait_drained(T).await;
    let posts = app.slack.calls_to("chat.postMessage");
    assert_eq!(posts.len(), 40, "one post per ticket");
    let mut per_ticket: HashMap<String, usize> = HashMap::new();
    for m in app.slack.messages("C0APPROVALS") {
        let text = m.blocks.to_string();
        let t = tickets
            .iter()
            .find(|t| text.contains(&t.id.to_string()))
            .unwrap();
        *per_ticket.entry(t.id.to_string()).or_default() += 1;
    }
    assert_eq!(per_ticket.len(), 40);
    assert!(per_ticket.values().all(|n| *n == 1));
    assert!(app.slack.calls_to("chat.delete").is_empty());
    // Counted just after each job is settled on the stream; give the last ones a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let done =
        |w: &crate::support::Running| w.metric("airlock_notifier_jobs_total", "outcome=\"done\"");
    while done(&a) + done(&b) < 80.0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(done(&a) + done(&b), 80.0);
    assert!(done(&a) > 0.0 && done(&b) > 0.0, "both replicas worked");
}

#[tokio::test]
async fn a_killed_workers_job_is_finished_by_another() {
    let app = setup().await;
    // A sits in a long backoff after a 503 when it is killed.
    let a = app
        .worker(&[("NOTIFY_RETRY_BASE", "60s"), ("NOTIFY_RETRY_MAX", "60s")])
        .await;
    app.slack.fail_next("chat.postMessage", Fault::Http(503));
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.slack.wait_for_calls("chat.postMessage", 1, T).await;
    a.kill().await;
    assert_eq!(
        app.stream_state().await,
        (1, 1),
        "the job is pending with the dead consumer"
    );

    let b = app.worker(&[("NOTIFY_CLAIM_IDLE", "5s")]).await;
    let t = app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    assert!(t.message_ts.is_some());
    app.wait_drained(T).await;
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    assert_eq!(
        b.wait_metric("airlock_notifier_claimed_total", "", 1.0)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_job_that_keeps_killing_workers_is_dead_lettered_by_its_delivery_count() {
    let app = setup().await;
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    // Each replica hangs in a Slack call and is killed before it answers.
    for _ in 0..2 {
        app.slack.fail_next("chat.postMessage", Fault::Http(503));
        let w = app
            .worker(&[
                ("NOTIFY_RETRY_BASE", "60s"),
                ("NOTIFY_RETRY_MAX", "60s"),
                ("NOTIFY_CLAIM_IDLE", "5s"),
            ])
            .await;
        let before = app.slack.calls_to("chat.postMessage").len();
        app.slack
            .wait_for_calls("chat.postMessage", before + 1, T)
            .await;
        w.kill().await;
    }
    let _c = app
        .worker(&[("NOTIFY_CLAIM_IDLE", "5s"), ("NOTIFY_MAX_ATTEMPTS", "2")])
        .await;
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0]["error"].contains("failed deliveries"),
        "{:?}",
        dead[0]
    );
    assert!(app.get(t.id).await.notify_error.is_some());
}

#[tokio::test]
async fn sigterm_gives_in_flight_jobs_back_and_another_replica_posts_them() {
    let app = setup().await;
    let a = app
        .worker(&[("NOTIFY_RETRY_BASE", "60s"), ("NOTIFY_RETRY_MAX", "60s")])
        .await;
    app.slack.fail_next("chat.postMessage", Fault::Http(500));
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.slack.wait_for_calls("chat.postMessage", 1, T).await;
    let started = tokio::time::Instant::now();
    a.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drain did not wait out the backoff"
    );
    // Back on the stream, acknowledged by A, with the failure it had.
    assert_eq!(app.stream_state().await, (1, 0));
    let b = app.worker(&[]).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    app.wait_drained(T).await;
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    b.stop().await.unwrap();
}

#[tokio::test]
async fn probes_answer_and_readiness_drops_on_shutdown() {
    let app = setup().await;
    let w = app.worker(&[]).await;
    let base = format!("http://{}", w.addr);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("airlock_notifier_jobs_in_flight"));
    w.stop().await.unwrap();
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "server stopped"
    );
}

#[tokio::test]
async fn a_restarted_worker_finishes_its_own_pending_jobs_first_without_waiting_for_reclaim() {
    let app = setup().await;
    // Like a pod restarted under its name: the same consumer, killed while holding a job.
    let name = [("NOTIFIER_CONSUMER", "notifier-0")];
    let a = app
        .worker(&[
            name[0],
            ("NOTIFY_RETRY_BASE", "60s"),
            ("NOTIFY_RETRY_MAX", "60s"),
        ])
        .await;
    app.slack.fail_next("chat.postMessage", Fault::Http(503));
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.slack.wait_for_calls("chat.postMessage", 1, T).await;
    a.kill().await;
    assert_eq!(app.stream_state().await, (1, 1), "pending with notifier-0");

    // Far longer than the test waits: only the worker's own pending list can bring the job back.
    let started = tokio::time::Instant::now();
    let b = app.worker(&[name[0], ("NOTIFY_CLAIM_IDLE", "60s")]).await;
    let t = app
        .wait_ticket(t.id, Duration::from_secs(5), |t| t.message_ts.is_some())
        .await;
    assert!(t.message_ts.is_some());
    assert!(started.elapsed() < Duration::from_secs(5));
    app.wait_drained(T).await;
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    b.stop().await.unwrap();
}
