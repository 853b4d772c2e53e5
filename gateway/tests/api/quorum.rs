//! Two-person approvals through the gateway: the ticket carries its quorum, owner and call
//! fingerprint; the call runs once, only after the second distinct approval, and only if the
//! approved ticket holds exactly this call.

use airlock_shared::ticket::{self, Decided, Decision};
use airlock_shared::{DecisionSignal, TicketId, TicketStatus, canonical, signal};
use serde_json::json;

use super::helpers::*;

const TWO_PERSON: &str = r#"
version: 1
default: deny
rules:
  - name: refunds need two people
    tools: ["create_refund"]
    action: approve
    approvers: [U0123ABCD, U0BOB, U0CAROL]
    approvals: 2
"#;

async fn two_person_app() -> TestApp {
    spawn_with(Opts {
        policy: TWO_PERSON.to_owned(),
        billing_owner: Some("U0CAROL".into()),
        ..Opts::default()
    })
    .await
}

/// A vote as the webhook casts it (with the approver check), then the signal.
async fn vote(app: &TestApp, id: TicketId, user: &str, decision: Decision) -> Decided {
    let clicker = ticket::Clicker {
        id: user,
        name: user,
        global_approvers: &[],
        membership_max_age: std::time::Duration::ZERO,
    };
    let d = ticket::decide_as(&app.db.pool, id, decision, clicker, None, None)
        .await
        .unwrap();
    if let Decided::Changed(t) = &d
        && !t.status.is_pending()
    {
        let mut conn = app.redis.conn().await;
        let s = DecisionSignal {
            ticket_id: t.id,
            status: t.status,
        };
        signal::publish(&mut conn, &app.redis.keys, &s)
            .await
            .unwrap();
    }
    d
}

fn refund(amount: i64) -> serde_json::Value {
    json!({"amount": amount, "currency": "usd"})
}

#[tokio::test]
async fn the_call_runs_after_two_distinct_approvals_and_never_for_the_owner() {
    let app = two_person_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(app.url(), sid, 7, "create_refund", refund(500), BOTH);
    let id = app.wait_for_request().await;
    let t = app.ticket(id).await;
    let revision = airlock_gateway::policy::Policy::parse(TWO_PERSON)
        .unwrap()
        .revision;
    assert_eq!(t.policy_revision.as_deref(), Some(&*revision));
    assert_eq!(t.approvals_needed, 2);
    assert_eq!(t.owner.as_deref(), Some("U0CAROL"));
    assert_eq!(
        t.fingerprint.as_deref(),
        Some(canonical::fingerprint("create_refund", &refund(500), Some(&revision)).as_str()),
        "the fingerprint covers the tool, the arguments and the policy revision"
    );

    assert!(matches!(
        vote(&app, id, "U0CAROL", Decision::Approve).await,
        Decided::SelfApproval(_)
    ));
    assert!(matches!(
        vote(&app, id, APPROVER, Decision::Approve).await,
        Decided::Changed(t) if t.status == TicketStatus::Pending
    ));
    assert!(matches!(
        vote(&app, id, APPROVER, Decision::Approve).await,
        Decided::AlreadyVoted(_)
    ));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        app.upstream.calls().is_empty(),
        "one approval of two runs nothing"
    );
    assert!(!call.is_finished());

    assert!(matches!(
        vote(&app, id, "U0BOB", Decision::Approve).await,
        Decided::Changed(t) if t.status == TicketStatus::Approved
    ));
    let a = call.await.unwrap();
    assert_eq!(
        a.tool_text(),
        json!({"tool": "create_refund", "arguments": refund(500)})
    );
    assert_eq!(app.upstream.calls().len(), 1);
    let t = app.ticket(id).await;
    assert_eq!(t.status, TicketStatus::Executed);
    assert_eq!(t.approved_by_ids, [APPROVER, "U0BOB"]);
}

