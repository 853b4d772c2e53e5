//! The decision flow: authorise, decide once, then signal and queue, in that order.

use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::ticket;
use airlock_shared::{DecisionSignal, NotifyJob, Refusal, TicketId, TicketStatus};

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(150);

#[tokio::test]
async fn approve_records_who_and_where_then_signals_then_queues() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    // `+` and `%` (even a `%` not followed by hex) must survive the one decode.
    let name = "ana+bob%41 %zz";
    let body = form(&click_payload(
        APPROVE_ACTION_ID,
        &id.to_string(),
        "U0ANA",
        name,
    ));
    let resp = app.post_signed(body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "");

    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0ANA"));
    assert_eq!(t.decided_by_name.as_deref(), Some(name));
    assert_eq!(t.message_channel.as_deref(), Some("C0APPROVE"));
    assert_eq!(t.message_ts.as_deref(), Some("1764400000.000100"));
    assert!(t.decided_at.is_some());
    // What the gateway's batched check sees.
    let settled = ticket::settled(&app.db.pool, &[id]).await.unwrap();
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].status, TicketStatus::Approved);

    assert_eq!(
        signals.drain(QUIET).await,
        vec![DecisionSignal {
            ticket_id: id,
            status: TicketStatus::Approved
        }]
    );
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::TicketClosed { ticket_id: id }]
    );
    assert!(
        app.metrics()
            .await
            .contains("airlock_webhook_requests_total{outcome=\"decided\"} 1")
    );
}

#[tokio::test]
async fn deny_then_a_second_click_changes_nothing_and_is_explained() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let deny = form(&click_payload(
        DENY_ACTION_ID,
        &id.to_string(),
        "U0BEA",
        "bea",
    ));
    assert_eq!(app.post_signed(deny).await.status(), 200);
    // A different person approving afterwards: 200, no change, no signal, an explanation.
    assert_eq!(
        app.post_signed(approve_body(id, "U0CAT")).await.status(),
        200
    );
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Denied);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0BEA"));
    assert_eq!(
        signals.drain(QUIET).await,
        vec![DecisionSignal {
            ticket_id: id,
            status: TicketStatus::Denied
        }]
    );
    assert_eq!(
        app.jobs().await,
        vec![
            NotifyJob::TicketClosed { ticket_id: id },
            NotifyJob::RefusedClick {
                ticket_id: Some(id),
                user_id: "U0CAT".into(),
                channel: "C0APPROVE".into(),
                refusal: Refusal::AlreadyClosed {
                    status: TicketStatus::Denied,
                    decided_by: Some("bea".into())
                }
            }
        ]
    );
}

#[tokio::test]
async fn only_named_approvers_decide() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app
        .open_ticket(&["U0BOSS", "U0CFO"], Duration::from_secs(600))
        .await;
    assert_eq!(
        app.post_signed(approve_body(id, "U0AGENTOWNER"))
            .await
            .status(),
        200
    );
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(signals.drain(QUIET).await.is_empty());
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::RefusedClick {
            ticket_id: Some(id),
            user_id: "U0AGENTOWNER".into(),
            channel: "C0APPROVE".into(),
            refusal: Refusal::NotAnApprover
        }]
    );
    assert_eq!(
        app.post_signed(approve_body(id, "U0CFO")).await.status(),
        200
    );
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0CFO"));
    assert_eq!(signals.drain(QUIET).await.len(), 1);
}

#[tokio::test]
async fn global_approvers_apply_to_tickets_that_name_none() {
    let app = spawn_with(|c| c.approvers = vec!["U0SEC".into()]).await;
    let open = app.open_ticket(&[], Duration::from_secs(600)).await;
    let named = app.open_ticket(&["U0OPS"], Duration::from_secs(600)).await;
    app.post_signed(approve_body(open, "U0RANDOM")).await;
    assert_eq!(app.ticket(open).await.status, TicketStatus::Pending);
    app.post_signed(approve_body(open, "U0SEC")).await;
    assert_eq!(app.ticket(open).await.status, TicketStatus::Approved);
    // The ticket's own list is the one that counts.
    app.post_signed(approve_body(named, "U0OPS")).await;
    assert_eq!(app.ticket(named).await.status, TicketStatus::Approved);
}

