//! A Slack emulator: the Web API methods the notifier calls, a channel page a person can click
//! in a browser, and a JSON API for tests.
//!
//! - `POST /api/{method}`: `chat.postMessage`, `chat.update`, `chat.postEphemeral`,
//!   `chat.delete`, `auth.test`, with Slack's response shapes, bearer-token checks, `ok:false`
//!   errors (`invalid_blocks` on Block Kit limit violations) and injectable 429/5xx faults.
//! - `GET /`: the channel, rendered from blocks, updated in place; pick the acting user, click.
//! - `GET /_emulator/messages`, `POST /_emulator/click`, `POST /_emulator/faults`,
//!   `POST /_emulator/usergroups` (`{"usergroup":"S…","users":["U…"]}`), …: for tests.
//!
//! A click does what Slack does: it POSTs a signed, form-encoded `block_actions` payload to the
//! webhook URL.

pub mod interaction;
mod page;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use airlock_shared::config::{ConfigError, Env};
use axum::Router;
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::blocks;
use crate::web_api::{self, Channel, Core, Fault, Workspace};

/// The emulator's configuration, from the environment.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    /// The bot token the notifier must present.
    pub bot_token: SecretString,
    /// Signs clicks, as Slack's app signing secret does.
    pub signing_secret: SecretString,
    /// Where clicks go (the webhook's `/slack/actions`).
    pub webhook_url: String,
    /// Channels as (id, name).
    pub channels: Vec<(String, String)>,
    /// Workspace members as (id, name); the page lets you act as any of them.
    pub users: Vec<(String, String)>,
    pub team_id: String,
    pub api_app_id: String,
    /// Our own base URL as the webhook sees it (for `response_url`).
    pub public_url: String,
    /// User groups as (id, members), from `SLACK_USERGROUPS` (default: `S0APPROVERS` with
    /// alice, bob and carol).
    pub usergroups: Vec<(String, Vec<String>)>,
}

fn pairs(raw: &str, what: &str, env: &mut Env) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once(':') {
            Some((id, name)) if !id.is_empty() && !name.is_empty() => {
                out.push((id.trim().to_owned(), name.trim().to_owned()));
            }
            _ => env.problem(format!("{what}: expected ID:name pairs, got {item:?}")),
        }
    }
    if out.is_empty() {
        env.problem(format!("{what}: needs at least one ID:name pair"));
    }
    out
}

