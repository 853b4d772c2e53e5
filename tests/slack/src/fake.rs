//! The Rust test fake: the one Web API ([`crate::web_api`]) served over HTTP on 127.0.0.1, with
//! methods for tests to program faults and latency and to read what was posted and called.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::oneshot;

pub use crate::web_api::{Call, Channel, Ephemeral, Fault, Message};
use crate::web_api::{Core, Workspace};

/// Slack's documented Block Kit limits that the fake enforces (defined once, in `shared`).
pub use airlock_shared::block_kit as limits;

/// Every way `blocks` breaks Slack's rules, as Slack words them with a JSON pointer.
pub fn validate_blocks(blocks: &Value) -> Vec<String> {
    crate::blocks::validate(blocks)
}

/// How to set up a fake workspace.
#[derive(Clone, Debug)]
pub struct FakeSlackConfig {
    /// The bot token the fake accepts.
    pub token: String,
    /// The channels it has.
    pub channels: Vec<Channel>,
}

impl FakeSlackConfig {
    /// A workspace with `token` and one joined channel `C0APPROVALS` named `approvals`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            channels: vec![Channel::joined("C0APPROVALS", "approvals")],
        }
    }

    /// Adds a channel the bot has joined.
    pub fn with_channel(mut self, id: &str, name: &str) -> Self {
        self.channels.push(Channel::joined(id, name));
        self
    }

    /// Adds a channel the bot has not joined.
    pub fn with_foreign_channel(mut self, id: &str, name: &str) -> Self {
        self.channels.push(Channel {
            bot_is_member: false,
            ..Channel::joined(id, name)
        });
        self
    }
}

/// A running fake Slack; it stops when dropped.
pub struct FakeSlack {
    addr: SocketAddr,
    core: Arc<Core>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl FakeSlack {
    /// Starts a fake workspace on 127.0.0.1 with a free port.
    pub async fn spawn(config: FakeSlackConfig) -> FakeSlack {
        let core = Core::new(Workspace {
            token: SecretString::from(config.token),
            channels: config.channels,
            users: Vec::new(),
            team_id: "T0AIRLOCK".into(),
            app_id: "A0AIRLOCK".into(),
            url: "https://airlock-test.slack.com/".into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("fake Slack cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fake Slack has no address: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(core.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeSlack {
            addr,
            core,
            stop: Some(stop),
        }
    }

    /// The axum router, for embedding the fake in a larger server.
    pub fn router(&self) -> axum::Router {
        router(self.core.clone())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL to give a client, like `https://slack.com/api`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// The token it accepts.
    pub fn token(&self) -> &str {
        self.core.workspace.token.expose_secret()
    }

    /// Makes the next call of `method` fail (or stall) as `fault` says. Faults queue up in order.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.core.fail_next(Some(method), fault);
    }

    /// Makes the next call of any method fail as `fault` says (after method-specific faults).
    pub fn fail_next_any(&self, fault: Fault) {
        self.core.fail_next(None, fault);
    }

    /// Creates user group `group` (`S…`), or replaces its members; `usergroups.users.list`
    /// answers with them from now on.
    pub fn set_usergroup(&self, group: &str, users: &[&str]) {
        self.core.usergroups.set(group, users);
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.core.set_latency(latency);
    }

    /// Every call so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.core.with_calls(<[Call]>::to_vec)
    }

    /// The calls of one method.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.core.with_calls(|calls| {
            calls
                .iter()
                .filter(|c| c.method == method)
                .cloned()
                .collect()
        })
    }

    /// How many calls of one method arrived so far.
    pub fn count_calls(&self, method: &str) -> usize {
        self.core.count_calls(method)
    }

    /// The messages of a channel (by id or name), oldest first, deleted ones gone.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        let id = self
            .core
            .workspace
            .channel(channel)
            .map_or(channel, |c| c.id.as_str());
        self.core.messages(Some(id))
    }

    /// Every ephemeral message shown so far.
    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.core.ephemerals(None)
    }

    /// Waits until `n` calls of `method` have been answered, or `timeout` passes; returns them.
    pub async fn wait_for_calls(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        // Count, not clone, on each wake-up: cloning every call each time is quadratic.
        self.wait(timeout, || self.count_calls(method) >= n).await;
        self.calls_to(method)
    }

    /// Waits until `pred` holds for the call log, or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Call]) -> bool) -> bool {
        self.wait(timeout, || self.core.with_calls(&pred)).await
    }

    async fn wait(&self, timeout: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.core.subscribe();
        loop {
            changes.borrow_and_update();
            if done() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return done();
            }
        }
    }
}

fn router(core: Arc<Core>) -> axum::Router {
    axum::Router::new()
        .route("/api/{method}", post(crate::web_api::handle))
        .with_state(core)
}
