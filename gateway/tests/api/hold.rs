//! The approval hold: every numbered point of the issue.

use std::time::{Duration, Instant};

use airlock_shared::job::NotifyJob;
use airlock_shared::ticket::{self, Decided, Decision};
use airlock_shared::{TicketId, TicketStatus, canonical};
use airlock_test_support::restart::{RestartStack, a_retry_after_a_restart_reattaches};
use serde_json::json;

use super::helpers::*;

fn refund(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "usd"})
}

#[tokio::test]
async fn approved_calls_run_once_and_the_ticket_records_everything() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(
        app.url(),
        sid.clone(),
        41,
        "create_refund",
        refund(150),
        "application/json, text/event-stream",
    );
    let id = app.wait_for_request().await;
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Pending);
    assert_eq!(
        (t.principal.as_str(), t.session_id.as_str(), t.tool.as_str()),
        ("billing-bot", sid.as_str(), "create_refund")
    );
    assert_eq!(t.arguments, refund(150));
    assert_eq!(t.rule, "big refunds need a manager");
    assert_eq!(t.approvers, vec![APPROVER.to_owned()]);
    assert_eq!(
        t.request_hash,
        canonical::request_hash("create_refund", &refund(150))
    );
    let ttl = (t.expires_at - t.created_at).num_seconds();
    assert!(
        (29..=31).contains(&ttl),
        "expires_at follows APPROVAL_TIMEOUT: {ttl}s"
    );
    assert!(
        app.upstream.calls().is_empty(),
        "nothing runs before a decision"
    );
    assert!(matches!(
        decide(&app.db, &app.redis, id, Decision::Approve, true).await,
        Decided::Changed(_)
    ));
    let a = call.await.unwrap();
    assert_eq!(a.body["id"], json!(41));
    assert_eq!(
        a.tool_text(),
        json!({"tool": "create_refund", "arguments": refund(150)})
    );
    assert_eq!(app.upstream.calls().len(), 1);
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Executed);
    assert!(t.executed_at.is_some());
    // One approval request; nothing else was needed.
    assert_eq!(
        app.jobs().await,
        vec![NotifyJob::ApprovalRequest { ticket_id: id }]
    );
}

async fn held_call(
    app: &TestApp,
    sid: &str,
    id: i64,
    amount: i64,
) -> tokio::task::JoinHandle<Answer> {
    let (url, sid) = (app.url(), sid.to_owned());
    spawn_call(
        url,
        sid,
        id,
        "create_refund",
        refund(amount),
        "application/json",
    )
}

#[tokio::test]
async fn a_person_who_denies_is_named_in_the_error() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    decide(&app.db, &app.redis, id, Decision::Deny, true).await;
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval denied"));
    assert_eq!(
        a.body.pointer("/error/data/decided_by"),
        Some(&json!("Ana Approver"))
    );
    assert_eq!(
        a.body.pointer("/error/data/ticket"),
        Some(&json!(id.to_string()))
    );
    assert_eq!(
        a.body.pointer("/error/data/rule"),
        Some(&json!("big refunds need a manager"))
    );
    assert!(app.upstream.calls().is_empty());
    assert_eq!(app.ticket(id).await.status, TicketStatus::Denied);
}

