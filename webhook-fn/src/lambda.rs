//! Running under AWS Lambda: function URL and API Gateway (REST and HTTP API) events.

use airlock_shared::telemetry;
use axum::Router;
use axum::http::Uri;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use tower::ServiceExt;
use tower::util::MapRequest;

use crate::config::TRACE_FLUSH_TIMEOUT;
use crate::state::AppState;

/// What `lambda_http::run` serves: [`crate::routes::app`] behind a rewrite that drops the API Gateway
/// stage (`/prod/slack/actions` → `/slack/actions`), so every event source reaches the same routes.
pub type LambdaService = MapRequest<Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// The Lambda service for `state`.
pub fn service(state: AppState) -> LambdaService {
    MapRequest::new(crate::routes::app(state), strip_stage as fn(_) -> _)
}

/// Serves invocations from the Lambda Runtime API until the runtime stops us; with traces
/// exported, each invocation sends its spans before it answers.
pub async fn run(state: AppState) -> Result<(), lambda_http::Error> {
    let app = service(state);
    lambda_http::run(lambda_http::service_fn(move |req| {
        let app = app.clone();
        async move {
            let answer = app.oneshot(req).await;
            if !telemetry::flush(TRACE_FLUSH_TIMEOUT).await {
                tracing::warn!(
                    "spans not sent within the invocation's bound; they wait for the next one"
                );
            }
            answer
        }
    }))
    .await
}

fn strip_stage(mut req: lambda_http::Request) -> lambda_http::Request {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        // Other event sources carry no stage.
        Some(_) | None => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default" && !s.is_empty()) else {
        return req;
    };
    let prefix = format!("/{stage}");
    let path = req.uri().path();
    let rest = match path.strip_prefix(&prefix) {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => return req,
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}
