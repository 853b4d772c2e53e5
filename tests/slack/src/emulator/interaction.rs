//! Clicks: what Slack sends to the app's interactivity URL, signed; and the JSON API that tests
//! and the page use to read the channel and click.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use super::{ClickRecord, Emulator, FaultRequest};
use crate::web_api::{Message, message_json};

/// `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`, as Slack signs requests.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a test or the page asks for: act as `user_id` on a button of one message.
#[derive(Debug, Deserialize)]
pub struct ClickRequest {
    pub user_id: String,
    pub channel: Option<String>,
    pub ts: String,
    pub action_id: String,
}

/// Why a click could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ClickError {
    #[error("no such user in the workspace")]
    UnknownUser,
    #[error("no such message")]
    NoMessage,
    #[error("the message has no button with that action_id (any more)")]
    NoButton,
}

impl IntoResponse for ClickError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::UnknownUser => StatusCode::BAD_REQUEST,
            Self::NoMessage => StatusCode::NOT_FOUND,
            Self::NoButton => StatusCode::CONFLICT,
        };
        (
            status,
            Json(json!({"ok": false, "error": self.to_string()})),
        )
            .into_response()
    }
}

fn find_button(m: &Message, action_id: &str) -> Option<(String, Value)> {
    for b in m.blocks.as_array()? {
        let block_id = b
            .get("block_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let candidates: Vec<&Value> = match b.get("type").and_then(Value::as_str) {
            Some("actions") => b
                .get("elements")
                .and_then(Value::as_array)
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
            Some("section") => b.get("accessory").into_iter().collect(),
            _ => vec![],
        };
        if let Some(e) = candidates.into_iter().find(|e| {
            e.get("type").and_then(Value::as_str) == Some("button")
                && e.get("action_id").and_then(Value::as_str) == Some(action_id)
        }) {
            return Some((block_id, e.clone()));
        }
    }
    None
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `block_actions` payload Slack sends for a button click.
pub fn block_actions(
    emu: &Emulator,
    user_id: &str,
    m: &Message,
    block_id: &str,
    button: &Value,
) -> Value {
    let user_name = emu.user_name(user_id).unwrap_or_default();
    let channel_name = emu.channel(&m.channel).map(|(_, n)| n).unwrap_or_default();
    let action_ts = emu.slack.next_ts();
    let team = &emu.config.team_id;
    let message = message_json(m, &emu.slack.workspace);
    json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team},
        "api_app_id": emu.config.api_app_id,
        "token": "emulatorVerificationToken",
        "container": {"type": "message", "message_ts": m.ts, "channel_id": m.channel, "is_ephemeral": false},
        "trigger_id": format!("{}.{}.emulator", action_ts.replace('.', ""), now_secs()),
        "team": {"id": team, "domain": "airlock-local"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": m.channel, "name": channel_name},
        "message": message,
        "state": {"values": {}},
        "response_url": format!("{}/_emulator/response/{}/{}/{}", emu.config.public_url, m.channel, m.ts, user_id),
        "actions": [{
            "action_id": button.get("action_id"),
            "block_id": block_id,
            "text": button.get("text"),
            "value": button.get("value"),
            "style": button.get("style"),
            "type": "button",
            "action_ts": action_ts,
        }],
    })
}

/// `POST /_emulator/click`: sends the click to the webhook and reports its answer.
pub async fn click(
    State(emu): State<Emulator>,
    Json(req): Json<ClickRequest>,
) -> Result<Json<Value>, ClickError> {
    if emu.user_name(&req.user_id).is_none() {
        return Err(ClickError::UnknownUser);
    }
    let message = (emu.slack.messages(None).into_iter())
        .find(|m| m.ts == req.ts && req.channel.as_ref().is_none_or(|c| *c == m.channel))
        .ok_or(ClickError::NoMessage)?;
    let (block_id, button) = find_button(&message, &req.action_id).ok_or(ClickError::NoButton)?;
    let payload = block_actions(&emu, &req.user_id, &message, &block_id, &button);
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let timestamp = now_secs().to_string();
    let signature = sign(emu.config.signing_secret.expose_secret(), &timestamp, &body);
    let started = Instant::now();
    let sent = emu
        .http
        .post(&emu.config.webhook_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &timestamp)
        .header("x-slack-signature", &signature)
        .body(body)
        .send()
        .await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, answer, error) = match sent {
        Ok(r) => {
            let s = r.status().as_u16();
            (Some(s), r.text().await.unwrap_or_default(), None)
        }
        Err(e) => (None, String::new(), Some(e.to_string())),
    };
    tracing::info!(user = %req.user_id, ts = %message.ts, action = %req.action_id, status = ?status, elapsed_ms, "click sent to the webhook");
    emu.clicks().push(ClickRecord {
        user_id: req.user_id.clone(),
        channel: message.channel.clone(),
        message_ts: message.ts.clone(),
        action_id: req.action_id.clone(),
        value: button
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_owned),
        status,
        elapsed_ms,
    });
    emu.slack.changed();
    Ok(Json(json!({
        "ok": status.is_some_and(|s| (200..300).contains(&s)),
        "webhook_status": status,
        "webhook_body": answer,
        "error": error,
        "elapsed_ms": elapsed_ms,
        // Slack shows the user a warning when the app takes longer than 3 seconds.
        "slow": elapsed_ms > 3000,
    })))
}

