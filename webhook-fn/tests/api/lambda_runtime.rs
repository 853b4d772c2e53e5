//! A local Lambda Runtime API for the real binary: it hands out queued events and collects the
//! responses; with no event queued, `next` waits, as Lambda holds a frozen instance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_test_support::{TestDb, TestRedis};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use crate::helpers::*;

/// A local Lambda Runtime API: hands out queued events, collects responses.
#[derive(Clone)]
pub struct Runtime {
    events: Arc<Mutex<mpsc::UnboundedReceiver<(String, String)>>>,
    results: mpsc::UnboundedSender<(String, Value)>,
}

async fn next_invocation(State(rt): State<Runtime>) -> (HeaderMap, String) {
    let (id, event) = rt.events.lock().await.recv().await.unwrap_or_default();
    let mut h = HeaderMap::new();
    let deadline = (std::time::SystemTime::now() + Duration::from_secs(30))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    h.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&id).unwrap(),
    );
    h.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.to_string()).unwrap(),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:airlock-webhook"),
    );
    h.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-5759e988-bd862e3fe1be46a994272793"),
    );
    (h, event)
}

async fn invocation_response(
    State(rt): State<Runtime>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> StatusCode {
    let v: Value = serde_json::from_str(&body).unwrap_or(json!({"raw": body}));
    let _ = rt.results.send((format!("{id}/{kind}"), v));
    StatusCode::ACCEPTED
}

async fn init_error(State(rt): State<Runtime>, body: String) -> StatusCode {
    let _ = rt.results.send(("init/error".into(), json!({"raw": body})));
    StatusCode::ACCEPTED
}

pub fn url_event(req_body: &[u8], ts: &str, sig: &str) -> String {
    let mut v: Value = serde_json::from_str(include_str!("events/function_url.json")).unwrap();
    v["rawPath"] = json!("/slack/actions");
    v["rawQueryString"] = json!("");
    v["requestContext"]["http"]["method"] = json!("POST");
    v["requestContext"]["http"]["path"] = json!("/slack/actions");
    let h = v["headers"].as_object_mut().unwrap();
    h.insert(
        "content-type".into(),
        json!("application/x-www-form-urlencoded"),
    );
    h.insert("x-slack-request-timestamp".into(), json!(ts));
    h.insert("x-slack-signature".into(), json!(sig));
    v["body"] = json!(B64.encode(req_body));
    v["isBase64Encoded"] = json!(true);
    v.to_string()
}

/// Starts a Runtime API on port 0: its address, where to queue `(request id, event)`, and
/// where `("{id}/response" | "{id}/error" | "init/error", body)` come out.
pub async fn start_runtime() -> (
    SocketAddr,
    mpsc::UnboundedSender<(String, String)>,
    mpsc::UnboundedReceiver<(String, Value)>,
) {
    let (event_tx, event_rx) = mpsc::unbounded_channel();
    let (result_tx, result_rx) = mpsc::unbounded_channel();
    let rt = Runtime {
        events: Arc::new(Mutex::new(event_rx)),
        results: result_tx,
    };
    let api = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
        .route(
            "/2018-06-01/runtime/invocation/{id}/{kind}",
            post(invocation_response),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api).await.unwrap() });
    (addr, event_tx, result_rx)
}

/// The environment Lambda gives the function, beside the webhook's own.
pub fn lambda_env(db: &TestDb, redis: &TestRedis, api: SocketAddr) -> HashMap<String, String> {
    let mut env = base_env(db, redis);
    env.extend(
        [
            ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "airlock-webhook".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/airlock-webhook".to_owned(),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/29/[$LATEST]abc".to_owned(),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    env
}
