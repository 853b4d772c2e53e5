//! One worker, the happy paths and the ordering rules: post once, update, refuse privately.

use std::time::Duration;

use airlock_shared::ticket::{self, Decided};
use airlock_shared::{Decision, NotifyJob, Refusal, TicketStatus};
use serde_json::Value;

use crate::support::{TOKEN, setup};

const T: Duration = Duration::from_secs(10);

fn has_buttons(blocks: &Value) -> bool {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["type"] == "actions")
}

#[tokio::test]
async fn a_request_is_posted_recorded_and_updated_after_the_decision() {
    let app = setup().await;
    let w = app.worker(&[]).await;
    let t = app.ticket(|_| {}).await;
    app.request(&t).await;

    let posted = app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    let calls = app.slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(call.args["channel"], "C0APPROVALS");
    assert!(
        call.args["text"]
            .as_str()
            .unwrap()
            .contains("payments.refund")
    );
    assert_eq!(call.response["ok"], true);
    assert_eq!(posted.message_ts.as_deref(), call.response["ts"].as_str());
    assert_eq!(posted.message_channel.as_deref(), Some("C0APPROVALS"));
    let msgs = app.slack.messages("C0APPROVALS");
    assert_eq!(msgs.len(), 1);
    assert!(has_buttons(&msgs[0].blocks));

    let Decided::Changed(_) =
        ticket::decide(&app.db.pool, t.id, Decision::Approve, "U0ANA", "ana", None)
            .await
            .unwrap()
    else {
        panic!("decide")
    };
    app.closed(&t).await;
    let updates = app.slack.wait_for_calls("chat.update", 1, T).await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].args["ts"], posted.message_ts.clone().unwrap());
    let msgs = app.slack.messages("C0APPROVALS");
    assert_eq!(msgs.len(), 1, "still one message");
    assert_eq!(msgs[0].edits, 1);
    assert!(
        !has_buttons(&msgs[0].blocks),
        "buttons must go after a decision"
    );
    let shown = msgs[0].blocks.to_string();
    assert!(
        shown.contains("Approved") && shown.contains("<@U0ANA>"),
        "{shown}"
    );

    app.wait_drained(T).await;
    assert!(app.dead_letters().await.is_empty());
    assert_eq!(
        w.wait_metric("airlock_notifier_jobs_total", "outcome=\"done\"", 2.0)
            .await,
        2.0
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_rule_channel_overrides_the_default() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let t = app
        .ticket(|n| n.slack_channel = Some("#approvals".into()))
        .await;
    app.request(&t).await;
    let t = app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    // Slack answers with the channel id, which is what later updates need.
    assert_eq!(t.message_channel.as_deref(), Some("C0APPROVALS"));
    assert_eq!(
        app.slack.calls_to("chat.postMessage")[0].args["channel"],
        "#approvals"
    );
}

#[tokio::test]
async fn a_duplicate_delivery_posts_nothing_new() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let t = app.ticket(|_| {}).await;
    // Twice at once, then once more after it was posted.
    app.request(&t).await;
    app.request(&t).await;
    app.wait_ticket(t.id, T, |t| t.message_ts.is_some()).await;
    app.wait_drained(T).await;
    app.request(&t).await;
    app.wait_drained(T).await;
    assert_eq!(app.slack.calls_to("chat.postMessage").len(), 1);
    assert_eq!(app.slack.messages("C0APPROVALS").len(), 1);
    assert!(app.slack.calls_to("chat.delete").is_empty());
}

#[tokio::test]
async fn an_update_that_arrives_before_its_post_waits_and_is_not_lost() {
    let app = setup().await;
    let w = app.worker(&[]).await;
    let t = app.ticket(|_| {}).await;
    ticket::close_pending(&app.db.pool, t.id, TicketStatus::Cancelled)
        .await
        .unwrap()
        .unwrap();
    app.closed(&t).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(app.slack.calls().is_empty(), "nothing to update yet");
    let (len, pending) = app.stream_state().await;
    assert_eq!(
        (len, pending),
        (1, 1),
        "the update job is held, not acknowledged"
    );

    app.request(&t).await;
    app.slack.wait_for_calls("chat.update", 1, T).await;
    app.wait_drained(T).await;
    let msgs = app.slack.messages("C0APPROVALS");
    assert_eq!(msgs.len(), 1);
    assert!(!has_buttons(&msgs[0].blocks));
    assert!(msgs[0].blocks.to_string().contains("Cancelled"));
    // While it waited, the update lent its slot: the request did not have to wait for it.
    assert_eq!(
        w.wait_metric("airlock_notifier_jobs_total", "outcome=\"done\"", 2.0)
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_waiting_update_is_not_blocking_other_jobs_even_at_concurrency_one() {
    let app = setup().await;
    let _w = app.worker(&[("CONCURRENCY", "1")]).await;
    let closed = app.ticket(|_| {}).await;
    ticket::close_pending(&app.db.pool, closed.id, TicketStatus::Expired)
        .await
        .unwrap();
    app.closed(&closed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = app.ticket(|_| {}).await;
    app.request(&other).await;
    app.wait_ticket(other.id, T, |t| t.message_ts.is_some())
        .await;
    app.request(&closed).await;
    app.slack.wait_for_calls("chat.update", 1, T).await;
    app.wait_drained(T).await;
}

#[tokio::test]
async fn a_refused_click_gets_a_private_answer() {
    let app = setup().await;
    let _w = app.worker(&[]).await;
    let t = app.ticket(|_| {}).await;
    app.enqueue(&NotifyJob::RefusedClick {
        ticket_id: Some(t.id),
        user_id: "U0EVE".into(),
        channel: "C0APPROVALS".into(),
        refusal: Refusal::AlreadyClosed {
            status: TicketStatus::Approved,
            decided_by: Some("ana".into()),
        },
    })
    .await;
    let calls = app.slack.wait_for_calls("chat.postEphemeral", 1, T).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].args["user"], "U0EVE");
    let eph = app.slack.ephemerals();
    assert_eq!(eph.len(), 1);
    assert!(
        eph[0].text.contains("already approved by ana"),
        "{}",
        eph[0].text
    );
    app.wait_drained(T).await;
    // A refused click's note is not the ticket's message.
    assert!(app.get(t.id).await.message_ts.is_none());
}

#[tokio::test]
async fn pacing_spreads_posts_to_one_channel() {
    let app = setup().await;
    let _w = app.worker(&[("SLACK_CHANNEL_PACE", "300ms")]).await;
    for _ in 0..4 {
        let t = app.ticket(|_| {}).await;
        app.request(&t).await;
    }
    let calls = app.slack.wait_for_calls("chat.postMessage", 4, T).await;
    assert_eq!(calls.len(), 4);
    let mut at: Vec<_> = calls.iter().map(|c| c.received_at).collect();
    at.sort();
    // Slots are 300 ms apart; each post follows its slot after a claim and a read, whose time
    // varies on a busy machine, so single gaps can shrink but the span cannot.
    let span = at[3].duration_since(at[0]).unwrap();
    assert!(
        span >= Duration::from_millis(700),
        "4 posts within {span:?}"
    );
    let gaps: Vec<_> = at
        .windows(2)
        .map(|p| p[1].duration_since(p[0]).unwrap())
        .collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(100)),
        "{gaps:?}"
    );
}
