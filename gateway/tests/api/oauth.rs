//! OAuth access tokens for agents: local JWT checks against a fake issuer's JWKS, the
//! challenges, the protected resource metadata, and identity in policy, tickets and audit.

use std::time::Duration;

use airlock_shared::audit;
use serde_json::{Value, json};

use super::helpers::{BILLING_TOKEN, Opts, TestApp, eventually, spawn_with};
use super::oauth_issuer::{
    AUDIENCE, FakeIssuer, METADATA_URL, now, sign, sign_as, sign_hs256_with_public_key, tampered,
    unsigned,
};

async fn gateway(issuer: &FakeIssuer, edit: impl FnOnce(&mut Opts)) -> TestApp {
    let mut opts = Opts {
        oauth: Some(issuer.config()),
        ..Opts::default()
    };
    edit(&mut opts);
    spawn_with(opts).await
}

/// An `initialize` with `token`: the status and the `WWW-Authenticate` header.
async fn knock(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let resp = app
        .post(token, None, body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, challenge)
}

/// The (principal, issuer) of the session's audit rows, once `n` are written.
async fn audited(app: &TestApp, sid: &str, n: usize) -> Vec<(String, Option<String>)> {
    eventually(Duration::from_secs(5), || async {
        let rows = audit::identities_for_session(&app.db.pool, sid)
            .await
            .unwrap();
        (rows.len() >= n).then_some(rows)
    })
    .await
    .expect("audit rows written")
}

#[tokio::test]
async fn tokens_of_each_algorithm_are_accepted_and_name_the_principal() {
    let issuer = FakeIssuer::spawn(&["rsa-1", "ec-1", "ed-1"]).await;
    let app = gateway(&issuer, |_| {}).await;
    for (kid, sub) in [
        ("rsa-1", "agent-rsa"),
        ("ec-1", "agent-ec"),
        ("ed-1", "agent-ed"),
    ] {
        let token = sign(kid, &issuer.claims(sub));
        let sid = app.initialize(&token).await;
        let a = app.call(&token, &sid, 1, "list_charges", json!({})).await;
        assert_eq!(a.status, 200, "{kid}: {}", a.text);
        assert!(a.body.get("result").is_some(), "{kid}: {}", a.text);
        let rows = audited(&app, &sid, 1).await;
        assert_eq!(
            rows,
            vec![(sub.to_owned(), Some(issuer.url.clone()))],
            "{kid}"
        );
    }
    // Static tokens keep working beside access tokens, and carry no issuer.
    let sid = app.initialize(BILLING_TOKEN).await;
    let a = app
        .call(BILLING_TOKEN, &sid, 1, "list_charges", json!({}))
        .await;
    assert!(a.body.get("result").is_some(), "{}", a.text);
    assert_eq!(
        audited(&app, &sid, 1).await,
        vec![("billing-bot".to_owned(), None)]
    );
}

