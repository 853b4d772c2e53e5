//! The whole Airlock system, locally: a Slack emulator ([`slack`]) that a person can click in a
//! browser, and a demo upstream MCP server ([`demo_upstream`]) whose tools fit the demo policy.
//! Both are binaries here; the end-to-end tests in `tests/e2e.rs` run them with the real
//! gateway, webhook and notifier as separate processes.

pub mod demo_upstream;
pub mod slack;

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