/// Filters for the message list.
#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    pub channel: Option<String>,
}

/// `GET /_emulator/messages`: the channel's messages, ephemerals, clicks and API calls.
pub async fn messages(State(emu): State<Emulator>, Query(q): Query<MessagesQuery>) -> Json<Value> {
    let channel = q.channel.and_then(|c| emu.channel(&c).map(|(id, _)| id));
    let api_calls: Vec<Value> = emu.slack.with_calls(|calls| {
        calls
            .iter()
            .map(|c| {
                let error = match c.response.get("error").and_then(Value::as_str) {
                    Some(e) => Some(e.to_owned()),
                    None if c.response.is_null() => Some(format!("HTTP {}", c.status)),
                    None => None,
                };
                json!({
                    "method": c.method, "ok": c.response["ok"] == true,
                    "error": error, "http_status": c.status,
                })
            })
            .collect()
    });
    Json(json!({
        "messages": views(&emu, channel.as_deref()).0,
        "ephemerals": views(&emu, channel.as_deref()).1,
        "clicks": *emu.clicks(),
        "api_calls": api_calls,
    }))
}

/// The messages and ephemerals (of one channel) with their renderings.
fn views(emu: &Emulator, channel: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let messages = (emu.slack.messages(channel).iter())
        .map(|m| emu.view(m, &m.blocks, &m.text))
        .collect();
    let ephemerals = (emu.slack.ephemerals(channel).iter())
        .map(|e| emu.view(e, &e.blocks, &e.text))
        .collect();
    (messages, ephemerals)
}

/// `GET /_emulator/state`: everything the page needs, with the change version.
pub async fn state(State(emu): State<Emulator>) -> Json<Value> {
    let version = emu.slack.version();
    let (messages, ephemerals) = views(&emu, None);
    Json(json!({
        "version": version,
        "users": emu.config.users.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
        "channels": emu.config.channels.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
        "messages": messages,
        "ephemerals": ephemerals,
        "clicks": emu.clicks().iter().rev().take(20).collect::<Vec<_>>(),
    }))
}

/// `POST /_emulator/faults`: the next `times` calls of `method` fail as described.
pub async fn add_fault(State(emu): State<Emulator>, Json(f): Json<FaultRequest>) -> StatusCode {
    for _ in 0..f.times {
        emu.slack.fail_next(Some(&f.method), f.fault());
    }
    StatusCode::NO_CONTENT
}

/// What an app may send to a `response_url`.
#[derive(Debug, Deserialize)]
pub struct ResponseMessage {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub blocks: Option<Value>,
    #[serde(default)]
    pub replace_original: bool,
    #[serde(default)]
    pub delete_original: bool,
    #[serde(default)]
    pub response_type: Option<String>,
}

/// `POST` to a click's `response_url`: replace or delete the original, or reply (ephemeral
/// unless `response_type` is `in_channel`).
pub async fn response_url(
    State(emu): State<Emulator>,
    Path((channel, ts, user)): Path<(String, String, String)>,
    Json(r): Json<ResponseMessage>,
) -> (StatusCode, &'static str) {
    let blocks = r.blocks.unwrap_or(Value::Array(vec![]));
    if !crate::blocks::validate(&blocks).is_empty() {
        return (StatusCode::BAD_REQUEST, "invalid_blocks");
    }
    let text = r.text.unwrap_or_default();
    if r.delete_original {
        emu.slack.delete(&channel, &ts);
    } else if r.replace_original {
        if emu.slack.update(&channel, &ts, text, blocks).is_none() {
            return (StatusCode::NOT_FOUND, "message_not_found");
        }
    } else if r.response_type.as_deref() == Some("in_channel") {
        emu.slack.post(&channel, text, blocks);
    } else {
        emu.slack.post_ephemeral(&channel, &user, text, blocks);
    }
    (StatusCode::OK, "ok")
}

/// What `POST /_emulator/usergroups` takes: a group and its new members.
#[derive(Debug, Deserialize)]
pub struct SetMembers {
    pub usergroup: String,
    pub users: Vec<String>,
}

/// `POST /_emulator/usergroups`: creates the group or replaces its members.
pub async fn set_members(
    State(emulator): State<Emulator>,
    Json(set): Json<SetMembers>,
) -> Json<Value> {
    let users: Vec<&str> = set.users.iter().map(String::as_str).collect();
    emulator.slack.usergroups.set(&set.usergroup, &users);
    emulator.slack.changed();
    Json(json!({"ok": true, "usergroup": set.usergroup, "users": set.users}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_published_example_signs_as_published() {
        // From Slack's "Verifying requests from Slack" guide.
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
