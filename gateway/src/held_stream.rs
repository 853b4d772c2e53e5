//! The SSE answer of a held call: keepalives (progress notifications or comments) while it
//! waits for a person, then the upstream's own answer in the same stream.

use std::future::Future;
use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::error::upstream_error;
use crate::sse;
use crate::transport::{is_event_stream, progress_event, sse_response};

enum Step {
    Done(Response),
    Tick,
}

/// Answers a held call over SSE at once: keepalives while `fut` waits for a person (progress
/// notifications if the request carried a progress token, else comments), then whatever
/// `fut` answers, in the same stream. Dropping the stream (client gone) drops `fut`.
pub fn held_stream<F>(
    fut: F,
    keepalive: Duration,
    progress_token: Option<Value>,
    waiting_for: String,
) -> Response
where
    F: Future<Output = Response> + Send + 'static,
{
    sse_response(async_stream::stream! {
        let mut fut = Box::pin(fut);
        let mut tick = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let resp = loop {
            let step = tokio::select! {
                r = &mut fut => Step::Done(r),
                _ = tick.tick() => Step::Tick,
            };
            match step {
                Step::Done(r) => break r,
                Step::Tick => {
                    n += 1;
                    yield Ok::<Bytes, std::io::Error>(match &progress_token {
                        Some(t) => progress_event(t, n, &waiting_for),
                        None => sse::comment("waiting for approval"),
                    });
                }
            }
        };
        if is_event_stream(resp.headers()) {
            let mut body = resp.into_body().into_data_stream();
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(b) => yield Ok(b),
                    Err(e) => {
                        yield Err(std::io::Error::other(e));
                        break;
                    }
                }
            }
        } else {
            // A JSON answer becomes one event; `data:` must be a single line.
            let out = match resp.into_body().collect().await {
                Ok(c) => match serde_json::from_slice::<Value>(&c.to_bytes()) {
                    Ok(v) => sse::message(&v),
                    Err(e) => sse::message(&upstream_error(&Value::Null, &e.to_string())),
                },
                Err(e) => sse::message(&upstream_error(&Value::Null, &e.to_string())),
            };
            yield Ok(out);
        }
    })
}