#[tokio::test]
async fn two_approvers_at_the_same_instant_run_the_call_exactly_once() {
    let app = two_person_app().await;
    for round in 0..50usize {
        let sid = app.initialize(BILLING_TOKEN).await;
        let call = spawn_call(
            app.url(),
            sid,
            1,
            "create_refund",
            refund(200 + round as i64),
            BOTH,
        );
        let id = wait_for_request(&app.redis, round).await;
        let (a, b) = tokio::join!(
            vote(&app, id, APPROVER, Decision::Approve),
            vote(&app, id, "U0BOB", Decision::Approve)
        );
        let statuses = [a, b].map(|d| match d {
            Decided::Changed(t) => t.status,
            other => panic!("round {round}: a vote was lost: {other:?}"),
        });
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == TicketStatus::Approved)
                .count(),
            1,
            "round {round}: {statuses:?}"
        );
        let answer = call.await.unwrap();
        assert!(
            answer.body.get("result").is_some(),
            "round {round}: {}",
            answer.text
        );
        assert_eq!(app.upstream.calls().len(), round + 1, "round {round}");
        assert_eq!(app.ticket(id).await.status, TicketStatus::Executed);
    }
}

#[tokio::test]
async fn one_deny_denies_a_two_person_call() {
    let app = two_person_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(app.url(), sid, 3, "create_refund", refund(300), BOTH);
    let id = app.wait_for_request().await;
    vote(&app, id, APPROVER, Decision::Approve).await;
    vote(&app, id, "U0BOB", Decision::Deny).await;
    let a = call.await.unwrap();
    assert_eq!((a.code(), a.message()), (Some(-32001), "approval denied"));
    assert_eq!(
        a.body.pointer("/error/data/decided_by"),
        Some(&json!("U0BOB"))
    );
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn an_approval_of_another_call_does_not_run_this_one() {
    let app = two_person_app().await;
    let sid = app.initialize(BILLING_TOKEN).await;
    let call = spawn_call(app.url(), sid, 9, "create_refund", refund(150), BOTH);
    let id = app.wait_for_request().await;
    // The approvers are shown (and approve) a different call than the one waiting.
    let other = refund(99_999);
    let fingerprint = canonical::fingerprint("create_refund", &other, None);
    airlock_shared::testing::rewrite_ticket_call(&app.db.pool, id, &other, &fingerprint)
        .await
        .unwrap();
    vote(&app, id, APPROVER, Decision::Approve).await;
    vote(&app, id, "U0BOB", Decision::Approve).await;
    let a = call.await.unwrap();
    assert_eq!(
        (a.code(), a.message()),
        (Some(-32001), "approval does not match this call")
    );
    assert!(app.upstream.calls().is_empty(), "nothing was forwarded");
    let t = ticket::get(&app.db.pool, id).await.unwrap().unwrap();
    assert_eq!(
        t.status,
        TicketStatus::Approved,
        "a call that did not run leaves its ticket unclaimed"
    );
}

#[tokio::test]
async fn an_owner_who_is_the_only_eligible_approver_stops_the_start() {
    let opts = Opts {
        policy: "version: 1\ndefault: deny\nrules:\n  - { name: solo, tools: [a], action: approve, approvers: [U0CAROL] }\n".into(),
        billing_owner: Some("U0CAROL".into()),
        ..Opts::default()
    };
    let db = airlock_test_support::fresh_db().await;
    let redis = airlock_test_support::fresh_redis().await;
    let upstream = airlock_test_support::upstream::FakeUpstream::spawn(opts.mode).await;
    let (dir, policy, keys) = write_files(&opts);
    let config = config_for(&db, &redis, &upstream, &opts, policy, keys);
    let err = match airlock_gateway::build(&config).await {
        Ok(_) => panic!("a gateway whose only approver is the agent's owner started"),
        Err(e) => e.to_string(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        err.contains("U0CAROL") && err.contains("billing-bot"),
        "{err}"
    );
}
