//! A call's arguments against its tool's `inputSchema`, listing the upstream's tools first
//! when the gateway has no schema for the tool yet.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::answer::Whole;
use crate::caller::Caller;
use crate::era;
use crate::input_schema::{self, ArgumentsError, InputSchemas, Lookup};
use crate::mcp::TOOLS_LIST;
use crate::upstream_session::UpstreamSessions;

/// Pages of `tools/list` read at most while looking for one tool's schema.
const MAX_LIST_PAGES: usize = 20;

/// Checks `args` against `tool`'s schema; a call it cannot check is refused.
pub async fn check_arguments(
    schemas: &InputSchemas,
    link: &UpstreamSessions,
    c: &Caller,
    tool: &str,
    args: &Value,
) -> Result<(), ArgumentsError> {
    let session = c.sid.0.as_str();
    if let Lookup::Found(s) = schemas.lookup(tool, session) {
        return input_schema::check(&s, args);
    }
    let _one = schemas.listing.lock().await;
    match schemas.lookup(tool, session) {
        Lookup::Found(s) => return input_schema::check(&s, args),
        Lookup::Missing { listed: true } => {
            return Err(ArgumentsError::UnknownTool(tool.to_owned()));
        }
        Lookup::Missing { listed: false } => {}
    }
    list_tools(schemas, link, c, tool)
        .await
        .map_err(ArgumentsError::Unlisted)?;
    match schemas.lookup(tool, session) {
        Lookup::Found(s) => input_schema::check(&s, args),
        Lookup::Missing { .. } => Err(ArgumentsError::UnknownTool(tool.to_owned())),
    }
}

/// Reads `tools/list` page by page into the schemas, until the tool turns up.
pub async fn list_tools(
    schemas: &InputSchemas,
    link: &UpstreamSessions,
    c: &Caller,
    tool: &str,
) -> Result<(), String> {
    // A request of our own: 2026-07-28 headers mirror its body, not the client's.
    let headers = match c.session {
        Some(_) => c.headers.clone(),
        None => era::own_headers(&c.headers, TOOLS_LIST),
    };
    let mut cursor: Option<String> = None;
    for page in 0..MAX_LIST_PAGES {
        let id = json!(format!("airlock-schemas-{page}"));
        let mut params = cursor
            .as_ref()
            .map_or(json!({}), |c| json!({ "cursor": c }));
        if c.session.is_none() {
            params["_meta"] = era::own_meta();
        }
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params });
        let resp = c
            .send(link, Bytes::from(body.to_string()), &headers)
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("upstream answered HTTP {}", resp.status().as_u16()));
        }
        let answer = Whole::read(resp, &id).await.map_err(|e| e.to_string())?;
        let response = answer
            .response
            .ok_or("upstream gave no answer to tools/list")?;
        let Some(result) = response.get("result") else {
            let code = response.pointer("/error/code").and_then(Value::as_i64);
            return Err(format!("upstream refused tools/list (code {code:?})"));
        };
        schemas.put_page(cursor.as_deref().unwrap_or_default(), result);
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            schemas.mark_listed(&c.sid.0);
            return Ok(());
        }
        if let Lookup::Found(_) = schemas.lookup(tool, &c.sid.0) {
            return Ok(());
        }
    }
    Ok(())
}