impl Config {
    /// Reads the configuration, reporting every problem at once.
    pub fn from_env(mut env: Env) -> Result<Self, ConfigError> {
        let listen_addr = env.or("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8090)));
        let bot_token = env.secret("SLACK_BOT_TOKEN");
        let signing_secret = env.secret("SLACK_SIGNING_SECRET");
        let webhook_url: Option<String> = env.required("WEBHOOK_URL");
        let channels_raw = env
            .raw("SLACK_CHANNELS")
            .unwrap_or("C0APPROVALS:approvals")
            .to_owned();
        let channels = pairs(&channels_raw, "SLACK_CHANNELS", &mut env);
        let users_raw = env
            .raw("SLACK_USERS")
            .unwrap_or("U0ALICE:alice,U0BOB:bob,U0CAROL:carol,U0MALLORY:mallory")
            .to_owned();
        let users = pairs(&users_raw, "SLACK_USERS", &mut env);
        let groups_raw = env
            .raw("SLACK_USERGROUPS")
            .unwrap_or("S0APPROVERS:U0ALICE U0BOB U0CAROL")
            .to_owned();
        let usergroups = crate::usergroups::parse(&groups_raw).unwrap_or_else(|e| {
            env.problem(e);
            Vec::new()
        });
        let team_id = env.or("SLACK_TEAM_ID", "T0AIRLOCK".to_owned());
        let api_app_id = env.or("SLACK_API_APP_ID", "A0AIRLOCK".to_owned());
        let public_url = env.or(
            "PUBLIC_URL",
            format!("http://localhost:{}", listen_addr.port()),
        );
        if bot_token.is_none() {
            env.problem("SLACK_BOT_TOKEN: required (the token the notifier will send)");
        }
        if signing_secret.is_none() {
            env.problem("SLACK_SIGNING_SECRET: required (clicks are signed with it)");
        }
        env.finish()?;
        match (bot_token, signing_secret, webhook_url) {
            (Some(bot_token), Some(signing_secret), Some(webhook_url)) => Ok(Self {
                listen_addr,
                bot_token,
                signing_secret,
                webhook_url,
                channels,
                users,
                team_id,
                api_app_id,
                public_url: public_url.trim_end_matches('/').to_owned(),
                usergroups,
            }),
            _ => Err(ConfigError {
                problems: vec!["required variables missing".into()],
            }),
        }
    }
}

/// One click sent to the webhook, and its answer.
#[derive(Clone, Debug, Serialize)]
pub struct ClickRecord {
    pub user_id: String,
    pub channel: String,
    pub message_ts: String,
    pub action_id: String,
    pub value: Option<String>,
    /// The webhook's HTTP status, or none when it could not be reached.
    pub status: Option<u16>,
    pub elapsed_ms: u64,
}

/// An injected failure for the next `times` calls of `method`, as `POST /_emulator/faults`
/// takes it.
#[derive(Clone, Debug, serde::Deserialize, Serialize)]
pub struct FaultRequest {
    pub method: String,
    /// HTTP status to answer with (429, 500, …); an `error` gives 200 with `ok:false`.
    pub status: u16,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub retry_after: Option<u64>,
    pub times: u32,
}

impl FaultRequest {
    /// The Web API fault it asks for.
    pub fn fault(&self) -> Fault {
        match (&self.error, self.status) {
            (None, 429) => Fault::RateLimited {
                retry_after_secs: self.retry_after.unwrap_or(1),
            },
            (Some(e), _) => Fault::SlackError(e.clone()),
            (None, status) => Fault::Http(status),
        }
    }
}

/// Shared state of one emulator.
#[derive(Clone)]
pub struct Emulator(Arc<Inner>);

/// The parts of [`Emulator`].
pub struct Inner {
    pub config: Config,
    /// The Web API: messages, ephemerals, calls, faults.
    pub slack: Arc<Core>,
    clicks: Mutex<Vec<ClickRecord>>,
    http: reqwest::Client,
}

impl std::ops::Deref for Emulator {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Emulator {
    /// An empty workspace.
    pub fn new(config: Config) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent("Slackbot 1.0 (+https://api.slack.com/robots)")
            .build()?;
        let slack = Core::new(Workspace {
            token: config.bot_token.clone(),
            channels: (config.channels.iter())
                .map(|(id, name)| Channel::joined(id, name))
                .collect(),
            users: config.users.clone(),
            team_id: config.team_id.clone(),
            app_id: config.api_app_id.clone(),
            url: format!("{}/", config.public_url),
        });
        for (group, members) in &config.usergroups {
            let members: Vec<&str> = members.iter().map(String::as_str).collect();
            slack.usergroups.set(group, &members);
        }
        Ok(Self(Arc::new(Inner {
            config,
            slack,
            clicks: Mutex::new(Vec::new()),
            http,
        })))
    }

    /// The clicks sent so far. A poisoned lock still holds consistent data (every change is
    /// applied in one step), so it is used as is.
    pub fn clicks(&self) -> MutexGuard<'_, Vec<ClickRecord>> {
        self.clicks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A user's display name.
    pub fn user_name(&self, id: &str) -> Option<String> {
        self.slack.workspace.user_name(id).map(str::to_owned)
    }

    /// A channel by id, `#name` or name, as (id, name).
    pub fn channel(&self, key: &str) -> Option<(String, String)> {
        (self.slack.workspace.channel(key)).map(|c| (c.id.clone(), c.name.clone()))
    }

    /// Plain-text rendering with this workspace's user names.
    pub fn render(&self, blocks: &Value, text: &str) -> String {
        blocks::render_plain(blocks, text, &|id| self.user_name(id))
    }

    /// A message or ephemeral as the JSON API shows it: its fields and its plain rendering.
    pub fn view(&self, item: &impl Serialize, blocks: &Value, text: &str) -> Value {
        let mut v = serde_json::to_value(item).unwrap_or(Value::Null);
        v["rendered"] = Value::String(self.render(blocks, text));
        v
    }
}

/// The emulator's routes.
pub fn app(emulator: Emulator) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route(
            "/api/{method}",
            post(web_api::handle)
                .get(web_api::handle)
                .with_state(emulator.slack.clone()),
        )
        .route("/_emulator/state", get(interaction::state))
        .route("/_emulator/messages", get(interaction::messages))
        .route("/_emulator/click", post(interaction::click))
        .route("/_emulator/faults", post(interaction::add_fault))
        .route("/_emulator/usergroups", post(interaction::set_members))
        .route(
            "/_emulator/response/{channel}/{ts}/{user}",
            post(interaction::response_url),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(emulator)
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> std::io::Result<()> {
    let addr = config.listen_addr;
    let emulator = Emulator::new(config).map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "Slack emulator listening; open / in a browser");
    axum::serve(listener, app(emulator))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await
}