#[tokio::test]
async fn no_decision_in_time_expires_the_ticket_and_asks_for_a_message_update() {
    let app = spawn_with(Opts {
        approval_timeout: Duration::from_secs(1),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval timeout"));
    assert_eq!(app.ticket(id).await.status, TicketStatus::Expired);
    let jobs = app.jobs().await;
    assert_eq!(
        jobs,
        vec![
            NotifyJob::ApprovalRequest { ticket_id: id },
            NotifyJob::TicketClosed { ticket_id: id }
        ]
    );
    // A late click changes nothing.
    assert!(
        matches!(decide(&app.db, &app.redis, id, Decision::Approve, true).await, Decided::Unchanged(t) if t.status == TicketStatus::Expired)
    );
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn a_decision_committed_before_the_wait_began_is_seen_at_once() {
    // With a 60 s poll, only the check made at registration can find it in time.
    let app = spawn_with(Opts {
        poll_interval: Duration::from_secs(60),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let new = airlock_shared::ticket::NewTicket {
        id: airlock_shared::TicketId::new(),
        principal: "billing-bot".into(),
        principal_issuer: None,
        principal_claims: None,
        session_id: "elsewhere".into(),
        tool: "create_refund".into(),
        arguments: refund(150),
        rule: "r".into(),
        reason: None,
        approvers: vec![],
        slack_channel: None,
        request_hash: "h".into(),
        timeout: Duration::from_secs(30),
        approvals: 1,
        owner: None,
        policy_revision: None,
        approver_groups: Vec::new(),
        fingerprint: String::new(),
        grant: None,
        traceparent: None,
        tracestate: None,
    };
    airlock_shared::ticket::open(&app.db.pool, &new)
        .await
        .unwrap();
    decide(&app.db, &app.redis, new.id, Decision::Deny, false).await;
    let pool = app.db.pool.clone();
    let redis = redis::Client::open(app.redis.url.as_str()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let hub = airlock_gateway::approval::Hub::start(
        pool,
        redis,
        &app.redis.keys,
        Duration::from_secs(60),
        airlock_gateway::metrics::Metrics::new().unwrap(),
        airlock_gateway::lock::LockWakeups::new(&app.redis.keys),
        stop.clone(),
    );
    let started = Instant::now();
    let got = hub_wait(&hub, new.id).await;
    assert_eq!(got, TicketStatus::Denied);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    stop.cancel();
    let _ = sid;
}

async fn hub_wait(
    hub: &airlock_gateway::approval::Hub,
    id: airlock_shared::TicketId,
) -> TicketStatus {
    hub.wait_settled(id, Duration::from_secs(5))
        .await
        .expect("settled in time")
        .status
}

#[tokio::test]
async fn a_publish_that_never_arrives_is_found_in_postgres_within_two_seconds() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The webhook's row lands; its publish is lost.
    decide(&app.db, &app.redis, id, Decision::Approve, false).await;
    let committed = Instant::now();
    let a = call.await.unwrap();
    let waited = committed.elapsed();
    assert!(a.code().is_none(), "{:?}", a.body);
    assert!(waited < Duration::from_secs(2), "resumed after {waited:?}");
    assert_eq!(app.upstream.calls().len(), 1);
    let m = app.metrics().await;
    assert!(m.contains("airlock_signal_lost_total 1"), "{m}");
}

#[tokio::test]
async fn a_killed_pubsub_connection_is_reestablished() {
    let app = spawn_with(Opts {
        poll_interval: Duration::from_secs(30),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    let mut conn = app.redis.conn().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    // Wait until a subscriber is back on our channel, then publish once.
    let channel = app.redis.keys.decisions_channel();
    let back = eventually(Duration::from_secs(5), || {
        let mut c = conn.clone();
        let ch = channel.clone();
        async move {
            let v: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&ch)
                .query_async(&mut c)
                .await
                .unwrap();
            (v.first().map(|x| x.1).unwrap_or(0) > 0).then_some(())
        }
    })
    .await;
    assert!(back.is_some(), "subscriber came back");
    let started = Instant::now();
    decide(&app.db, &app.redis, id, Decision::Approve, true).await;
    let a = call.await.unwrap();
    assert!(a.code().is_none(), "{:?}", a.body);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_session_lock_is_extended_while_the_call_waits() {
    let app = spawn_with(Opts {
        session_lock_ttl: Duration::from_secs(1),
        lock_acquire_timeout: Duration::from_millis(200),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    // Three TTLs later the lock is still held: a second mutating call is refused as busy.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            2,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert_eq!((a.code(), a.message()), (Some(-32002), "session busy"));
    // Read-only calls do not take the lock.
    let a = app
        .call(BILLING_TOKEN, &sid, 3, "list_charges", json!({}))
        .await;
    assert!(a.code().is_none(), "{:?}", a.body);
    decide(&app.db, &app.redis, id, Decision::Approve, true).await;
    assert!(call.await.unwrap().code().is_none());
    // Released once the call is done.
    let a = eventually(Duration::from_secs(2), || async {
        let a = app
            .call(
                BILLING_TOKEN,
                &sid,
                4,
                "create_refund",
                json!({"amount": 5}),
            )
            .await;
        a.code().is_none().then_some(a)
    })
    .await;
    assert!(a.is_some(), "lock released after the call");
}

#[tokio::test]
async fn a_lock_left_by_a_crashed_owner_expires() {
    let app = spawn_with(Opts {
        lock_acquire_timeout: Duration::from_millis(200),
        ..Opts::default()
    })
    .await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let mut conn = app.redis.conn().await;
    let key = app
        .redis
        .keys
        .session_lock(&airlock_shared::SessionId(sid.clone()));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("crashed-pod-token")
        .arg("PX")
        .arg(1500)
        .query_async(&mut conn)
        .await
        .unwrap();
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            1,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert_eq!(a.code(), Some(-32002));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let a = app
        .call(
            BILLING_TOKEN,
            &sid,
            2,
            "create_refund",
            json!({"amount": 5}),
        )
        .await;
    assert!(a.code().is_none(), "{:?}", a.body);
    // Our own release did not delete someone else's lock: set a foreign lock, check it survives.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("someone-else")
        .arg("PX")
        .arg(60000)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("someone-else"));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_ticket() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 1, 500).await;
    let id = app.wait_for_request().await;
    call.abort();
    let status = eventually(Duration::from_secs(5), || async {
        let s = app.ticket(id).await.status;
        (s != TicketStatus::Pending).then_some(s)
    })
    .await;
    assert_eq!(status, Some(TicketStatus::Cancelled));
    let jobs = eventually(Duration::from_secs(2), || async {
        let j = app.jobs().await;
        (j.len() == 2).then_some(j)
    })
    .await;
    assert_eq!(jobs.unwrap()[1], NotifyJob::TicketClosed { ticket_id: id });
    // Nobody can approve a call that no one waits for.
    assert!(matches!(
        decide(&app.db, &app.redis, id, Decision::Approve, true).await,
        Decided::Unchanged(_)
    ));
    assert!(app.upstream.calls().is_empty());
    // The abandoned call still leaves its audit row, naming the ticket, and is no longer
    // counted as held.
    let rows = eventually(Duration::from_secs(5), || async {
        let r = airlock_shared::audit::for_session(&app.db.pool, &sid)
            .await
            .unwrap();
        (!r.is_empty()).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![(
            "create_refund".to_owned(),
            "approve".to_owned(),
            "client_gone".to_owned(),
            Some(id.0)
        )]
    );
    let m = app.metrics().await;
    assert!(m.contains("airlock_held_calls 0"), "{m}");
    assert!(
        m.contains(r#"airlock_tool_calls_total{outcome="client_gone"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn many_calls_approved_at_once_each_run_exactly_once() {
    let app = spawn_app().await;
    const N: usize = 40;
    let mut sessions = Vec::new();
    for _ in 0..N {
        sessions.push(app.initialize(BILLING_TOKEN).await);
    }
    let mut calls = Vec::new();
    for (i, sid) in sessions.iter().enumerate() {
        calls.push(held_call(&app, sid, i as i64, 500 + i as i64).await);
    }
    let pending = eventually(Duration::from_secs(10), || async {
        let n = ticket::count_with_status(&app.db.pool, TicketStatus::Pending)
            .await
            .unwrap();
        (n as usize == N).then_some(())
    })
    .await;
    assert!(pending.is_some(), "all {N} calls are held");
    // Everything approved in one go, the webhook's way (rows first, then one signal each):
    // the claims of all waiters land together and are batched.
    let ids = ticket::ids_with_status(&app.db.pool, TicketStatus::Pending)
        .await
        .unwrap();
    let clicks: Vec<ticket::ClickDecision> = ids
        .iter()
        .map(|id| ticket::ClickDecision {
            ticket: *id,
            decision: Decision::Approve,
            user_id: APPROVER.to_owned(),
            user_name: "Ana Approver".to_owned(),
            message: None,
            allowed_by_global: false,
            fingerprint: None,
            membership_max_age: std::time::Duration::ZERO,
        })
        .collect();
    let decided = ticket::decide_many(&app.db.pool, &clicks).await.unwrap();
    assert!(decided.iter().all(Option::is_some), "every click decides");
    let mut conn = app.redis.conn().await;
    for id in &ids {
        let sig = airlock_shared::DecisionSignal {
            ticket_id: *id,
            status: TicketStatus::Approved,
        };
        airlock_shared::signal::publish(&mut conn, &app.redis.keys, &sig)
            .await
            .unwrap();
    }
    for c in calls {
        let a = c.await.unwrap();
        assert!(a.code().is_none(), "{:?}", a.body);
    }
    let executed = ticket::count_with_status(&app.db.pool, TicketStatus::Executed)
        .await
        .unwrap();
    assert_eq!(executed as usize, N);
    let mut amounts: Vec<i64> = app
        .upstream
        .calls()
        .iter()
        .map(|c| c.arguments["amount"].as_i64().unwrap())
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, (0..N as i64).map(|i| 500 + i).collect::<Vec<_>>());
}

#[tokio::test]
async fn notifications_cancelled_cancels_the_held_call() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = held_call(&app, &sid, 77, 500).await;
    let id = app.wait_for_request().await;
    let r = app.post(Some(BILLING_TOKEN), Some(&sid), json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77, "reason": "user stopped"}}).to_string()).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let a = call.await.unwrap();
    assert_eq!(a.message(), "approval cancelled");
    assert_eq!(app.ticket(id).await.status, TicketStatus::Cancelled);
}

#[tokio::test]
async fn a_failed_ticket_insert_fails_the_call() {
    let app = spawn_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    app.db.break_tickets_table().await;
    let a = app
        .call(BILLING_TOKEN, &sid, 1, "create_refund", refund(500))
        .await;
    assert_eq!((a.code(), a.message()), (Some(-32603), "internal error"));
    assert!(
        app.jobs().await.is_empty(),
        "no job for a ticket that does not exist"
    );
}

#[tokio::test]
async fn sigterm_lets_held_calls_finish_within_the_grace_then_interrupts_them() {
    let app = spawn_with(Opts {
        shutdown_grace: Duration::from_secs(2),
        ..Opts::default()
    })
    .await;
    let sid_a = app.initialize(BILLING_TOKEN).await;
    let sid_b = app.initialize(BILLING_TOKEN).await;
    let a = held_call(&app, &sid_a, 1, 500).await;
    let first = wait_for_request(&app.redis, 0).await;
    let b = held_call(&app, &sid_b, 1, 600).await;
    let second = wait_for_request(&app.redis, 1).await;
    app.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused once shutdown began.
    assert!(
        reqwest::Client::new()
            .get(format!("http://{}/healthz", app.addr))
            .send()
            .await
            .is_err()
    );
    // Decided within the grace: completes normally.
    decide(&app.db, &app.redis, first, Decision::Approve, true).await;
    assert!(a.await.unwrap().code().is_none());
    // Undecided: interrupted after the grace, ticket left pending for a retry.
    let started = Instant::now();
    let b = b.await.unwrap();
    assert_eq!(
        (b.code(), b.message()),
        (Some(-32001), "approval interrupted")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(app.ticket(second).await.status, TicketStatus::Pending);
}

/// The in-process gateway behind the shared restart-and-retry scenario.
struct InProcess {
    app: TestApp,
    sid: String,
    first: Option<tokio::task::JoinHandle<Answer>>,
    second: Option<(std::net::SocketAddr, tokio_util::sync::CancellationToken)>,
}

impl InProcess {
    /// A gateway with a short shutdown grace and a billing session.
    async fn start() -> Self {
        let app = spawn_with(Opts {
            shutdown_grace: Duration::from_millis(200),
            ..Opts::default()
        })
        .await;
        let sid = app.initialize(BILLING_TOKEN).await;
        Self {
            app,
            sid,
            first: None,
            second: None,
        }
    }

    fn stop_second(&self) {
        if let Some((_, shutdown)) = &self.second {
            shutdown.cancel();
        }
    }
}

impl RestartStack for InProcess {
    async fn hold(&mut self) -> TicketId {
        self.first = Some(held_call(&self.app, &self.sid, 1, 500).await);
        self.app.wait_for_request().await
    }

    async fn stop_gateway(&mut self) -> String {
        self.app.shutdown.cancel();
        let first = self.first.take().expect("a held call").await.unwrap();
        first.message().to_owned()
    }

    async fn start_gateway(&mut self) {
        let (addr, shutdown, _h) = start_gateway(&self.app.second_config()).await;
        self.second = Some((addr, shutdown));
    }

    fn retry(&mut self) -> tokio::task::JoinHandle<Result<(), String>> {
        let (addr, _) = self.second.as_ref().expect("a second gateway");
        // Same call, keys in another order: the same canonical request.
        let call = spawn_call(
            format!("http://{addr}/mcp"),
            self.sid.clone(),
            2,
            "create_refund",
            json!({"currency": "usd", "amount": 500}),
            "application/json",
        );
        tokio::spawn(async move {
            let a = call.await.unwrap();
            match a.code() {
                None => Ok(()),
                Some(_) => Err(a.body.to_string()),
            }
        })
    }

    async fn approval_requests(&self) -> usize {
        let jobs = self.app.jobs().await;
        jobs.iter()
            .filter(|j| matches!(j, NotifyJob::ApprovalRequest { .. }))
            .count()
    }

    async fn approve(&mut self, id: TicketId) {
        decide(&self.app.db, &self.app.redis, id, Decision::Approve, true).await;
    }

    async fn status(&self, id: TicketId) -> TicketStatus {
        self.app.ticket(id).await.status
    }

    async fn executions(&self) -> usize {
        self.app.upstream.calls().len()
    }
}

#[tokio::test]
async fn a_retry_after_a_restart_reattaches_and_runs_exactly_once() {
    let mut stack = InProcess::start().await;
    a_retry_after_a_restart_reattaches(&mut stack, Duration::from_millis(500)).await;
    stack.stop_second();
}

#[tokio::test]
async fn an_approved_ticket_that_never_ran_runs_exactly_once_on_retry() {
    let mut stack = InProcess::start().await;
    let id = stack.hold().await;
    assert_eq!(stack.stop_gateway().await, "approval interrupted");
    // Approved while no gateway waited.
    stack.approve(id).await;
    stack.start_gateway().await;
    let a = stack.retry().await.unwrap();
    assert!(a.is_ok(), "{a:?}");
    assert_eq!(stack.executions().await, 1);
    assert_eq!(stack.status(id).await, TicketStatus::Executed);
    // The approval was single use: the next identical call asks again.
    let third = stack.retry();
    let next = wait_for_request(&stack.app.redis, 1).await;
    assert_ne!(next, id);
    third.abort();
    stack.stop_second();
}
