//! Slack failing: rate limits, server errors, permanent refusals, a wrong token.

use std::time::Duration;

use airlock_slack_fake::fake::Fault;

use crate::support::{TOKEN, logs, setup};

const T: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_429_is_obeyed_for_its_retry_after() {
    let app = setup().await;
    let w = app.worker(&[]).await;
    app.slack.fail_next(
        "chat.postMessage",
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    let calls = app.slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, 429);
    let waited = calls[1]
        .received_at
        .duration_since(calls[0].received_at)
        .unwrap();
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}"
    );
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    assert_eq!(
        w.wait_metric("airlock_notifier_retries_total", "rate_limited", 1.0)
            .await,
        1.0
    );
}

#[tokio::test]
async fn server_errors_and_transient_slack_errors_are_retried_with_backoff() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    app.slack.fail_next("chat.postMessage", Fault::Http(503));
    app.slack.fail_next("chat.postMessage", Fault::Http(500));
    app.slack.fail_next(
        "chat.postMessage",
        Fault::SlackError("internal_error".into()),
    );
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    let calls = app.slack.calls_to("chat.postMessage");
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 500, 200, 200]
    );
    // Backoff grows: base 20ms, doubling, jittered in the upper half.
    let gaps: Vec<_> = calls
        .windows(2)
        .map(|w| w[1].received_at.duration_since(w[0].received_at).unwrap())
        .collect();
    assert!(gaps[0] >= Duration::from_millis(10), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(40), "{gaps:?}");
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    app.wait_drained(T).await;
}

#[tokio::test]
async fn a_permanent_error_goes_to_dead_letter_at_once_and_is_recorded() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let lost = app
        .ticket(|n| n.slack_channel = Some("C0DOESNOTEXIST".into()))
        .await;
    let foreign = app
        .ticket(|n| n.slack_channel = Some("C0FOREIGN".into()))
        .await;
    app.request(&lost).await;
    app.request(&foreign).await;
    let dead = app.wait_dead_letters(2, T).await;
    assert_eq!(dead.len(), 2);
    let errors: Vec<_> = dead.iter().map(|d| d["error"].clone()).collect();
    assert!(
        errors.iter().any(|e| e.contains("channel_not_found")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("not_in_channel")),
        "{errors:?}"
    );
    assert!(dead.iter().all(|d| d["job"].contains("approval_request")));
    // Once each: no retry of a permanent error.
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 2);
    let lost = app
        .wait_ticket(lost.id, T, |t| t.notify_error.is_some())
        .await;
    assert!(lost.notify_error.unwrap().contains("channel_not_found"));
    app.wait_drained(T).await;

    // Its update has nothing to update, and says so instead of waiting forever.
    airlock_shared::ticket::close_pending(
        &app.db.pool,
        foreign.id,
        airlock_shared::TicketStatus::Expired,
    )
    .await
    .unwrap();
    app.closed(&foreign).await;
    app.wait_drained(T).await;
    assert!(app.slack.calls_to("chat.update").is_empty());
}

#[tokio::test]
async fn invalid_blocks_are_permanent() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    app.slack.fail_next(
        "chat.postMessage",
        Fault::SlackError("invalid_blocks".into()),
    );
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    let t = app.wait_ticket(t.id, T, |t| t.notify_error.is_some()).await;
    assert!(t.notify_error.unwrap().contains("invalid_blocks"));
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
}

#[tokio::test]
async fn too_many_failed_attempts_go_to_dead_letter() {
    let app = setup().await;
    let _w = app.worker(&[("NOTIFY_MAX_ATTEMPTS", "3")]).await;
    for _ in 0..5 {
        app.slack.fail_next("chat.postMessage", Fault::Http(502));
    }
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempts"], "3");
    assert!(
        dead[0]["error"].contains("gave up after 3 attempts"),
        "{:?}",
        dead[0]
    );
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 3);
    let t = app.get(t.id).await;
    assert!(t.notify_error.unwrap().contains("HTTP 502"));
    assert!(t.message_ts.is_none());
    app.wait_drained(T).await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_no_token_is_ever_logged() {
    let app = setup().await;
    let wrong = "xoxb-9999999999-8888888888-WRONGTOKENVALUE";
    let w = app.worker(&[("SLACK_BOT_TOKEN", wrong)]).await;
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    let t = app.wait_ticket(t.id, T, |t| t.notify_error.is_some()).await;
    assert!(t.notify_error.unwrap().contains("invalid_auth"));
    assert_eq!(
        app.slack.calls_to("chat.postMessage")[0].token.as_deref(),
        Some(wrong)
    );
    // A good worker in the same process, so the log has successful calls too.
    w.stop().await.unwrap();
    let good = app.worker(&[]).await;
    let t2 = app.ticket(|_| {}).await;
    app.request(&t2).await;
    app.wait_ticket(t2.id, T, |t| t.message_ts.is_some()).await;
    good.stop().await.unwrap();
    let logged = logs();
    assert!(logged.contains("invalid_auth"), "the failure is logged");
    assert!(logged.contains("approval request posted"));
    assert!(!logged.contains(wrong), "a token was logged");
    assert!(!logged.contains(TOKEN), "a token was logged");
    assert!(!logged.contains("TOKENVALUE"), "part of a token was logged");
    let metrics = good_metrics_text(&app).await;
    assert!(!metrics.contains("TOKENVALUE"));
}

async fn good_metrics_text(app: &crate::support::TestApp) -> String {
    let w = app.worker(&[]).await;
    let body = reqwest::get(format!("http://{}/metrics", w.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("airlock_notifier_jobs_in_flight"));
    body
}

#[tokio::test]
async fn a_slow_slack_is_waited_for_within_the_timeout() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    app.slack.set_latency(Duration::from_millis(400));
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
}

#[tokio::test]
async fn an_update_of_a_deleted_message_is_dead_lettered_with_the_error() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    app.slack
        .fail_next("chat.update", Fault::SlackError("message_not_found".into()));
    airlock_shared::ticket::close_pending(
        &app.db.pool,
        t.id,
        airlock_shared::TicketStatus::Expired,
    )
    .await
    .unwrap();
    app.closed(&t).await;
    let dead = app.wait_dead_letters(1, T).await;
    assert!(dead[0]["error"].contains("message_not_found"));
    assert!(dead[0]["job"].contains("ticket_closed"));
    let t = app.get(t.id).await;
    assert!(t.notify_error.unwrap().contains("message_not_found"));
}
