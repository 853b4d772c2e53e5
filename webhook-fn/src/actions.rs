//! `POST /slack/actions`: Slack's interactivity requests.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use airlock_shared::telemetry::chain;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::Instrument;

use crate::approval::{DecideError, Outcome};
use crate::interaction::{self, Button, Interaction, PayloadError};
use crate::signature::{SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER};
use crate::state::AppState;

/// Slack's interaction bodies are a few KiB; anything past this is not from Slack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a request to `/slack/actions` failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("body was not received in time")]
    BodyTimeout,
    #[error("reading the body failed")]
    BodyRead(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("request is not signed by Slack")]
    Signature(#[from] SignatureError),
    #[error("unreadable interaction payload")]
    Payload(#[from] PayloadError),
    #[error("recording the decision failed")]
    Decide(#[from] DecideError),
}

impl ActionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyRead(_) | Self::Signature(_) | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::Decide(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::BodyTimeout => "body_timeout",
            Self::BodyRead(_) => "body_read",
            Self::Signature(_) => "bad_signature",
            Self::Payload(_) => "bad_payload",
            Self::Decide(_) => "database_error",
        }
    }
}

/// The handler: verify, parse, decide; answer 200 with an empty body on success.
pub async fn actions(State(app): State<AppState>, req: Request) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "slack_action",
        ticket_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
        decision = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let result = handle(&app, req).instrument(span.clone()).await;
    let (label, response) = match result {
        Ok(label) => (label, StatusCode::OK.into_response()),
        Err(e) => {
            let status = e.status();
            span.in_scope(|| {
                if status.is_server_error() {
                    tracing::error!(status = status.as_u16(), error = %chain(&e), "slack action failed");
                } else {
                    tracing::warn!(status = status.as_u16(), error = %chain(&e), "slack action rejected");
                }
            });
            (
                e.label(),
                (status, status.canonical_reason().unwrap_or("")).into_response(),
            )
        }
    };
    span.record("outcome", label);
    app.metrics.requests.with_label_values(&[label]).inc();
    app.metrics
        .latency
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle(app: &AppState, req: Request) -> Result<&'static str, ActionError> {
    let (parts, body) = req.into_parts();
    let body = read_limited(&parts.headers, body, app.body_timeout).await?;
    app.verifier.verify(
        parts.headers.get(TIMESTAMP_HEADER).map(|v| v.as_bytes()),
        parts.headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes()),
        &body,
        unix_now(),
    )?;
    let click = match interaction::parse(&body)? {
        Interaction::Click(c) => c,
        Interaction::Ignored { kind } => {
            tracing::info!(kind, "interaction ignored");
            return Ok("ignored");
        }
    };
    let span = tracing::Span::current();
    span.record("ticket_id", tracing::field::display(click.ticket_id));
    span.record("user_id", click.user_id.as_str());
    span.record("decision", tracing::field::debug(click.decision));
    let traced = tracing::info_span!("click", ticket = %click.ticket_id, user_id = %click.user_id, button = ?click.button);
    app.approvals.join_trace(click.ticket_id, &traced).await;
    let outcome = async {
        match click.button {
            Button::Decide => app.approvals.apply(&click).await,
            Button::ApproveFor => app.approvals.apply_for(&click).await,
            Button::Revoke => app.approvals.revoke(&click).await,
        }
    }
    .instrument(traced)
    .await?;
    match &outcome {
        Outcome::Decided(status) => tracing::info!(%status, "ticket decided"),
        Outcome::Voted { approvals, needed } => {
            tracing::info!(
                approvals,
                needed,
                "approval counted; the ticket waits for more"
            )
        }
        Outcome::Refused(r) => tracing::info!(refusal = ?r, "click changed nothing"),
        Outcome::Revoked => tracing::info!("standing grant revoked"),
        Outcome::Foreign => {}
    }
    Ok(outcome.label())
}

/// Reads at most [`MAX_BODY_BYTES`]; a larger body is refused as soon as it shows, unread.
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    timeout: std::time::Duration,
) -> Result<Bytes, ActionError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ActionError::TooLarge);
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_| ActionError::BodyTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ActionError::TooLarge),
        Err(e) => Err(ActionError::BodyRead(e)),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
