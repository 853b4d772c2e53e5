//! The webhook behind a real PgBouncer in transaction mode (`DATABASE_POOLER=transaction`):
//! its core cases pass with every statement going through the pooler.

use std::time::Duration;

use airlock_shared::buttons::DENY_ACTION_ID;
use airlock_shared::db::Pooler;
use airlock_shared::{NotifyJob, Refusal, TicketId, TicketStatus};
use airlock_test_support::fresh_db;
use airlock_test_support::pgbouncer::PgBouncer;

use crate::helpers::*;

/// A webhook whose `DATABASE_URL` is PgBouncer (transaction mode, two server connections) in
/// front of its fresh database; the test's own reads and writes go to Postgres directly.
async fn behind_pgbouncer() -> (TestApp, PgBouncer) {
    let db = fresh_db().await;
    let bouncer = PgBouncer::start_with(&db.url, 2).await;
    let url = bouncer.url().to_owned();
    let app = spawn_on(db, |c| {
        c.database_url = url.into();
        c.database_pooler = Pooler::Transaction;
    })
    .await;
    (app, bouncer)
}

#[tokio::test]
async fn a_signed_click_decides_a_ticket_through_pgbouncer() {
    let (app, bouncer) = behind_pgbouncer().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let resp = app.post_signed(approve_body(id, "U0ANA")).await;
    assert_eq!(resp.status(), 200, "{}", bouncer.log());
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Approved);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0ANA"));
    assert_eq!(t.message_ts.as_deref(), Some("1764400000.000100"));
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::TicketClosed { ticket_id: id }]
    );
    // Readiness asks Postgres through the pooler too.
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_double_click_changes_nothing_through_pgbouncer() {
    let (app, _bouncer) = behind_pgbouncer().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let deny = form(&click_payload(
        DENY_ACTION_ID,
        &id.to_string(),
        "U0BEA",
        "bea",
    ));
    assert_eq!(app.post_signed(deny).await.status(), 200);
    assert_eq!(
        app.post_signed(approve_body(id, "U0CAT")).await.status(),
        200
    );
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Denied);
    assert_eq!(t.decided_by_id.as_deref(), Some("U0BEA"));
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
async fn an_unknown_ticket_is_explained_through_pgbouncer() {
    let (app, _bouncer) = behind_pgbouncer().await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clicks_at_once_through_pgbouncer_each_decide_their_ticket() {
    // More webhook connections than PgBouncer has servers: statements of different clients
    // interleave on the same server connections, as they do under load.
    let (app, bouncer) = behind_pgbouncer().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.open_ticket(&[], Duration::from_secs(600)).await);
    }
    let clicks = ids
        .iter()
        .map(|id| app.post_signed(approve_body(*id, "U0ANA")));
    for resp in futures::future::join_all(clicks).await {
        assert_eq!(resp.status(), 200, "{}", bouncer.log());
    }
    for id in ids {
        assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
    }
}
