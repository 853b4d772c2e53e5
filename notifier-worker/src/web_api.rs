//! The few Slack Web API methods the notifier calls, and how their answers are classified.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tracing::Instrument;
use url::Url;

/// What a failed call means for the job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// Slack asked us to wait (HTTP 429 or `ratelimited`).
    #[error("rate limited by Slack, retry after {0:?}")]
    RateLimited(Duration),
    /// Network trouble, a timeout, 5xx or a transient Slack error: worth retrying.
    #[error("transient Slack failure: {0}")]
    Transient(String),
    /// An `ok:false` that retrying cannot fix (`channel_not_found`, `invalid_auth`, …).
    #[error("Slack refused the call: {0}")]
    Permanent(String),
}

impl SlackError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RateLimited(_) => "rate_limited",
            Self::Transient(_) => "transient",
            Self::Permanent(_) => "permanent",
        }
    }
}

/// A posted or updated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel id Slack answered with.
    pub channel: String,
    /// The message's ts.
    pub ts: String,
}

/// Slack `ok:false` errors worth retrying; every other one is permanent.
const TRANSIENT_ERRORS: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
];

/// Without a `Retry-After`, Slack's own advice is to back off about this long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A Slack Web API client with the bot token.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl SlackClient {
    /// A client against `base` (e.g. `https://slack.com/api`) whose calls time out after `timeout`.
    pub fn new(base: Url, token: SecretString, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(256)
            .user_agent(concat!("airlock-notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, base, token })
    }

    /// `chat.postMessage`.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<Posted, SlackError> {
        let body = json!({
            "channel": channel, "text": text, "blocks": blocks,
            "unfurl_links": false, "unfurl_media": false,
        });
        let answer = self.call("chat.postMessage", &body).await?;
        posted(&answer)
    }

    /// `chat.update` (blocks replace the old ones; an empty list removes the buttons).
    pub async fn update(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<Posted, SlackError> {
        let body = json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks});
        let answer = self.call("chat.update", &body).await?;
        posted(&answer)
    }

    /// `chat.postEphemeral`, seen only by `user`.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), SlackError> {
        let body = json!({"channel": channel, "user": user, "text": text, "blocks": blocks});
        self.call("chat.postEphemeral", &body).await.map(|_| ())
    }

    /// `chat.delete`.
    pub async fn delete(&self, channel: &str, ts: &str) -> Result<(), SlackError> {
        let body = json!({"channel": channel, "ts": ts});
        self.call("chat.delete", &body).await.map(|_| ())
    }

    /// `usergroups.users.list`: the user ids in a user group. Sent form-encoded, as Slack
    /// documents this method (it does not take JSON bodies).
    pub async fn usergroup_users(&self, group: &str) -> Result<Vec<String>, SlackError> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("usergroup", group)
            .finish();
        let answer = self
            .send("usergroups.users.list", |r| {
                r.header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form)
            })
            .await?;
        answer
            .get("users")
            .and_then(Value::as_array)
            .and_then(|users| {
                users
                    .iter()
                    .map(|u| u.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| SlackError::Permanent("ok answer without a users list".into()))
    }

    /// Calls one method and classifies the answer; `Ok` only for `ok: true`.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        self.send(method, |r| r.json(body)).await
    }

    /// Sends one request whose body `body` sets, and classifies the answer; one span per
    /// request (a retried job has one per attempt).
    async fn send(
        &self,
        method: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let span = tracing::info_span!("slack_api", method);
        self.exchange(method, body).instrument(span).await
    }

    async fn exchange(
        &self,
        method: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let url = format!("{}/{method}", self.base.as_str().trim_end_matches('/'));
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| SlackError::Permanent("bot token is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let resp = body(self.http.post(url).header(AUTHORIZATION, auth))
            .send()
            .await
            .map_err(|e| SlackError::Transient(describe_transport(&e)))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SlackError::Transient(describe_transport(&e)))?;
        classify(status.as_u16(), retry_after, &bytes)
    }
}