#[tokio::test]
async fn the_principal_comes_from_the_configured_claim() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |o| {
        o.oauth.as_mut().unwrap().principal_claim = "client_id".into();
    })
    .await;
    let mut claims = issuer.claims("some-user");
    claims["client_id"] = json!("ci-runner");
    let token = sign("rsa-1", &claims);
    let sid = app.initialize(&token).await;
    app.call(&token, &sid, 1, "list_charges", json!({})).await;
    assert_eq!(audited(&app, &sid, 1).await[0].0, "ci-runner");
    // Without that claim the token names nobody: refused.
    let nobody = sign("rsa-1", &issuer.claims("some-user"));
    let (status, challenge) = knock(&app, Some(&nobody)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_challenge_that_says_why() {
    let issuer = FakeIssuer::spawn(&["rsa-1", "ec-1"]).await;
    let app = gateway(&issuer, |_| {}).await;
    let good = issuer.claims("agent");
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            sign("rsa-1", &with("exp", json!(t - 60))),
            "expired",
        ),
        (
            "not yet valid",
            sign("rsa-1", &with("nbf", json!(t + 120))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            sign("rsa-1", &with("iss", json!("https://evil.example"))),
            "issuer is not trusted",
        ),
        (
            "wrong audience",
            sign("rsa-1", &with("aud", json!("https://other.example/mcp"))),
            "another resource",
        ),
        (
            "another resource here",
            sign("rsa-1", &with("aud", json!("https://gw.test/admin"))),
            "another resource",
        ),
        (
            "no audience",
            sign("rsa-1", &{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("aud");
                c
            }),
            "required claim",
        ),
        (
            "unknown kid",
            sign_as("rsa-1", "who-knows", &good),
            "no key",
        ),
        (
            "rsa header, ec key id",
            sign_as("rsa-1", "ec-1", &good),
            "no key",
        ),
        (
            "signed by an unpublished key",
            sign_as("rsa-2", "rsa-1", &good),
            "signature",
        ),
        (
            "tampered",
            tampered(&sign("rsa-1", &good), &with("sub", json!("admin"))),
            "signature",
        ),
        ("alg none", unsigned("rsa-1", &good), "well-formed"),
        (
            "HS256 with the public key",
            sign_hs256_with_public_key("rsa-1", &good),
            "algorithm",
        ),
        ("garbage", "not-a-jwt".to_owned(), "well-formed"),
    ];
    // A good token first, so every failure below is the token's, not a key fetch's.
    let (status, _) = knock(&app, Some(&sign("rsa-1", &good))).await;
    assert_eq!(status, 200);
    for (name, token, why) in cases {
        let (status, challenge) = knock(&app, Some(&token)).await;
        assert_eq!(status, 401, "{name}");
        assert!(challenge.starts_with("Bearer "), "{name}: {challenge}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(challenge.contains(why), "{name}: {challenge}");
        assert!(
            challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")),
            "{name}: {challenge}"
        );
    }
    // A valid token may not pass for a static agent (sessions and tasks are keyed by name).
    let (status, challenge) =
        knock(&app, Some(&sign("rsa-1", &issuer.claims("billing-bot")))).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("name of a static agent"), "{challenge}");
    let metrics = app.metrics().await;
    for outcome in [
        "expired",
        "not_yet_valid",
        "unknown_issuer",
        "audience",
        "unknown_key",
        "signature",
        "malformed",
        "algorithm",
        "reserved_principal",
    ] {
        assert!(
            metrics.contains(&format!(
                "airlock_oauth_tokens_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted: {metrics}"
        );
    }
    assert!(
        metrics.contains("airlock_oauth_tokens_total{outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    // No token at all: where to get one, and no error (RFC 6750 §3.1).
    let (status, challenge) = knock(&app, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{METADATA_URL}\"")
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |_| {}).await;
    let (status, _) = knock(&app, Some(&sign("rsa-1", &issuer.claims("a")))).await;
    assert_eq!(status, 200);
    let before = issuer.jwks_fetches();
    assert!(before >= 1);
    let flood = (0..50).map(|i| {
        let token = sign_as("rsa-1", &format!("made-up-{i}"), &issuer.claims("a"));
        let app = &app;
        async move { knock(app, Some(&token)).await.0 }
    });
    let statuses = futures::future::join_all(flood).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let extra = issuer.jwks_fetches() - before;
    assert!(extra <= 1, "50 unknown kids caused {extra} JWKS fetches");
}

#[tokio::test]
async fn a_key_rotation_at_the_issuer_is_followed() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |o| {
        o.oauth.as_mut().unwrap().jwks_refresh = Duration::from_millis(300);
    })
    .await;
    let old = sign("rsa-1", &issuer.claims("agent"));
    assert_eq!(knock(&app, Some(&old)).await.0, 200);
    // The issuer adds a key and signs new tokens with it: they work at once.
    issuer.publish(&["rsa-1", "rsa-2"]);
    let new = sign("rsa-2", &issuer.claims("agent"));
    assert_eq!(knock(&app, Some(&new)).await.0, 200);
    assert_eq!(
        knock(&app, Some(&old)).await.0,
        200,
        "old tokens keep working"
    );
    // Once the issuer stops publishing the old key, the next scheduled refresh drops it.
    issuer.publish(&["rsa-2"]);
    let dropped = eventually(Duration::from_secs(5), || async {
        (knock(&app, Some(&old)).await.0 == 401).then_some(())
    })
    .await;
    assert!(dropped.is_some(), "the withdrawn key is still accepted");
    assert_eq!(knock(&app, Some(&new)).await.0, 200);
}

#[tokio::test]
async fn a_token_without_a_required_scope_gets_403() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |o| {
        o.oauth.as_mut().unwrap().required_scopes = vec!["mcp:tools".into()];
    })
    .await;
    let mut claims = issuer.claims("agent");
    claims["scope"] = json!("profile");
    let (status, challenge) = knock(&app, Some(&sign("rsa-1", &claims))).await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:tools\""), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{METADATA_URL}\"")),
        "{challenge}"
    );
    claims["scope"] = json!("profile mcp:tools");
    assert_eq!(knock(&app, Some(&sign("rsa-1", &claims))).await.0, 200);
}

