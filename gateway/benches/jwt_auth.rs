//! Authentication on the allow path: a JWT access token (RS256, ES256, EdDSA; the issuer's key
//! cached after the first call) beside a static agent token, through the same gateway, at a
//! fixed rate (open loop). Prints p50/p99 of each and what the JWT adds over the static token.
//! The issuer is a small in-process server (RFC 8414 metadata + JWKS) with the api tests' keys.
//! `BENCH_SECS` (default 10) and `BENCH_RATE` (default 1,000 req/s) as in `allow_path`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use airlock_test_support::upstream::Mode;
use axum::Json;
use axum::routing::get;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const POLICY: &str = r#"
version: 1
default: deny
rules:
  - { name: reads, tools: ["list_*"], action: allow, read_only: true }
"#;
const AUDIENCE: &str = "https://gw.bench/mcp";
const KEYS: &str = include_str!("../tests/api/oauth_keys/keys.json");

/// Serves metadata and a JWKS of every test key on 127.0.0.1; returns the issuer URL.
async fn issuer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let keys: Value = serde_json::from_str(KEYS).unwrap();
    let jwks = json!({"keys": keys.as_object().unwrap().values().map(|k| k["jwk"].clone()).collect::<Vec<_>>()});
    let meta = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { Json(meta) }),
        )
        .route("/jwks", get(move || async move { Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn token(issuer: &str, kid: &str) -> String {
    let keys: Value = serde_json::from_str(KEYS).unwrap();
    let pem = keys[kid]["pem"].as_str().unwrap().as_bytes();
    let (alg, key) = match keys[kid]["alg"].as_str().unwrap() {
        "RS256" => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem).unwrap()),
        "ES256" => (Algorithm::ES256, EncodingKey::from_ec_pem(pem).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(pem).unwrap()),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": issuer, "sub": format!("bench-{kid}"), "aud": AUDIENCE, "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn one(client: &reqwest::Client, url: &str, token: &str, sid: &str, i: u64) -> Duration {
    let started = Instant::now();
    let resp = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", sid)
        .body(call_body(i, "list_charges", json!({})))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let body = resp.bytes().await.unwrap();
    assert!(body.windows(8).any(|w| w == b"\"result\""));
    started.elapsed()
}

async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    sids: &[String],
    secs: u64,
) -> Summary {
    let rate = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|r: &u64| *r > 0)
        .unwrap_or(1000);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut handles = Vec::new();
    for i in 0..rate * secs {
        tick.tick().await;
        let (c, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        let sid = sids[i as usize % sids.len()].clone();
        handles.push(tokio::spawn(
            async move { one(&c, &url, &token, &sid, i).await },
        ));
    }
    let mut lat = Vec::with_capacity(handles.len());
    for h in handles {
        lat.push(h.await.unwrap());
    }
    summarize(lat)
}

fn main() {
    runtime().block_on(async {
        let issuer = issuer().await;
        let env = [
            ("OAUTH_ISSUERS", issuer.as_str()),
            ("OAUTH_AUDIENCE", AUDIENCE),
        ];
        let stack = Stack::start(Mode::Json, POLICY, &env).await;
        let url = stack.gw.url();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let mut runs: Vec<(String, String)> = vec![("static token".into(), TOKEN.into())];
        for (name, kid) in [
            ("JWT RS256", "rsa-1"),
            ("JWT ES256", "ec-1"),
            ("JWT EdDSA", "ed-1"),
        ] {
            runs.push((name.into(), token(&issuer, kid)));
        }
        let secs: u64 = std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let mut sessions = Vec::new();
        for (_, tok) in &runs {
            let mut sids = Vec::new();
            for _ in 0..32 {
                sids.push(initialize(&client, &url, Some(tok)).await);
            }
            open_loop(&client, &url, tok, &sids, 1).await; // warm-up; the key is cached after it
            sessions.push(sids);
        }
        println!(
            "authentication on the allow path (read-only rule, sessions), {secs} s each, open loop"
        );
        println!(
            "{:<14} {:>10} {:>10} {:>10} {:>22}",
            "token", "p50", "p99", "max", "added p50 / p99"
        );
        let mut base: Option<Summary> = None;
        for ((name, tok), sids) in runs.iter().zip(&sessions) {
            let s = open_loop(&client, &url, tok, sids, secs).await;
            let added = base.as_ref().map_or("-".to_owned(), |b| {
                format!(
                    "{} / {}",
                    ms(s.p50.saturating_sub(b.p50)),
                    ms(s.p99.saturating_sub(b.p99))
                )
            });
            println!(
                "{name:<14} {:>10} {:>10} {:>10} {added:>22}",
                ms(s.p50),
                ms(s.p99),
                ms(s.max)
            );
            if base.is_none() {
                base = Some(s);
            }
        }
        drop(stack);
        verify_cost(&issuer).await;
    });
}

/// The check itself, in process and without the HTTP hop's noise: the mean time of one
/// `Verifier::verify` per algorithm (the key cached), beside the static token's hash check.
async fn verify_cost(issuer: &str) {
    use airlock_gateway::oauth::{OAuthConfig, Verifier};
    const N: u32 = 5_000;
    let config = OAuthConfig {
        issuers: vec![issuer.to_owned()],
        audience: AUDIENCE.to_owned(),
        principal_claim: "sub".into(),
        leeway: Duration::from_secs(30),
        required_scopes: Vec::new(),
        scopes_supported: Vec::new(),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        jwks_refresh: Duration::from_secs(300),
        jwks_min_interval: Duration::from_secs(10),
    };
    let fetches = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_fetches", "bench"),
        &["issuer", "outcome"],
    )
    .unwrap();
    let verifier = Verifier::new(&config, &reqwest::Client::new(), &fetches);
    println!("one token check in process, mean of {N}:");
    for (name, kid) in [("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")] {
        let tok = token(issuer, kid);
        verifier.verify(&tok).await.unwrap(); // fetches the keys once
        let started = Instant::now();
        for _ in 0..N {
            std::hint::black_box(verifier.verify(&tok).await.unwrap());
        }
        println!(
            "  JWT {name:<6} {:>8.1} µs",
            started.elapsed().as_secs_f64() * 1e6 / f64::from(N)
        );
    }
    let keys = airlock_gateway::auth::AgentKeys::parse(&format!(
        "agents:\n  - name: bench\n    token_sha256: {}\n",
        airlock_gateway::auth::token_sha256(TOKEN)
    ))
    .unwrap();
    let started = Instant::now();
    for _ in 0..N {
        std::hint::black_box(keys.authenticate(TOKEN));
    }
    println!(
        "  static       {:>8.1} µs",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(N)
    );
}