#[tokio::test]
async fn clicks_from_another_workspace_are_ignored() {
    let app = spawn_with(|c| c.team_id = Some("T0OTHER".into())).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    assert_eq!(app.post_signed(approve_body(id, "U1")).await.status(), 200);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(app.jobs().await.is_empty());
}

#[tokio::test]
async fn unknown_ticket_is_explained_and_invalid_id_is_400() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let unknown = TicketId::new();
    assert_eq!(
        app.post_signed(approve_body(unknown, "U1")).await.status(),
        200
    );
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::RefusedClick {
            ticket_id: Some(unknown),
            user_id: "U1".into(),
            channel: "C0APPROVE".into(),
            refusal: Refusal::UnknownTicket
        }]
    );
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let simple = id.0.simple().to_string();
    for bad in [
        "",
        "12345",
        "not-a-uuid",
        simple.as_str(),
        "'; DROP TABLE tickets; --",
    ] {
        let body = form(&click_payload(APPROVE_ACTION_ID, bad, "U1", "u"));
        assert_eq!(app.post_signed(body).await.status(), 400, "{bad:?}");
    }
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(signals.drain(QUIET).await.is_empty());
    assert_eq!(app.jobs().await.len(), 1);
}

#[tokio::test]
async fn malformed_payloads_are_400_and_other_interactions_are_ignored() {
    let app = spawn_app().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let valid = click_payload(APPROVE_ACTION_ID, &id.to_string(), "U1", "u").to_string();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"".to_vec(), 400),
        (b"token=abc".to_vec(), 400),
        (form_body("{not json"), 400),
        (form_body(&valid[..valid.len() / 2]), 400),
        (form_body("[]"), 400),
        (form_body("{\"type\":\"block_actions\"}"), 400),
        (
            form_body("{\"type\":\"block_actions\",\"user\":{\"id\":\"U1\"},\"actions\":\"x\"}"),
            400,
        ),
        // Double-encoded: what a client that encoded twice would send. One decode leaves
        // `%7B...`, which is not JSON, so it is refused rather than decoded again.
        (form_body(&url_encode(&valid)), 400),
        (
            form(&serde_json::json!({"type": "view_submission", "user": {"id": "U1"}})),
            200,
        ),
        (form(&serde_json::json!({"type": "shortcut"})), 200),
        (
            form(&click_payload(
                "some_other_button",
                &id.to_string(),
                "U1",
                "u",
            )),
            200,
        ),
        (
            form(
                &serde_json::json!({"type": "block_actions", "user": {"id": "U1"}, "actions": []}),
            ),
            200,
        ),
    ];
    for (body, status) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(app.post_signed(body).await.status(), status, "{shown}");
    }
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(app.jobs().await.is_empty());
}

#[tokio::test]
async fn a_literal_plus_in_the_form_is_a_space_as_the_encoding_says() {
    // Slack encodes spaces as `+` in some bodies; one decode turns them back into spaces.
    let app = spawn_app().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let json = click_payload(APPROVE_ACTION_ID, &id.to_string(), "U1", "ana maria").to_string();
    let encoded = url_encode(&json).replace("%20", "+");
    let body = format!("payload={encoded}").into_bytes();
    assert_eq!(app.post_signed(body).await.status(), 200);
    assert_eq!(
        app.ticket(id).await.decided_by_name.as_deref(),
        Some("ana maria")
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let get = |p: &str| app.http.get(format!("{}{p}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let m = get("/metrics").await.unwrap();
    assert_eq!(m.status(), 200);
    // A GET to the action endpoint is not allowed.
    assert_eq!(get("/slack/actions").await.unwrap().status(), 405);

    let down = spawn_with(|c| {
        c.database_url = "postgres://postgres@127.0.0.1:1/none".into();
    })
    .await;
    let r = down
        .http
        .get(format!("{}/readyz", down.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = down
        .http
        .get(format!("{}/healthz", down.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
