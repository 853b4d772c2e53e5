//! JSON-RPC as MCP carries it: telling requests, notifications and responses apart.

use serde_json::Value;

use crate::error::RequestError;

/// The JSON-RPC method policy looks at.
pub const TOOLS_CALL: &str = "tools/call";
/// Tool discovery, which policy may filter.
pub const TOOLS_LIST: &str = "tools/list";
/// The method that opens a session.
pub const INITIALIZE: &str = "initialize";
/// A notification that a request is abandoned.
pub const CANCELLED: &str = "notifications/cancelled";
/// The method that advertises a 2026-07-28 server's versions and capabilities.
pub const DISCOVER: &str = "server/discover";
/// The 2026-07-28 method that opens the server-to-client notification stream.
pub const LISTEN: &str = "subscriptions/listen";

/// One JSON-RPC message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Has a method and an id.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// Has a method and no id.
    Notification { method: String, params: Value },
    /// Has an id and a result or error.
    Response { id: Value },
}

impl Message {
    /// The method, for requests and notifications.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Request { method, .. } | Self::Notification { method, .. } => Some(method),
            Self::Response { .. } => None,
        }
    }
}

/// Whether a JSON-RPC message is the response to `id`.
pub fn is_response_to(msg: &Value, id: &Value) -> bool {
    msg.get("id") == Some(id) && (msg.get("result").is_some() || msg.get("error").is_some())
}

/// A POST body: one message or a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Single(Message),
    Batch(Vec<Message>),
}

/// Parses and checks a POST body.
pub fn parse(body: &[u8]) -> Result<Incoming, RequestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| RequestError::Parse(e.to_string()))?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(RequestError::InvalidRequest("empty batch".into()));
            }
            items
                .into_iter()
                .map(message)
                .collect::<Result<_, _>>()
                .map(Incoming::Batch)
        }
        other => message(other).map(Incoming::Single),
    }
}

fn message(v: Value) -> Result<Message, RequestError> {
    let Value::Object(mut obj) = v else {
        return Err(RequestError::InvalidRequest(
            "a message must be a JSON object".into(),
        ));
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RequestError::InvalidRequest(
            r#"jsonrpc must be "2.0""#.into(),
        ));
    }
    let id = obj.remove("id");
    if let Some(id) = &id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(RequestError::InvalidRequest(
            "id must be a string or an integer".into(),
        ));
    }
    match obj.remove("method") {
        Some(Value::String(method)) => {
            let params = obj.remove("params").unwrap_or(Value::Null);
            if !(params.is_null() || params.is_object() || params.is_array()) {
                return Err(RequestError::InvalidRequest(
                    "params must be an object".into(),
                ));
            }
            Ok(match id {
                Some(id) => Message::Request { id, method, params },
                None => Message::Notification { method, params },
            })
        }
        Some(_) => Err(RequestError::InvalidRequest(
            "method must be a string".into(),
        )),
        None => match id {
            Some(id) if obj.contains_key("result") || obj.contains_key("error") => {
                Ok(Message::Response { id })
            }
            _ => Err(RequestError::InvalidRequest(
                "neither a request, a notification nor a response".into(),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            Ok(Incoming::Single(Message::Request { .. }))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Incoming::Single(Message::Notification { .. }))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Incoming::Single(Message::Response { .. }))
        ));
        assert!(
            matches!(parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#), Ok(Incoming::Batch(b)) if b.len() == 1)
        );
    }

    #[test]
    fn junk_is_refused_with_the_right_kind() {
        assert!(matches!(parse(b"{nope"), Err(RequestError::Parse(_))));
        assert!(matches!(parse(b""), Err(RequestError::Parse(_))));
        for bad in [
            r#"{"id":1,"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            r#"[]"#,
            r#"42"#,
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(RequestError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }
}
