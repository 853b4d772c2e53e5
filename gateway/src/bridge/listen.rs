//! The server-to-client stream across the bridge: a 2026-07-28 `subscriptions/listen` served
//! from an older upstream's GET stream, and an older client's GET stream served from a
//! 2026-07-28 `subscriptions/listen`. Both relay event by event, as the upstream sends them.

use std::sync::Arc;

use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::rewrite::{self, Mapper};
use super::to_legacy::{self, Closer, LegacySessions, Opened};
use super::to_modern::{ClientFacts, ModernUpstream};
use crate::error::UpstreamError;
use crate::sse;
use crate::upstream::{Outgoing, Upstream};

/// Where 2026-07-28 tags a message of a subscription.
const SUBSCRIPTION_META: &str = "io.modelcontextprotocol/subscriptionId";
const ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";
/// The id of the bridge's own `subscriptions/listen`.
const OWN_LISTEN: &str = "airlock-bridge-listen";

/// The change notifications a listen filter names, with their filter keys and the capability
/// that promises them.
const KINDS: &[(&str, &str, &str)] = &[
    (
        "toolsListChanged",
        "notifications/tools/list_changed",
        "tools",
    ),
    (
        "promptsListChanged",
        "notifications/prompts/list_changed",
        "prompts",
    ),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
        "resources",
    ),
];

/// The part of a client's filter an upstream with `caps` can honour over its GET stream
/// (`resourceSubscriptions` never: `resources/subscribe` does not cross the bridge).
pub fn honoured(filter: &Value, caps: &Value) -> Value {
    let mut out = Map::new();
    for (key, _, cap) in KINDS {
        let asked = filter.get(*key).and_then(Value::as_bool) == Some(true);
        let offered = caps
            .pointer(&format!("/{cap}/listChanged"))
            .and_then(Value::as_bool)
            == Some(true);
        if asked && offered {
            out.insert((*key).to_owned(), json!(true));
        }
    }
    Value::Object(out)
}

/// `subscriptions/listen` served from an older upstream: a session of the stream's own (one GET
/// stream per session is all some servers allow), its GET stream, the acknowledgement first,
/// then the notifications the client opted in to, tagged with the subscription's id.
pub async fn serve_listen(
    sessions: &LegacySessions,
    id: &Value,
    params: &Value,
) -> Result<reqwest::Response, UpstreamError> {
    let session = sessions.open_own().await?;
    let upstream = sessions.upstream().clone();
    let headers = to_legacy::headers_for(&session);
    let get = upstream
        .send(Outgoing {
            method: reqwest::Method::GET,
            body: None,
            headers: &headers,
            upstream_session: session.id.as_deref(),
        })
        .await?;
    let caps = session
        .init
        .get("capabilities")
        .cloned()
        .unwrap_or(Value::Null);
    let filter = params.get("notifications").cloned().unwrap_or(Value::Null);
    // An upstream without a GET stream (405) honours nothing; the stream still opens.
    let agreed = match get.status().is_success() {
        true => honoured(&filter, &caps),
        false => json!({}),
    };
    let ack = json!({"jsonrpc": "2.0", "method": ACKNOWLEDGED, "params": {
        "_meta": { SUBSCRIPTION_META: id }, "notifications": agreed }});
    let closed = json!({"jsonrpc": "2.0", "id": id, "result": {
        "resultType": "complete", "_meta": { SUBSCRIPTION_META: id }}});
    let relayed = get.status().is_success().then(|| {
        let map = tagged(
            upstream.clone(),
            session.clone(),
            id.clone(),
            agreed.clone(),
        );
        rewrite::events(get.bytes_stream().boxed(), map).boxed()
    });
    let closer = Closer(upstream, session);
    let body = async_stream::stream! {
        let _closer = closer;
        yield Ok::<_, reqwest::Error>(sse::message(&ack));
        match relayed {
            Some(mut events) => {
                while let Some(chunk) = events.next().await {
                    let broke = chunk.is_err();
                    yield chunk;
                    if broke {
                        return;
                    }
                }
                // The upstream ended the stream: the subscription ends gracefully.
                yield Ok(sse::message(&closed));
            }
            None => futures::future::pending::<()>().await,
        }
    };
    Ok(rewrite::made(
        reqwest::StatusCode::OK,
        "text/event-stream",
        reqwest::Body::wrap_stream(body),
    ))
}

/// The GET stream's messages as the subscription's: notifications of the kinds agreed, tagged;
/// requests from the upstream answered by the bridge; the rest (the client never asked) dropped.
fn tagged(upstream: Upstream, session: Arc<Opened>, id: Value, agreed: Value) -> Mapper {
    Box::new(move |mut m: Value| {
        if rewrite::is_request(&m) {
            to_legacy::refuse_upstream(&upstream, &session, &m);
            return None;
        }
        let method = m.get("method").and_then(Value::as_str)?;
        let wanted = KINDS
            .iter()
            .any(|(key, kind, _)| *kind == method && agreed.get(*key).is_some());
        if !wanted {
            return None;
        }
        let params = m
            .as_object_mut()?
            .entry("params")
            .or_insert_with(|| json!({}));
        let meta = params
            .as_object_mut()?
            .entry("_meta")
            .or_insert_with(|| json!({}));
        meta.as_object_mut()?
            .insert(SUBSCRIPTION_META.to_owned(), id.clone());
        Some(m)
    })
}

/// An older client's GET stream served from a 2026-07-28 `subscriptions/listen` that asks for
/// every list change: the notifications pass without the subscription's tags, the
/// acknowledgement and the closing answer stay with the bridge.
pub async fn serve_get(
    modern: &ModernUpstream,
    facts: &ClientFacts,
) -> Result<reqwest::Response, UpstreamError> {
    let mut filter = Map::new();
    for (key, _, _) in KINDS {
        filter.insert((*key).to_owned(), json!(true));
    }
    let listen = json!({"jsonrpc": "2.0", "id": OWN_LISTEN, "method": "subscriptions/listen",
        "params": {"notifications": filter, "_meta": facts.meta()}});
    let resp = modern.send_modern(&listen).await?;
    let map: Mapper = Box::new(|mut m: Value| {
        if m.get("method").and_then(Value::as_str) == Some(ACKNOWLEDGED)
            || m.get("method").is_none()
        {
            return None;
        }
        if let Some(meta) = m
            .pointer_mut("/params/_meta")
            .and_then(Value::as_object_mut)
        {
            meta.remove(SUBSCRIPTION_META);
        }
        Some(m)
    });
    Ok(rewrite::map_answer(resp, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_was_asked_and_offered_is_honoured() {
        let caps = json!({"tools": {"listChanged": true}, "prompts": {}, "resources": {"listChanged": true, "subscribe": true}});
        let filter = json!({"toolsListChanged": true, "promptsListChanged": true, "resourceSubscriptions": ["file:///a"]});
        assert_eq!(honoured(&filter, &caps), json!({"toolsListChanged": true}));
    }

    #[tokio::test]
    async fn notifications_are_tagged_and_the_unasked_dropped() {
        let u = Upstream::new(
            "http://127.0.0.1:9/mcp".into(),
            std::time::Duration::from_secs(1),
            1,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        let s = Arc::new(Opened {
            id: None,
            version: "2025-06-18".into(),
            init: json!({}),
        });
        let mut map = tagged(u, s, json!(7), json!({"toolsListChanged": true}));
        let t =
            map(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})).unwrap();
        assert_eq!(t["params"]["_meta"][SUBSCRIPTION_META], 7);
        assert!(map(json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "x"}})).is_none());
        assert!(
            map(json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"}))
                .is_none()
        );
    }
}
