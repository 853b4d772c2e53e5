//! Races: exactly one outcome is recorded, signalled once, and it is what Postgres holds.

use std::sync::Arc;
use std::time::Duration;

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::ticket;
use airlock_shared::{NotifyJob, Refusal, TicketStatus};
use tokio::sync::Barrier;

use crate::helpers::*;

const QUIET: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approve_and_deny_at_the_same_instant() {
    let app = Arc::new(spawn_app().await);
    let mut signals = Signals::subscribe(&app.redis).await;
    let mut seen = std::collections::HashSet::new();
    for round in 0..25 {
        let id = app.open_ticket(&[], Duration::from_secs(600)).await;
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = Vec::new();
        for (action, user) in [(APPROVE_ACTION_ID, "U0APP"), (DENY_ACTION_ID, "U0DEN")] {
            let app = app.clone();
            let barrier = barrier.clone();
            let body = form(&click_payload(action, &id.to_string(), user, user));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                app.post_signed(body).await.status()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        let row = app.ticket(id).await;
        assert!(
            matches!(row.status, TicketStatus::Approved | TicketStatus::Denied),
            "round {round}: {:?}",
            row.status
        );
        let winner = if row.status == TicketStatus::Approved {
            "U0APP"
        } else {
            "U0DEN"
        };
        let loser = if winner == "U0APP" { "U0DEN" } else { "U0APP" };
        assert_eq!(row.decided_by_id.as_deref(), Some(winner));
        seen.insert(row.status);

        let got = signals.drain(QUIET).await;
        assert_eq!(got.len(), 1, "round {round}: {got:?}");
        assert_eq!(got[0].ticket_id, id);
        assert_eq!(got[0].status, row.status, "the signal matches the row");
        let settled = ticket::settled(&app.db.pool, &[id]).await.unwrap();
        assert_eq!(
            settled[0].status, row.status,
            "the gateway sees the same outcome"
        );

        let jobs: Vec<NotifyJob> = app
            .jobs()
            .await
            .into_iter()
            .filter(|j| j.ticket_id() == Some(id))
            .collect();
        assert_eq!(jobs.len(), 2, "{jobs:?}");
        assert!(jobs.contains(&NotifyJob::TicketClosed { ticket_id: id }));
        assert!(jobs.contains(&NotifyJob::RefusedClick {
            ticket_id: Some(id),
            user_id: loser.into(),
            channel: "C0APPROVE".into(),
            refusal: Refusal::AlreadyClosed {
                status: row.status,
                decided_by: Some(winner.into())
            }
        }));
    }
    // Not a proof of fairness, only that neither side is hard-wired to win.
    eprintln!("outcomes seen over 25 rounds: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_clicks_record_one_outcome() {
    let app = Arc::new(spawn_app().await);
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let n = 60;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let app = app.clone();
        let barrier = barrier.clone();
        let action = if i % 2 == 0 {
            APPROVE_ACTION_ID
        } else {
            DENY_ACTION_ID
        };
        let user = format!("U{i:04}");
        let body = form(&click_payload(action, &id.to_string(), &user, &user));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.post_signed(body).await.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let row = app.ticket(id).await;
    let winner = row.decided_by_id.clone().unwrap();
    let winner_index: usize = winner[1..].parse().unwrap();
    let expected = if winner_index.is_multiple_of(2) {
        TicketStatus::Approved
    } else {
        TicketStatus::Denied
    };
    assert_eq!(row.status, expected);
    let got = signals.drain(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].status, row.status);
    let jobs = app.jobs().await;
    let closed = jobs
        .iter()
        .filter(|j| matches!(j, NotifyJob::TicketClosed { .. }))
        .count();
    let refused: Vec<_> = jobs
        .iter()
        .filter_map(|j| match j {
            NotifyJob::RefusedClick {
                user_id, refusal, ..
            } => Some((user_id.clone(), refusal.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(closed, 1);
    assert_eq!(refused.len(), n - 1);
    assert!(refused.iter().all(|(u, r)| u != &winner
        && *r
            == Refusal::AlreadyClosed {
                status: row.status,
                decided_by: Some(winner.clone())
            }));
}

#[tokio::test]
async fn a_click_after_the_gateway_expired_the_ticket_changes_nothing() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;

    // The gateway gave up and wrote `expired`.
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    ticket::close_pending(&app.db.pool, id, TicketStatus::Expired)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.post_signed(approve_body(id, "U1")).await.status(), 200);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Expired);

    // The deadline passed but nobody has written `expired` yet: still no decision.
    let late = app.open_ticket(&[], Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.post_signed(approve_body(late, "U1")).await.status(),
        200
    );
    let row = app.ticket(late).await;
    assert_eq!(row.status, TicketStatus::Pending);
    assert!(row.decided_by_id.is_none());

    // Cancelled (the caller went away).
    let gone = app.open_ticket(&[], Duration::from_secs(600)).await;
    ticket::close_pending(&app.db.pool, gone, TicketStatus::Cancelled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.post_signed(approve_body(gone, "U1")).await.status(),
        200
    );
    assert_eq!(app.ticket(gone).await.status, TicketStatus::Cancelled);

    assert!(signals.drain(QUIET).await.is_empty());
    let refusals: Vec<Refusal> = app
        .jobs()
        .await
        .into_iter()
        .map(|j| match j {
            NotifyJob::RefusedClick { refusal, .. } => refusal,
            other => panic!("unexpected job {other:?}"),
        })
        .collect();
    assert_eq!(
        refusals,
        vec![
            Refusal::AlreadyClosed {
                status: TicketStatus::Expired,
                decided_by: None
            },
            Refusal::AlreadyClosed {
                status: TicketStatus::Expired,
                decided_by: None
            },
            Refusal::AlreadyClosed {
                status: TicketStatus::Cancelled,
                decided_by: None
            },
        ]
    );
}
