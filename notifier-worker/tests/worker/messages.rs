//! What the approver sees: blocks, buttons and limits, checked by our fake's Slack rules and by
//! the official slack-sdk Block Kit models.

use airlock_shared::buttons::{APPROVE_ACTION_ID, DENY_ACTION_ID};
use airlock_shared::canonical::short_fingerprint;
use airlock_shared::ticket::{self, Decided};
use airlock_shared::{Decision, Refusal, TicketStatus};
use airlock_slack_fake::fake::validate_blocks;
use notifier_worker::message;
use serde_json::{Value, json};

use crate::support::{setup, slack_sdk_validate};

fn block<'a>(blocks: &'a Value, kind: &str) -> Vec<&'a Value> {
    blocks
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == kind)
        .collect()
}

fn all_text(blocks: &Value) -> String {
    blocks.to_string()
}

#[tokio::test]
async fn the_request_has_every_detail_and_two_buttons_with_the_ticket_id() {
    let app = setup().await;
    let t = app
        .ticket(|n| {
            n.arguments =
                json!({"invoice": "INV-42", "note": "<!channel> & <https://evil.example|click>"});
            n.principal = "agent-billing".into();
            n.policy_revision = Some("0a1b2c3d4e5f".into());
        })
        .await;
    let m = message::approval_request(&t);
    assert!(
        validate_blocks(&m.blocks).is_empty(),
        "{:?}",
        validate_blocks(&m.blocks)
    );
    slack_sdk_validate(&m.blocks);

    let text = all_text(&m.blocks);
    for needle in [
        "agent-billing",
        "payments.refund",
        &t.session_id,
        "refunds-need-approval",
        "Refunds over $500 need a human",
        "INV-42",
        &format!(
            "<!date^{}^{{date_short_pretty}} {{time}}|",
            t.expires_at.timestamp()
        ),
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    // Agent-controlled text cannot mention the channel or inject a link.
    assert!(!text.contains("<!channel>"));
    assert!(!text.contains("<https://evil"));
    assert!(text.contains("&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"));
    assert!(m.text.contains("payments.refund") && m.text.contains("agent-billing"));

    let actions = block(&m.blocks, "actions");
    assert_eq!(actions.len(), 1);
    let buttons = actions[0]["elements"].as_array().unwrap();
    assert_eq!(buttons.len(), 2);
    let (approve, deny) = (&buttons[0], &buttons[1]);
    assert_eq!(approve["action_id"], APPROVE_ACTION_ID);
    assert_eq!(approve["action_id"], "airlock_approve");
    assert_eq!(approve["style"], "primary");
    // The ticket id, then the short fingerprint of the call the message shows.
    let fp = short_fingerprint(t.fingerprint.as_deref().unwrap()).to_owned();
    let value = format!("{}:{fp}", t.id);
    assert_eq!(approve["value"], value);
    assert!(text.contains(&format!("Call `{fp}`")), "{text}");
    // The policy revision that held the call, for calls held across a live reload.
    assert!(text.contains("Policy `0a1b2c3d4e5f`"), "{text}");
    assert!(approve.get("confirm").is_none());
    assert_eq!(deny["action_id"], DENY_ACTION_ID);
    assert_eq!(deny["action_id"], "airlock_deny");
    assert_eq!(deny["style"], "danger");
    assert_eq!(deny["value"], value);
    assert_eq!(deny["confirm"]["confirm"]["text"], "Deny");
    assert_eq!(deny["confirm"]["style"], "danger");
    // The value is the hyphenated ticket id and 16 hex digits, the form the webhook parses.
    assert_eq!(approve["value"].as_str().unwrap().len(), 36 + 1 + 16);
}

#[tokio::test]
async fn unicode_and_oversized_arguments_are_cut_on_a_character_and_marked() {
    let app = setup().await;
    let cases = [
        json!({"text": "Grüße aus Köln — 東京 — مرحبا — 🚀🧑‍🚀"}),
        json!({"blob": "😀".repeat(4000)}),
        json!({"blob": "é".repeat(5000), "more": "<&>".repeat(3000)}),
        json!({"sql": "```; DROP TABLE x; ```".repeat(400)}),
        json!({"nested": (0..500).map(|i| json!({"k": i, "v": "ä".repeat(i % 7)})).collect::<Vec<_>>()}),
    ];
    for (i, args) in cases.into_iter().enumerate() {
        let t = app.ticket(|n| n.arguments = args.clone()).await;
        let m = message::approval_request(&t);
        let problems = validate_blocks(&m.blocks);
        assert!(problems.is_empty(), "case {i}: {problems:?}");
        slack_sdk_validate(&m.blocks);
        let section = block(&m.blocks, "section")
            .into_iter()
            .find(|b| {
                b["text"]["text"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("*Arguments:*"))
            })
            .unwrap();
        let shown = section["text"]["text"].as_str().unwrap();
        assert!(shown.encode_utf16().count() <= 3000, "case {i}");
        let big = serde_json::to_string_pretty(&args).unwrap().chars().count() > 2900;
        assert_eq!(shown.contains("truncated"), big, "case {i}: {shown:.200}");
        if i == 0 {
            assert!(shown.contains("東京") && shown.contains("🧑‍🚀"));
        }
    }
}

#[tokio::test]
async fn closed_messages_show_the_outcome_and_have_no_buttons() {
    let app = setup().await;
    let approved = app.ticket(|_| {}).await;
    let Decided::Changed(approved) = ticket::decide(
        &app.db.pool,
        approved.id,
        Decision::Approve,
        "U0ANA",
        "ana",
        None,
    )
    .await
    .unwrap() else {
        panic!("decide")
    };
    let denied = app.ticket(|_| {}).await;
    let Decided::Changed(denied) = ticket::decide(
        &app.db.pool,
        denied.id,
        Decision::Deny,
        "U0BOB",
        "bob <b>",
        None,
    )
    .await
    .unwrap() else {
        panic!("decide")
    };
    let expired = app.ticket(|_| {}).await;
    let expired = ticket::close_pending(&app.db.pool, expired.id, TicketStatus::Expired)
        .await
        .unwrap()
        .unwrap();
    let cancelled = app.ticket(|_| {}).await;
    let cancelled = ticket::close_pending(&app.db.pool, cancelled.id, TicketStatus::Cancelled)
        .await
        .unwrap()
        .unwrap();
    for (t, needles) in [
        (&approved, vec!["Approved", "<@U0ANA>", "ana", "<!date^"]),
        (&denied, vec!["Denied", "<@U0BOB>", "bob &lt;b&gt;"]),
        (&expired, vec!["Expired"]),
        (&cancelled, vec!["Cancelled"]),
    ] {
        let m = message::closed(t);
        assert!(
            block(&m.blocks, "actions").is_empty(),
            "{:?} still has buttons",
            t.status
        );
        assert!(validate_blocks(&m.blocks).is_empty());
        slack_sdk_validate(&m.blocks);
        let text = all_text(&m.blocks);
        for n in needles {
            assert!(text.contains(n), "{n} missing for {:?}: {text}", t.status);
        }
        assert!(!text.contains(APPROVE_ACTION_ID));
        // The request for a ticket that closed before it was posted shows the outcome too.
        assert_eq!(message::approval_request(t), m);
    }
}

#[tokio::test]
async fn refusals_say_why() {
    let app = setup().await;
    let t = app.ticket(|_| {}).await;
    let cases = [
        (Refusal::NotAnApprover, "not an approver"),
        (
            Refusal::AlreadyClosed {
                status: TicketStatus::Approved,
                decided_by: Some("ana".into()),
            },
            "already approved by ana",
        ),
        (
            Refusal::AlreadyClosed {
                status: TicketStatus::Denied,
                decided_by: Some("bob".into()),
            },
            "already denied by bob",
        ),
        (
            Refusal::AlreadyClosed {
                status: TicketStatus::Expired,
                decided_by: None,
            },
            "expired",
        ),
        (Refusal::UnknownTicket, "not known"),
    ];
    for (r, needle) in cases {
        let m = message::refusal(&r, Some(&t));
        assert!(m.text.contains(needle), "{needle}: {}", m.text);
        assert!(validate_blocks(&m.blocks).is_empty());
        slack_sdk_validate(&m.blocks);
    }
}

#[tokio::test]
async fn a_two_person_request_shows_its_progress_then_every_approver() {
    let app = setup().await;
    let t = app
        .ticket(|n| {
            n.approvals = 2;
            n.approvers = vec!["U0ANA".into(), "U0BOB".into()];
        })
        .await;
    let m = message::approval_request(&t);
    assert!(all_text(&m.blocks).contains("0 of 2 approvals"));
    let vote = |who: &'static str, name: &'static str| {
        let pool = app.db.pool.clone();
        async move {
            let Decided::Changed(t) =
                ticket::decide(&pool, t.id, Decision::Approve, who, name, None)
                    .await
                    .unwrap()
            else {
                panic!("vote")
            };
            t
        }
    };
    let one = vote("U0ANA", "ana").await;
    assert_eq!(one.status, TicketStatus::Pending);
    let m = message::approval_request(&one);
    assert!(
        validate_blocks(&m.blocks).is_empty(),
        "{:?}",
        validate_blocks(&m.blocks)
    );
    slack_sdk_validate(&m.blocks);
    let progress = block(&m.blocks, "section")
        .into_iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|s| s.contains("approvals"))
        .unwrap()
        .to_owned();
    assert_eq!(progress, "*1 of 2 approvals: <@U0ANA> (ana)*");
    assert_eq!(
        block(&m.blocks, "actions").len(),
        1,
        "still open for the second"
    );
    assert!(m.text.contains("1 of 2 approvals"));

    let two = vote("U0BOB", "bob").await;
    assert_eq!(two.status, TicketStatus::Approved);
    let m = message::closed(&two);
    assert!(block(&m.blocks, "actions").is_empty());
    slack_sdk_validate(&m.blocks);
    let text = all_text(&m.blocks);
    assert!(
        text.contains("by <@U0ANA> (ana) and <@U0BOB> (bob)"),
        "{text}"
    );

    let denied = app.ticket(|n| n.approvals = 2).await;
    ticket::decide(
        &app.db.pool,
        denied.id,
        Decision::Approve,
        "U0ANA",
        "ana",
        None,
    )
    .await
    .unwrap();
    let Decided::Changed(denied) = ticket::decide(
        &app.db.pool,
        denied.id,
        Decision::Deny,
        "U0BOB",
        "bob",
        None,
    )
    .await
    .unwrap() else {
        panic!("deny")
    };
    let text = all_text(&message::closed(&denied).blocks);
    assert!(text.contains("Denied"), "{text}");
    assert!(text.contains("one deny is enough"), "{text}");
}

