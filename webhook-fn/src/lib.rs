//! Airlock's Slack webhook: the one door through which approval decisions enter the system.
//!
//! A click is verified against Slack's signing secret, authorised, and written to Postgres with
//! one conditional update (the first decision wins). Only after that commit does the webhook
//! publish a hint for gateways and queue a job for the notifier. The same [`app`] serves a plain
//! HTTP listener and AWS Lambda (function URL or API Gateway events).

pub mod actions;
pub mod approval;
pub mod config;
pub mod grant;
pub mod interaction;
pub mod lambda;
pub mod membership;
pub mod metrics;
pub mod routes;
pub mod signature;
pub mod state;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use routes::app;
pub use state::{AppState, Inner, StartError, build};

use crate::config::Config;

/// Serves `router` on `listener` within `edge`'s limits until `shutdown` completes, then
/// drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    edge: &airlock_shared::edge::Edge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // A declared body over the click handler's own limit is refused before it is read.
    let edge = airlock_shared::edge::Edge {
        max_body_bytes: actions::MAX_BODY_BYTES,
        ..edge.clone()
    };
    airlock_shared::edge::Server::new(edge)
        .serve(listener, router, shutdown)
        .await;
    Ok(())
}

/// Runs the webhook in the mode the environment asks for, until SIGTERM (or Lambda stops us).
pub async fn run(config: Config) -> Result<(), StartError> {
    let state = build(&config).await?;
    if config.lambda {
        tracing::info!("running under the Lambda runtime");
        return lambda::run(state).await.map_err(StartError::Lambda);
    }
    let router = app(state);
    let addr = config.listen_addr.to_string();
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Serve {
            addr: addr.clone(),
            source,
        })?;
    tracing::info!(%addr, "listening");
    let shutdown = airlock_shared::shutdown::on_signal();
    serve(listener, router, &config.edge, async move {
        shutdown.cancelled().await;
    })
    .await
    .map_err(|source| StartError::Serve { addr, source })
}
