//! Lambda mode gives the same answers as the HTTP server, for function URL and API Gateway events.
//!
//! The event files in `events/` are recorded events as shipped with `lambda_http`'s own tests
//! (function URL, API Gateway REST proxy, API Gateway HTTP API); each test fills in the method,
//! path, headers and body of the request it sends.

use std::time::Duration;

use airlock_shared::buttons::APPROVE_ACTION_ID;
use airlock_shared::{TicketId, TicketStatus};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Adapter, Context, LambdaEvent};
use serde_json::{Value, json};
use webhook_fn::actions::MAX_BODY_BYTES;
use webhook_fn::signature;

use crate::helpers::*;

#[derive(Clone, Copy, Debug)]
enum Source {
    FunctionUrl,
    RestApi,
    HttpApi,
    /// An HTTP API on a named stage: the path arrives as `/prod/...`.
    HttpApiStage,
}

const SOURCES: [Source; 4] = [
    Source::FunctionUrl,
    Source::RestApi,
    Source::HttpApi,
    Source::HttpApiStage,
];

/// One request, as both paths will send it.
struct Req {
    method: &'static str,
    path: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn event(source: Source, req: &Req) -> String {
    let fixture = match source {
        Source::FunctionUrl => include_str!("events/function_url.json"),
        Source::RestApi => include_str!("events/apigw_rest.json"),
        Source::HttpApi | Source::HttpApiStage => include_str!("events/apigw_http.json"),
    };
    let mut v: Value = serde_json::from_str(fixture).unwrap();
    // REST events carry text bodies; URL and HTTP API events carry base64, as AWS sends forms.
    let (body, b64) = match source {
        Source::RestApi => (String::from_utf8(req.body.clone()).unwrap(), false),
        _ => (B64.encode(&req.body), true),
    };
    match source {
        Source::RestApi => {
            v["path"] = json!(req.path);
            v["httpMethod"] = json!(req.method);
            v["requestContext"]["httpMethod"] = json!(req.method);
            v["queryStringParameters"] = Value::Null;
            let headers = v["headers"].as_object_mut().unwrap();
            headers.retain(|k, _| k != "Accept-Encoding");
            let mut multi = serde_json::Map::new();
            for (k, val) in headers.iter() {
                multi.insert(k.clone(), json!([val]));
            }
            for (k, val) in &req.headers {
                headers.insert(k.clone(), json!(val));
                multi.insert(k.clone(), json!([val]));
            }
            v["multiValueHeaders"] = Value::Object(multi);
        }
        Source::FunctionUrl | Source::HttpApi | Source::HttpApiStage => {
            let path = match source {
                Source::HttpApiStage => {
                    v["requestContext"]["stage"] = json!("prod");
                    format!("/prod{}", req.path)
                }
                _ => req.path.to_owned(),
            };
            v["rawPath"] = json!(path);
            v["rawQueryString"] = json!("");
            v.as_object_mut().unwrap().remove("queryStringParameters");
            v["requestContext"]["http"]["method"] = json!(req.method);
            v["requestContext"]["http"]["path"] = json!(path);
            let headers = v["headers"].as_object_mut().unwrap();
            for (k, val) in &req.headers {
                headers.insert(k.to_lowercase(), json!(val));
            }
        }
    }
    v["body"] = json!(body);
    v["isBase64Encoded"] = json!(b64);
    v.to_string()
}

/// Runs one event through lambda_http's own conversion (what `lambda_http::run` does per
/// invocation) and returns (status, body text).
async fn via_lambda(app: &TestApp, source: Source, req: &Req) -> (u16, String) {
    let raw = event(source, req);
    let parsed: LambdaRequest = serde_json::from_str(&raw).unwrap();
    let adapter = Adapter::from(webhook_fn::lambda::service(app.state.clone()));
    let resp = adapter
        .oneshot(LambdaEvent::new(parsed, Context::default()))
        .await
        .unwrap();
    let v = serde_json::to_value(&resp).unwrap();
    decode_response(&v)
}

pub fn decode_response(v: &Value) -> (u16, String) {
    let status = v["statusCode"].as_u64().unwrap() as u16;
    let body = match (&v["body"], v["isBase64Encoded"].as_bool().unwrap_or(false)) {
        (Value::Null, _) => String::new(),
        (Value::String(s), true) => String::from_utf8(B64.decode(s).unwrap()).unwrap(),
        (Value::String(s), false) => s.clone(),
        (other, _) => panic!("unexpected body {other}"),
    };
    (status, body)
}

async fn via_http(app: &TestApp, req: &Req) -> (u16, String) {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut r = app
        .http
        .request(method, format!("{}{}", app.base, req.path))
        .body(req.body.clone());
    for (k, v) in &req.headers {
        r = r.header(k, v);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn signed(body: Vec<u8>, ts: i64) -> Req {
    let ts = ts.to_string();
    let sig = signature::sign(SECRET, &ts, &body);
    Req {
        method: "POST",
        path: "/slack/actions",
        headers: vec![
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("X-Slack-Request-Timestamp".into(), ts),
            ("X-Slack-Signature".into(), sig),
        ],
        body,
    }
}

/// Each case builds a request for a fresh ticket and says which final state it leaves.
async fn cases(app: &TestApp) -> Vec<(&'static str, Req, TicketId, TicketStatus)> {
    let now = unix_now();
    let mut out = Vec::new();

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let body = form(&click_payload(
        APPROVE_ACTION_ID,
        &id.to_string(),
        "U0LAM",
        "ana+bob%41 ✓",
    ));
    out.push(("approve", signed(body, now), id, TicketStatus::Approved));

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let mut req = signed(approve_body(id, "U1"), now);
    req.headers[2].1 = signature::sign("not-the-secret", &now.to_string(), &req.body);
    out.push(("bad signature", req, id, TicketStatus::Pending));

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    out.push((
        "stale",
        signed(approve_body(id, "U1"), now - 400),
        id,
        TicketStatus::Pending,
    ));

    let id = app.open_ticket(&["U0BOSS"], Duration::from_secs(600)).await;
    out.push((
        "not an approver",
        signed(approve_body(id, "U1"), now),
        id,
        TicketStatus::Pending,
    ));

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let body = form(&click_payload(APPROVE_ACTION_ID, "nope", "U1", "u"));
    out.push(("invalid id", signed(body, now), id, TicketStatus::Pending));

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let mut body = approve_body(id, "U1");
    body.extend_from_slice(b"&pad=");
    body.resize(MAX_BODY_BYTES + 10, b'a');
    out.push(("oversized", signed(body, now), id, TicketStatus::Pending));

    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let mut req = signed(approve_body(id, "U1"), now);
    req.headers.retain(|(k, _)| k != "X-Slack-Signature");
    out.push(("missing signature", req, id, TicketStatus::Pending));

    out
}

#[tokio::test]
async fn lambda_events_get_the_same_answers_as_http() {
    let app = spawn_app().await;
    let health = Req {
        method: "GET",
        path: "/healthz",
        headers: vec![],
        body: vec![],
    };
    let expected_http = via_http(&app, &health).await;
    assert_eq!(expected_http, (200, "ok".into()));
    for source in SOURCES {
        assert_eq!(
            via_lambda(&app, source, &health).await,
            expected_http,
            "{source:?}"
        );
    }

    let mut compared = 0;
    for source in SOURCES {
        let over_http = cases(&app).await;
        let over_lambda = cases(&app).await;
        for ((name, h, h_id, want), (_, l, l_id, _)) in over_http.into_iter().zip(over_lambda) {
            let by_http = via_http(&app, &h).await;
            let by_lambda = via_lambda(&app, source, &l).await;
            assert_eq!(by_lambda, by_http, "{source:?} / {name}");
            let (ht, lt) = (app.ticket(h_id).await, app.ticket(l_id).await);
            assert_eq!(ht.status, want, "http / {name}");
            assert_eq!(lt.status, want, "{source:?} / {name}");
            assert_eq!(
                lt.decided_by_name, ht.decided_by_name,
                "{source:?} / {name}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 7 * SOURCES.len());
    let decided = app
        .jobs()
        .await
        .iter()
        .filter(|j| matches!(j, airlock_shared::NotifyJob::TicketClosed { .. }))
        .count();
    // One approval per path per source.
    assert_eq!(decided, 2 * SOURCES.len());
}

#[test]
fn recorded_events_parse_as_the_sources_we_claim() {
    let req = Req {
        method: "POST",
        path: "/slack/actions",
        headers: vec![],
        body: b"payload=%7B%7D".to_vec(),
    };
    for source in SOURCES {
        let parsed: LambdaRequest = serde_json::from_str(&event(source, &req)).unwrap();
        let ok = matches!(
            (source, &parsed),
            (Source::RestApi, LambdaRequest::ApiGatewayV1(_))
                | (
                    Source::FunctionUrl | Source::HttpApi | Source::HttpApiStage,
                    LambdaRequest::ApiGatewayV2(_)
                )
        );
        assert!(ok, "{source:?} parsed as {:?}", parsed.request_origin());
        let http: lambda_http::http::Request<lambda_http::Body> = parsed.into();
        // Base64 bodies are decoded before the router sees them.
        assert_eq!(http.body().as_ref(), b"payload=%7B%7D", "{source:?}");
    }
}
