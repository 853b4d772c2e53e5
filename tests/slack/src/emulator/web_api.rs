//! The Slack Web API methods, with Slack's answers: HTTP 200 and `ok:false` for most errors,
//! 429 with `Retry-After` when rate limited, and the same response shapes as slack.com.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use super::{ApiCall, Emulator, Ephemeral, Message, blocks};

/// The bot user id and bot id the emulator's app posts as.
pub const BOT_USER: &str = "U0AIRLOCKBOT";
const BOT_ID: &str = "B0AIRLOCK";

/// A Web API failure: `ok:false` with Slack's error string.
struct SlackError {
    error: String,
    /// Extra fields (`errors`, `response_metadata`) for `invalid_blocks`.
    extra: Map<String, Value>,
}

impl SlackError {
    fn new(error: &str) -> Self {
        Self {
            error: error.to_owned(),
            extra: Map::new(),
        }
    }
}

fn answer(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// Arguments from a JSON body or a form body (where `blocks` is a JSON string).
fn arguments(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, SlackError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/json") {
        if body.is_empty() {
            return Ok(Map::new());
        }
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(SlackError::new("invalid_json")),
        };
    }
    let mut m = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        let value = if k == "blocks" || k == "attachments" {
            serde_json::from_str(&v).map_err(|_| SlackError::new("invalid_blocks_format"))?
        } else {
            Value::String(v.into_owned())
        };
        m.insert(k.into_owned(), value);
    }
    Ok(m)
}

fn authenticate(
    emu: &Emulator,
    headers: &HeaderMap,
    args: &Map<String, Value>,
) -> Result<(), SlackError> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = from_header.or_else(|| args.get("token").and_then(Value::as_str));
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(SlackError::new("not_authed"));
    };
    let want = emu.config.bot_token.expose_secret().as_bytes();
    if bool::from(token.as_bytes().ct_eq(want)) {
        Ok(())
    } else {
        Err(SlackError::new("invalid_auth"))
    }
}

fn str_arg<'a>(args: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `text` and `blocks` checked as Slack checks them.
fn content(args: &Map<String, Value>) -> Result<(String, Value), SlackError> {
    let text = str_arg(args, "text").unwrap_or_default().to_owned();
    let blocks = args.get("blocks").cloned().unwrap_or(Value::Array(vec![]));
    let errors = blocks::validate(&blocks);
    if !errors.is_empty() {
        let mut e = SlackError::new("invalid_blocks");
        e.extra.insert("errors".into(), json!(errors));
        let messages: Vec<String> = errors.iter().map(|e| format!("[ERROR] {e}")).collect();
        e.extra
            .insert("response_metadata".into(), json!({ "messages": messages }));
        return Err(e);
    }
    if text.is_empty() && blocks.as_array().is_none_or(Vec::is_empty) {
        return Err(SlackError::new("no_text"));
    }
    if text.chars().count() > blocks::MAX_TEXT {
        return Err(SlackError::new("msg_too_long"));
    }
    Ok((text, blocks))
}

fn message_json(m: &Message, team: &str, app: &str) -> Value {
    let mut v = json!({
        "type": "message",
        "user": m.user,
        "bot_id": BOT_ID,
        "app_id": app,
        "team": team,
        "text": m.text,
        "ts": m.ts,
        "blocks": m.blocks,
    });
    if let Some(edited) = &m.edited_ts {
        v["edited"] = json!({"user": m.user, "ts": edited});
    }
    v
}

/// `POST /api/{method}`.
pub async fn call(
    State(emu): State<Emulator>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let span = tracing::info_span!("slack_api", method = %method);
    let _g = span.enter();
    if let Some(resp) = injected_fault(&emu, &method) {
        return resp;
    }
    let result = dispatch(&emu, &method, &headers, &body);
    let (status, body, ok, error) = match result {
        Ok(v) => {
            let mut v = v;
            v["ok"] = Value::Bool(true);
            (StatusCode::OK, v, true, None)
        }
        Err(e) => {
            let mut v = json!({"ok": false, "error": e.error});
            for (k, x) in e.extra {
                v[k] = x;
            }
            // Slack answers unknown methods with 404; everything else is 200 + ok:false.
            let status = if e.error == "unknown_method" {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            };
            (status, v, false, Some(e.error))
        }
    };
    if let Some(err) = &error {
        tracing::info!(error = %err, "ok:false");
    }
    emu.workspace().api_calls.push(ApiCall {
        method,
        ok,
        error,
        http_status: status.as_u16(),
    });
    answer(status, &body)
}