/// Turns an HTTP answer into the job's view of it. Slack reports most errors as HTTP 200 with
/// `ok: false`, so the body decides, not the status.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Value, SlackError> {
    if status == 429 {
        return Err(SlackError::RateLimited(
            retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        ));
    }
    if status >= 500 {
        return Err(SlackError::Transient(format!("HTTP {status}")));
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(answer) = parsed.filter(Value::is_object) else {
        return Err(if (200..300).contains(&status) {
            // A proxy's error page or a cut-off body: nothing says the call failed for good.
            SlackError::Transient(format!(
                "HTTP {status} with a body that is not Slack's JSON"
            ))
        } else {
            SlackError::Permanent(format!("HTTP {status}"))
        });
    };
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer);
    }
    let error = answer
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_owned();
    if error == "ratelimited" {
        return Err(SlackError::RateLimited(
            retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        ));
    }
    if TRANSIENT_ERRORS.contains(&error.as_str()) {
        return Err(SlackError::Transient(error));
    }
    let detail = answer
        .get("errors")
        .and_then(Value::as_array)
        .map(|errs| {
            errs.iter()
                .filter_map(Value::as_str)
                .take(3)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|d| !d.is_empty());
    Err(SlackError::Permanent(match detail {
        Some(d) => format!("{error} ({d})"),
        None => error,
    }))
}

fn posted(answer: &Value) -> Result<Posted, SlackError> {
    let channel = answer.get("channel").and_then(Value::as_str);
    let ts = answer.get("ts").and_then(Value::as_str);
    match (channel, ts) {
        (Some(channel), Some(ts)) => Ok(Posted {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
        }),
        // ok:true without a ts: we cannot guard against a repost, so do not retry blindly.
        _ => Err(SlackError::Permanent(
            "ok answer without channel and ts".into(),
        )),
    }
}

/// The transport error with its causes.
fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    format!("{kind}: {}", airlock_shared::telemetry::chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_by_body_not_status() {
        assert!(classify(200, None, br#"{"ok":true,"ts":"1.2"}"#).is_ok());
        assert_eq!(
            classify(200, None, br#"{"ok":false,"error":"channel_not_found"}"#),
            Err(SlackError::Permanent("channel_not_found".into()))
        );
        assert_eq!(
            classify(200, None, br#"{"ok":false,"error":"invalid_blocks","errors":["too long [json-pointer:/blocks/0]"]}"#),
            Err(SlackError::Permanent("invalid_blocks (too long [json-pointer:/blocks/0])".into()))
        );
        assert_eq!(
            classify(200, None, br#"{"ok":false,"error":"internal_error"}"#),
            Err(SlackError::Transient("internal_error".into()))
        );
        assert_eq!(
            classify(
                429,
                Some(Duration::from_secs(7)),
                br#"{"ok":false,"error":"ratelimited"}"#
            ),
            Err(SlackError::RateLimited(Duration::from_secs(7)))
        );
        assert_eq!(
            classify(429, None, b""),
            Err(SlackError::RateLimited(DEFAULT_RETRY_AFTER))
        );
        assert!(matches!(
            classify(503, None, b"<html>"),
            Err(SlackError::Transient(_))
        ));
        assert!(matches!(
            classify(200, None, b"<html>"),
            Err(SlackError::Transient(_))
        ));
        assert!(matches!(
            classify(404, None, b"nope"),
            Err(SlackError::Permanent(_))
        ));
        assert!(matches!(
            classify(200, None, br#"{"error":"x"}"#),
            Err(SlackError::Permanent(_))
        ));
    }

    #[test]
    fn the_debug_form_hides_the_token() {
        let c = SlackClient::new(
            Url::parse("http://127.0.0.1:1/api").unwrap(),
            SecretString::from("xoxb-very-secret"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("xoxb-very-secret"));
    }
}