#[tokio::test]
async fn quorum_refusals_say_why() {
    let app = setup().await;
    let t = app.ticket(|n| n.approvals = 2).await;
    for (r, needle) in [
        (Refusal::SelfApproval, "You own the agent"),
        (Refusal::AlreadyVoted, "already counted"),
        (Refusal::WrongCall, "not the call"),
    ] {
        let m = message::refusal(&r, Some(&t));
        assert!(m.text.contains(needle), "{needle}: {}", m.text);
        slack_sdk_validate(&m.blocks);
    }
}

#[tokio::test]
async fn an_access_token_caller_shows_its_issuer_and_the_claims_the_rule_named() {
    let app = setup().await;
    let t = app
        .ticket(|n| {
            n.principal = "ci-runner".into();
            n.principal_issuer = Some("https://login.example".into());
            n.principal_claims =
                Some(json!({"team": "<!here> payments", "scope": "refunds:write"}));
        })
        .await;
    let m = message::approval_request(&t);
    assert!(
        validate_blocks(&m.blocks).is_empty(),
        "{:?}",
        validate_blocks(&m.blocks)
    );
    slack_sdk_validate(&m.blocks);
    let text = all_text(&m.blocks);
    for needle in [
        "ci-runner",
        "*Token issuer:*\\nhttps://login.example",
        "*team:*\\n`&lt;!here&gt; payments`",
        "*scope:*\\n`refunds:write`",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert!(!text.contains("<!here>"));
    // A static-token agent's message has neither.
    let plain = message::approval_request(&app.ticket(|_| {}).await);
    assert!(!all_text(&plain.blocks).contains("Token issuer"));
}
