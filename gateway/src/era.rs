//! MCP 2026-07-28 on the wire: which era a request speaks, and its headers checked against
//! its body (`Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`), before anything is forwarded.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use serde_json::{Value, json};

use crate::error::RequestError;
use crate::input_schema::ParamHeader;
use crate::mcp::{Incoming, Message};
use crate::upstream::{METHOD_HEADER, NAME_HEADER, PARAM_PREFIX, PROTOCOL_HEADER};

/// The stateless revision: no session, no `initialize`.
pub use crate::transport::MODERN_PROTOCOL_VERSION as MODERN;
/// Where a 2026-07-28 request names its protocol version.
pub const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

fn mismatch(why: impl Into<String>) -> RequestError {
    RequestError::HeaderMismatch(why.into())
}

/// The `_meta` protocol version of the request(s), if any names one.
fn meta_version(incoming: &Incoming) -> Option<&Value> {
    fn of(m: &Message) -> Option<&Value> {
        match m {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.get("_meta").and_then(|meta| meta.get(VERSION_META))
            }
            Message::Response { .. } => None,
        }
    }
    match incoming {
        Incoming::Single(m) => of(m),
        Incoming::Batch(ms) => ms.iter().find_map(of),
    }
}

/// Whether the request speaks 2026-07-28: `version` is the `MCP-Protocol-Version` header's
/// (already known to be supported), and the body's `_meta` version must agree with it.
pub fn is_modern(
    headers: &HeaderMap,
    version: &str,
    incoming: &Incoming,
) -> Result<bool, RequestError> {
    let header_given = headers.contains_key(PROTOCOL_HEADER);
    match meta_version(incoming) {
        Some(v) if !header_given => Err(mismatch(format!(
            "_meta names protocol version {v} but the MCP-Protocol-Version header is missing"
        ))),
        Some(v) if v.as_str() != Some(version) => Err(mismatch(format!(
            "MCP-Protocol-Version header {version:?} does not match _meta protocol version {v}"
        ))),
        Some(_) => Ok(version == MODERN),
        None if version == MODERN && is_request(incoming) => Err(mismatch(format!(
            "MCP-Protocol-Version is {MODERN} but params._meta[{VERSION_META:?}] is missing"
        ))),
        None => Ok(version == MODERN),
    }
}

fn is_request(incoming: &Incoming) -> bool {
    matches!(incoming, Incoming::Single(Message::Request { .. }))
        || matches!(incoming, Incoming::Batch(ms) if ms.iter().any(|m| matches!(m, Message::Request { .. })))
}

/// One header's value: absent, or readable and not given twice.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RequestError> {
    let mut all = headers.get_all(name).iter();
    let Some(first) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(mismatch(format!("{name} is given more than once")));
    }
    first.to_str().map(Some).map_err(|_| {
        mismatch(format!(
            "{name} has characters a header value may not carry"
        ))
    })
}

/// A header value with MCP's Base64 sentinel (`=?base64?...?=`) decoded.
pub fn decode_value(v: &str) -> Result<String, RequestError> {
    let Some(payload) = v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Ok(v.to_owned());
    };
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| mismatch("a header carries a malformed base64 value"))
}

/// The body field `Mcp-Name` mirrors for `method`, if it mirrors one.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        // The tasks extension routes a task's requests by its id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some("taskId"),
        _ => None,
    }
}

/// `Mcp-Method` and `Mcp-Name` of a 2026-07-28 request against its body.
pub fn check_request_headers(
    headers: &HeaderMap,
    method: &str,
    params: &Value,
) -> Result<(), RequestError> {
    match single(headers, METHOD_HEADER.as_str())? {
        None => return Err(mismatch("the Mcp-Method header is required")),
        Some(m) if m != method => {
            return Err(mismatch(format!(
                "Mcp-Method header {m:?} does not match body method {method:?}"
            )));
        }
        Some(_) => {}
    }
    let Some(field) = name_field(method) else {
        return Ok(());
    };
    let body = params.get(field).and_then(Value::as_str);
    let header = single(headers, NAME_HEADER.as_str())?
        .map(decode_value)
        .transpose()?;
    match (header, body) {
        (None, None) => Ok(()),
        (Some(h), Some(b)) if h == b => Ok(()),
        (None, Some(_)) => Err(mismatch(format!(
            "the Mcp-Name header is required for {method}"
        ))),
        (h, b) => Err(mismatch(format!(
            "Mcp-Name header {h:?} does not match body params.{field} {b:?}"
        ))),
    }
}

