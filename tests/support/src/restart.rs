//! The restart-and-retry scenario, run by the gateway's API tests (in process) and by the
//! end-to-end tests (real binaries): a held call is cut by a gateway restart, the client retries
//! the same call, and the retry reattaches to the ticket that is already waiting.

use std::time::Duration;

use airlock_shared::{TicketId, TicketStatus};
use tokio::task::JoinHandle;

/// A stack that can hold a call, restart its gateway and retry the call.
#[allow(async_fn_in_trait, reason = "test support, awaited in place")]
pub trait RestartStack {
    /// Makes the held call and returns its ticket once the approval request is out.
    async fn hold(&mut self) -> TicketId;
    /// Stops the gateway (grace period and all); the held call's refusal message.
    async fn stop_gateway(&mut self) -> String;
    /// Starts a gateway on the same database, Redis and upstream.
    async fn start_gateway(&mut self);
    /// The same call again in the same session; `Err` with what came back when it is refused.
    fn retry(&mut self) -> JoinHandle<Result<(), String>>;
    /// How many approval requests were sent for any ticket.
    async fn approval_requests(&self) -> usize;
    /// A person approves the ticket.
    async fn approve(&mut self, id: TicketId);
    /// The ticket's status.
    async fn status(&self, id: TicketId) -> TicketStatus;
    /// How many times the upstream ran a call.
    async fn executions(&self) -> usize;
}

/// Runs the scenario; `settle` is how long the retry must keep waiting before the approval.
pub async fn a_retry_after_a_restart_reattaches(stack: &mut impl RestartStack, settle: Duration) {
    let id = stack.hold().await;
    let refused = stack.stop_gateway().await;
    assert!(
        refused.contains("approval interrupted"),
        "the held call is interrupted: {refused}"
    );
    assert_eq!(
        stack.status(id).await,
        TicketStatus::Pending,
        "the ticket outlives the gateway"
    );
    stack.start_gateway().await;

    let retry = stack.retry();
    tokio::time::sleep(settle).await;
    assert!(!retry.is_finished(), "the retry waits on the same ticket");
    assert_eq!(
        stack.approval_requests().await,
        1,
        "no second approval request"
    );
    stack.approve(id).await;
    let answer = tokio::time::timeout(Duration::from_secs(20), retry)
        .await
        .expect("the retry answers once approved")
        .expect("the retry task");
    if let Err(e) = answer {
        panic!("the retry runs once approved: {e}");
    }
    assert_eq!(stack.status(id).await, TicketStatus::Executed);
    assert_eq!(stack.executions().await, 1, "exactly one execution");
}
