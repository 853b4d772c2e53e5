//! spawn_app() and friends: a webhook on port 0 with its own database and key prefix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_shared::buttons::APPROVE_ACTION_ID;
use airlock_shared::config::Env;
use airlock_shared::ticket::{self, NewTicket, Opened, Ticket};
use airlock_shared::{DecisionSignal, NotifyJob, TicketId};
use airlock_test_support::{TestDb, TestRedis, fresh_db, fresh_redis};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use webhook_fn::config::Config;
use webhook_fn::{AppState, signature};

/// The signing secret every spawned app uses.
pub const SECRET: &str = "test-signing-secret-0123456789ab";

/// A running webhook.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub db: TestDb,
    pub redis: TestRedis,
    pub http: reqwest::Client,
    pub state: AppState,
    _shutdown: oneshot::Sender<()>,
}

/// The environment a spawned app starts from (tests then adjust the typed config).
pub fn base_env(db: &TestDb, redis: &TestRedis) -> HashMap<String, String> {
    HashMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        ("REDIS_URL".to_owned(), redis.url.clone()),
        ("SLACK_SIGNING_SECRET".to_owned(), SECRET.to_owned()),
        (
            "REDIS_KEY_PREFIX".to_owned(),
            redis.keys.prefix().to_owned(),
        ),
        ("LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ])
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// Spawns an app after `adjust` has changed its config.
pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_on(fresh_db().await, adjust).await
}

/// Spawns an app on the given database after `adjust` has changed its config.
pub async fn spawn_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let redis = fresh_redis().await;
    let mut config = Config::from_env(Env::from_map(base_env(&db, &redis))).unwrap();
    adjust(&mut config);
    let state = webhook_fn::build(&config).await.unwrap();
    let router = webhook_fn::app(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let edge = config.edge.clone();
    tokio::spawn(async move {
        webhook_fn::serve(listener, router, &edge, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        addr,
        base: format!("http://{addr}"),
        db,
        redis,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        state,
        _shutdown: tx,
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A `block_actions` payload like the one Slack sends for a click on our message.
pub fn click_payload(
    action_id: &str,
    value: &str,
    user_id: &str,
    user_name: &str,
) -> serde_json::Value {
    serde_json::json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T0001"},
        "api_app_id": "A0001",
        "token": "verification-token-unused",
        "container": {"type": "message", "message_ts": "1764400000.000100", "channel_id": "C0APPROVE", "is_ephemeral": false},
        "trigger_id": "1.2.3",
        "team": {"id": "T0001", "domain": "acme"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": "C0APPROVE", "name": "approvals"},
        "message": {
            "type": "message", "subtype": "bot_message", "ts": "1764400000.000100",
            "text": "Approval needed: transfer 100% + fees (50%zz) to ünïcødé ✓",
            "blocks": []
        },
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0001/1/abc",
        "actions": [{
            "action_id": action_id, "block_id": "airlock", "value": value,
            "type": "button", "action_ts": "1764400001.000200",
            "text": {"type": "plain_text", "text": "Approve", "emoji": true}
        }]
    })
}

/// Form-encodes a payload as Slack does.
pub fn form(payload: &serde_json::Value) -> Vec<u8> {
    form_body(&payload.to_string())
}

pub fn form_body(payload: &str) -> Vec<u8> {
    let mut s = url_encode(payload);
    s.insert_str(0, "payload=");
    s.into_bytes()
}

/// Percent-encodes everything but unreserved characters (Slack's encoder does the same).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn approve_body(ticket: TicketId, user: &str) -> Vec<u8> {
    form(&click_payload(
        APPROVE_ACTION_ID,
        &ticket.to_string(),
        user,
        user,
    ))
}

impl TestApp {
    /// Posts `body` signed now with the app's secret.
    pub async fn post_signed(&self, body: Vec<u8>) -> reqwest::Response {
        let ts = unix_now().to_string();
        let sig = signature::sign(SECRET, &ts, &body);
        self.post_raw(body, Some(&ts), Some(&sig)).await
    }

    /// Posts with exactly the given headers.
    pub async fn post_raw(
        &self,
        body: Vec<u8>,
        ts: Option<&str>,
        sig: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/slack/actions", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(ts) = ts {
            req = req.header("X-Slack-Request-Timestamp", ts);
        }
        if let Some(sig) = sig {
            req = req.header("X-Slack-Signature", sig);
        }
        req.send().await.unwrap()
    }

    /// Opens a pending ticket.
    pub async fn open_ticket(&self, approvers: &[&str], timeout: Duration) -> TicketId {
        self.open_with(approvers, timeout, |_| {}).await
    }

    /// Opens a pending ticket after `adjust` has changed it.
    pub async fn open_with(
        &self,
        approvers: &[&str],
        timeout: Duration,
        adjust: impl FnOnce(&mut NewTicket),
    ) -> TicketId {
        let mut new = new_ticket(approvers, timeout);
        adjust(&mut new);
        open_on(&self.db, &new).await
    }

    pub async fn ticket(&self, id: TicketId) -> Ticket {
        ticket::get(&self.db.pool, id).await.unwrap().unwrap()
    }

    /// Every job on this test's notification stream, in order.
    pub async fn jobs(&self) -> Vec<NotifyJob> {
        airlock_test_support::streams::notify_jobs(&self.redis).await
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Collects decision signals published on this test's channel.
pub struct Signals {
    rx: mpsc::UnboundedReceiver<DecisionSignal>,
}

impl Signals {
    /// Subscribes (and waits until the subscription is live).
    pub async fn subscribe(redis: &TestRedis) -> Self {
        let mut pubsub = redis.client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe(redis.keys.decisions_channel())
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let payload: Vec<u8> = msg.get_payload().unwrap();
                let signal = airlock_shared::signal::parse(&payload).expect("signal parses");
                if tx.send(signal).is_err() {
                    break;
                }
            }
        });
        Self { rx }
    }

    /// Everything received within `quiet` of the last message.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<DecisionSignal> {
        let mut out = Vec::new();
        while let Ok(Some(s)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            out.push(s);
        }
        out
    }
}

/// A TCP port on which nothing listens.
pub async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

/// A pending ticket's row for `approvers` (a payments call), to adjust before [`open_on`].
pub fn new_ticket(approvers: &[&str], timeout: Duration) -> NewTicket {
    NewTicket {
        id: TicketId::new(),
        principal: "agent-a".into(),
        principal_issuer: None,
        principal_claims: None,
        session_id: format!("s-{}", uuid::Uuid::new_v4().simple()),
        tool: "payments.transfer".into(),
        arguments: serde_json::json!({"amount": 100}),
        rule: "payments".into(),
        reason: Some("money moves".into()),
        approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
        slack_channel: Some("C0APPROVE".into()),
        request_hash: uuid::Uuid::new_v4().simple().to_string(),
        timeout,
        approvals: 1,
        owner: None,
        policy_revision: None,
        approver_groups: Vec::new(),
        fingerprint: airlock_shared::canonical::fingerprint(
            "payments.transfer",
            &serde_json::json!({"amount": 100}),
            None,
        ),
        grant: None,
        traceparent: None,
        tracestate: None,
    }
}

/// Opens `new` in `db`; it must be a new ticket.
pub async fn open_on(db: &TestDb, new: &NewTicket) -> TicketId {
    match ticket::open(&db.pool, new).await.unwrap() {
        Opened::Created(t) => t.id,
        Opened::Reattached(_) => panic!("fresh ticket reattached"),
    }
}