/// How the body value reads as a header, before any Base64; None for values no header carries.
fn rendered(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether a decoded header value agrees with the body's; integers compare as numbers
/// (`42` and `42.0` agree).
fn agrees(kind: Option<&str>, body: &Value, header: &str) -> bool {
    if kind == Some("integer")
        && let (Some(b), Ok(h)) = (body.as_f64(), header.parse::<f64>())
        && b.fract() == 0.0
    {
        return b == h;
    }
    rendered(body).is_some_and(|r| r == header)
}

/// The `Mcp-Param-*` headers of a `tools/call` against its arguments: an annotated argument
/// given in the body needs its header, with the same value; a header for an argument the body
/// lacks disagrees too. Headers no annotation names are passed on untouched (the spec's rule).
pub fn check_param_headers(
    headers: &HeaderMap,
    annotated: &[ParamHeader],
    args: &Value,
) -> Result<(), RequestError> {
    for a in annotated {
        let name = format!("{PARAM_PREFIX}{}", a.token);
        let body = a
            .path
            .iter()
            .try_fold(args, |v, k| v.get(k))
            .filter(|v| !v.is_null());
        let header = single(headers, &name)?.map(decode_value).transpose()?;
        match (body, header) {
            (None, None) => {}
            (Some(b), Some(h)) if agrees(a.kind.as_deref(), b, &h) => {}
            (Some(_), None) => {
                return Err(mismatch(format!(
                    "the {name} header is required: the argument is given"
                )));
            }
            (b, h) => {
                return Err(mismatch(format!(
                    "{name} header {h:?} does not match argument /{} {}",
                    a.path.join("/"),
                    b.map_or("(absent)".to_owned(), Value::to_string)
                )));
            }
        }
    }
    Ok(())
}

/// The headers for a request the gateway makes itself in the client's name (`method`, no
/// name): the client's, with the mirrored ones replaced.
pub fn own_headers(client: &HeaderMap, method: &'static str) -> HeaderMap {
    let mut h = client.clone();
    let mirrored: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(PARAM_PREFIX))
        .cloned()
        .collect();
    for k in mirrored {
        h.remove(k);
    }
    h.remove(NAME_HEADER);
    h.insert(METHOD_HEADER, HeaderValue::from_static(method));
    h
}

/// The `_meta` of a 2026-07-28 request the gateway makes itself.
pub fn own_meta() -> Value {
    json!({ VERSION_META: MODERN, "io.modelcontextprotocol/clientCapabilities": {} })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn method_and_name_must_match_the_body() {
        let p = json!({"name": "get_weather"});
        let ok = headers(&[("mcp-method", "tools/call"), ("mcp-name", "get_weather")]);
        assert!(check_request_headers(&ok, "tools/call", &p).is_ok());
        let b64 = headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?Z2V0X3dlYXRoZXI=?="),
        ]);
        assert!(check_request_headers(&b64, "tools/call", &p).is_ok());
        for bad in [
            headers(&[("mcp-name", "get_weather")]),
            headers(&[("mcp-method", "tools/list"), ("mcp-name", "get_weather")]),
            headers(&[("mcp-method", "tools/call")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "other")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?!!?=")]),
            headers(&[
                ("mcp-method", "tools/call"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_weather"),
            ]),
        ] {
            assert!(
                check_request_headers(&bad, "tools/call", &p).is_err(),
                "{bad:?}"
            );
        }
        let list = headers(&[("mcp-method", "tools/list")]);
        assert!(check_request_headers(&list, "tools/list", &json!({})).is_ok());
        // A task's requests name the task in Mcp-Name, as the tasks extension routes them.
        let t = json!({"taskId": "airlock-task-1"});
        let get = headers(&[("mcp-method", "tasks/get"), ("mcp-name", "airlock-task-1")]);
        assert!(check_request_headers(&get, "tasks/get", &t).is_ok());
        for bad in [
            headers(&[
                ("mcp-method", "tasks/cancel"),
                ("mcp-name", "airlock-task-2"),
            ]),
            headers(&[("mcp-method", "tasks/cancel")]),
        ] {
            assert!(check_request_headers(&bad, "tasks/cancel", &t).is_err());
        }
    }

    #[test]
    fn param_headers_follow_their_annotations() {
        use crate::input_schema::annotations;
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "n": {"type": "integer", "x-mcp-header": "N"},
            "deep": {"type": "object", "properties": {"flag": {"type": "boolean", "x-mcp-header": "Flag"}}},
            "query": {"type": "string"},
        }});
        let mut a = annotations(&schema);
        a.sort_by(|x, y| x.token.cmp(&y.token));
        assert_eq!(
            a.iter().map(|x| x.token.as_str()).collect::<Vec<_>>(),
            ["flag", "n", "region"]
        );
        let args = json!({"region": "us-west1", "n": 42, "deep": {"flag": true}, "query": "q"});
        let good = headers(&[
            ("mcp-param-region", "us-west1"),
            ("Mcp-Param-N", "42.0"),
            ("mcp-param-flag", "true"),
        ]);
        assert!(check_param_headers(&good, &a, &args).is_ok());
        let wrong = headers(&[
            ("mcp-param-region", "eu-west1"),
            ("mcp-param-n", "42"),
            ("mcp-param-flag", "true"),
        ]);
        assert!(check_param_headers(&wrong, &a, &args).is_err());
        let missing = headers(&[("mcp-param-n", "42"), ("mcp-param-flag", "true")]);
        assert!(check_param_headers(&missing, &a, &args).is_err());
        let extra = headers(&[("mcp-param-region", "x")]);
        assert!(check_param_headers(&extra, &a, &json!({})).is_err());
        let unknown = headers(&[("mcp-param-other", "x")]);
        assert!(check_param_headers(&unknown, &a, &json!({})).is_ok());
    }
}