#[tokio::test]
async fn the_protected_resource_metadata_is_served_without_a_token() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |_| {}).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let resp = app
            .http
            .get(format!("http://{}{path}", app.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["resource"], AUDIENCE);
        assert_eq!(doc["authorization_servers"], json!([issuer.url]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp"]));
    }
}

#[tokio::test]
async fn the_upstream_never_sees_the_agents_token() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |_| {}).await;
    let token = sign("rsa-1", &issuer.claims("agent"));
    for t in [token.as_str(), BILLING_TOKEN] {
        let sid = app.initialize(t).await;
        let a = app.call(t, &sid, 1, "list_charges", json!({})).await;
        assert!(a.body.get("result").is_some(), "{}", a.text);
    }
    let seen = app.upstream.requests();
    assert!(seen.len() >= 4, "the upstream got {} requests", seen.len());
    for (method, headers) in seen {
        assert!(
            headers.get("authorization").is_none(),
            "{method} carried Authorization"
        );
        let leaked = headers.values().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.contains(&token) || v.contains(BILLING_TOKEN))
        });
        assert!(!leaked, "{method} carried a token in some header");
    }
}

const IDENTITY_POLICY: &str = r#"
version: 1
default: deny
rules:
  - name: ci may delete
    tools: ["delete_*"]
    principals: ["ci-*"]
    action: allow
  - name: payments refunds need a person
    tools: ["create_refund"]
    when:
      - { claim: team, equals: payments }
    action: approve
    approvers: [U0123ABCD]
  - name: refund writers
    tools: ["create_refund"]
    scopes: ["refunds:write"]
    action: allow
"#;

#[tokio::test]
async fn rules_match_principals_claims_and_scopes() {
    let issuer = FakeIssuer::spawn(&["rsa-1"]).await;
    let app = gateway(&issuer, |o| o.policy = IDENTITY_POLICY.to_owned()).await;
    let token = |sub: &str, extra: Value| {
        let mut c = issuer.claims(sub);
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        sign("rsa-1", &c)
    };
    let verdict = |a: &super::helpers::Answer| match a.body.get("result") {
        Some(_) => "allowed".to_owned(),
        None => a.message().to_owned(),
    };
    let delete = json!({"id": "cus_1"});
    let refund = json!({"amount": 5});

    // principals: a glob on the principal.
    let ci = token("ci-nightly", json!({}));
    let sid = app.initialize(&ci).await;
    assert_eq!(
        verdict(
            &app.call(&ci, &sid, 1, "delete_customer", delete.clone())
                .await
        ),
        "allowed"
    );
    let dev = token("dev-laptop", json!({}));
    let sid = app.initialize(&dev).await;
    assert_eq!(
        verdict(&app.call(&dev, &sid, 1, "delete_customer", delete).await),
        "denied by policy"
    );

    // scopes: all must be granted; a static agent has none.
    let writer = token("writer", json!({"scope": "refunds:write"}));
    let sid = app.initialize(&writer).await;
    assert_eq!(
        verdict(
            &app.call(&writer, &sid, 1, "create_refund", refund.clone())
                .await
        ),
        "allowed"
    );
    let reader = token("reader", json!({"scope": "refunds:read"}));
    let sid = app.initialize(&reader).await;
    assert_eq!(
        verdict(
            &app.call(&reader, &sid, 1, "create_refund", refund.clone())
                .await
        ),
        "denied by policy"
    );
    let sid = app.initialize(BILLING_TOKEN).await;
    assert_eq!(
        verdict(
            &app.call(BILLING_TOKEN, &sid, 1, "create_refund", refund.clone())
                .await
        ),
        "denied by policy"
    );

    // claims: the payments team's refund is held, and the ticket shows who and why.
    let payments = token(
        "pay-bot",
        json!({"team": "payments", "scope": "refunds:write", "email": "x@y"}),
    );
    let sid = app.initialize(&payments).await;
    let call = {
        let (app_url, payments, sid) = (app.url(), payments.clone(), sid.clone());
        tokio::spawn(async move {
            let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "create_refund", "arguments": {"amount": 5}}});
            reqwest::Client::new()
                .post(app_url)
                .bearer_auth(payments)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-session-id", sid)
                .body(body.to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    let ticket_id = app.wait_for_request().await;
    let ticket = app.ticket(ticket_id).await;
    assert_eq!(ticket.principal, "pay-bot");
    assert_eq!(ticket.rule, "payments refunds need a person");
    assert_eq!(
        ticket.principal_issuer.as_deref(),
        Some(issuer.url.as_str())
    );
    // Only the claims the rule looked at: not the email.
    assert_eq!(ticket.principal_claims, Some(json!({"team": "payments"})));
    app.approve_next(0).await;
    let answer = call.await.unwrap();
    assert!(answer.contains("\"result\""), "{answer}");
    let rows = audited(&app, &sid, 1).await;
    assert_eq!(rows, vec![("pay-bot".to_owned(), Some(issuer.url.clone()))]);
}