fn injected_fault(emu: &Emulator, method: &str) -> Option<Response> {
    let fault = {
        let mut ws = emu.workspace();
        let f = ws
            .faults
            .iter_mut()
            .find(|f| f.method == method && f.times > 0)?;
        f.times -= 1;
        let f = f.clone();
        ws.api_calls.push(ApiCall {
            method: method.to_owned(),
            ok: false,
            error: f
                .error
                .clone()
                .or_else(|| Some(format!("HTTP {}", f.status))),
            http_status: f.status,
        });
        f
    };
    let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if status == StatusCode::TOO_MANY_REQUESTS {
        answer(status, &json!({"ok": false, "error": "ratelimited"}))
    } else if let Some(e) = &fault.error {
        answer(status, &json!({"ok": false, "error": e}))
    } else {
        // Slack's edge answers 5xx with an HTML page, not JSON.
        (status, "<html><body>Service Unavailable</body></html>").into_response()
    };
    if let Some(secs) = fault.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    Some(resp)
}

fn dispatch(
    emu: &Emulator,
    method: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, SlackError> {
    let known = [
        "auth.test",
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "chat.delete",
    ];
    if !known.contains(&method) {
        return Err(SlackError::new("unknown_method"));
    }
    let args = arguments(headers, body)?;
    authenticate(emu, headers, &args)?;
    let team = emu.config.team_id.clone();
    let app = emu.config.api_app_id.clone();
    match method {
        "auth.test" => Ok(json!({
            "url": format!("{}/", emu.config.public_url),
            "team": "Airlock local", "user": "airlock", "team_id": team,
            "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": false,
        })),
        "chat.postMessage" => {
            let channel = str_arg(&args, "channel").ok_or(SlackError::new("channel_not_found"))?;
            let (channel_id, _) = emu
                .channel(channel)
                .ok_or(SlackError::new("channel_not_found"))?;
            let (text, blocks) = content(&args)?;
            let rendered = emu.render(&blocks, &text);
            let msg = {
                let mut ws = emu.workspace();
                let ts = ws.next_ts();
                let m = Message {
                    channel: channel_id.clone(),
                    ts,
                    text,
                    blocks,
                    user: BOT_USER.into(),
                    edited_ts: None,
                    updates: 0,
                    rendered,
                };
                ws.messages.push(m.clone());
                m
            };
            tracing::info!(channel = %channel_id, ts = %msg.ts, "message posted");
            emu.changed();
            Ok(json!({
                "channel": channel_id, "ts": msg.ts,
                "message": message_json(&msg, &team, &app),
            }))
        }
        "chat.update" => {
            let channel = str_arg(&args, "channel").ok_or(SlackError::new("channel_not_found"))?;
            let (channel_id, _) = emu
                .channel(channel)
                .ok_or(SlackError::new("channel_not_found"))?;
            let ts = str_arg(&args, "ts").ok_or(SlackError::new("message_not_found"))?;
            let (text, blocks) = content(&args)?;
            let rendered = emu.render(&blocks, &text);
            let msg = {
                let mut ws = emu.workspace();
                let edit_ts = ws.next_ts();
                let m = ws
                    .messages
                    .iter_mut()
                    .find(|m| m.channel == channel_id && m.ts == ts)
                    .ok_or(SlackError::new("message_not_found"))?;
                m.text = text;
                m.blocks = blocks;
                m.rendered = rendered;
                m.edited_ts = Some(edit_ts);
                m.updates += 1;
                m.clone()
            };
            tracing::info!(channel = %channel_id, ts = %msg.ts, "message updated");
            emu.changed();
            Ok(json!({
                "channel": channel_id, "ts": msg.ts, "text": msg.text,
                "message": message_json(&msg, &team, &app),
            }))
        }
        "chat.postEphemeral" => {
            let channel = str_arg(&args, "channel").ok_or(SlackError::new("channel_not_found"))?;
            let (channel_id, _) = emu
                .channel(channel)
                .ok_or(SlackError::new("channel_not_found"))?;
            let user = str_arg(&args, "user").ok_or(SlackError::new("user_not_in_channel"))?;
            if emu.user_name(user).is_none() {
                return Err(SlackError::new("user_not_in_channel"));
            }
            let (text, blocks) = content(&args)?;
            let rendered = emu.render(&blocks, &text);
            let message_ts = {
                let mut ws = emu.workspace();
                let ts = ws.next_ts();
                ws.ephemerals.push(Ephemeral {
                    channel: channel_id,
                    user: user.to_owned(),
                    message_ts: ts.clone(),
                    text,
                    blocks,
                    rendered,
                });
                ts
            };
            emu.changed();
            Ok(json!({ "message_ts": message_ts }))
        }
        "chat.delete" => {
            let channel = str_arg(&args, "channel").ok_or(SlackError::new("channel_not_found"))?;
            let (channel_id, _) = emu
                .channel(channel)
                .ok_or(SlackError::new("channel_not_found"))?;
            let ts = str_arg(&args, "ts").ok_or(SlackError::new("message_not_found"))?;
            {
                let mut ws = emu.workspace();
                let before = ws.messages.len();
                ws.messages
                    .retain(|m| !(m.channel == channel_id && m.ts == ts));
                if ws.messages.len() == before {
                    return Err(SlackError::new("message_not_found"));
                }
            }
            emu.changed();
            Ok(json!({ "channel": channel_id, "ts": ts }))
        }
        _ => Err(SlackError::new("unknown_method")),
    }
}
