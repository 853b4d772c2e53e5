//! The ticket-closed job: show the outcome on the message and remove its buttons.

use std::time::Duration;

use airlock_shared::TicketId;
use airlock_shared::TicketStatus;
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, PostedMessage};
use tracing::{debug, info, warn};

use crate::message;

use super::context::{Failure, Outcome};
use super::job::JobRun;

/// Longest gap between looks while an update waits for its message to be posted.
const UPDATE_POLL_MAX: Duration = Duration::from_secs(2);

impl JobRun {
    /// Shows the outcome on the approval message and removes its buttons.
    pub(super) async fn ticket_closed(&mut self, id: TicketId) -> Outcome {
        let mut poll = Duration::from_millis(50);
        loop {
            let t = match self.load(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Outcome::DeadLetter("no such ticket".into()),
                Err(o) => return o,
            };
            if t.status.is_pending() {
                warn!("the ticket is still pending; nothing to show yet");
                return Outcome::Done;
            }
            if let (Some(channel), Some(ts)) = (t.message_channel.clone(), t.message_ts.clone()) {
                let msg = message::closed(&t);
                let slack = self.p().slack.clone();
                let result = self
                    .slack(
                        "chat.update",
                        slack.update(&channel, &ts, &msg.text, &msg.blocks),
                    )
                    .await;
                match result {
                    Ok(_) => {
                        info!(status = %t.status, %channel, %ts, "approval message updated");
                        // Unrecorded, the reconciler sends this update once more: harmless.
                        if let Err(e) =
                            ticket::record_update(&self.p().pool, id, &ts, t.status).await
                        {
                            warn!(error = %chain(&e), "could not record what the message shows");
                        }
                        return Outcome::Done;
                    }
                    Err(e) => {
                        if let Some(o) = self.failed("chat.update", Failure::Slack(e)).await {
                            return o;
                        }
                        continue;
                    }
                }
            }
            if let Some(err) = &t.notify_error {
                info!(notify_error = %err, "the approval request was never posted; nothing to update");
                return Outcome::Done;
            }
            // A worker may have posted and crashed before recording: its claim has the ts.
            if let Ok(Some((channel, ts))) = self.p().claims.posted(id).await {
                let posted = PostedMessage {
                    ticket: id,
                    channel,
                    ts,
                    shown: TicketStatus::Pending,
                };
                if let Err(e) = ticket::record_message(&self.p().pool, &posted).await {
                    debug!(error = %chain(&e), "could not record the claimed message yet");
                }
                continue;
            }
            if self.started.elapsed() >= self.p().tuning.update_wait {
                return Outcome::DeadLetter(
                    "the approval request was never posted, so there is no message to update"
                        .into(),
                );
            }
            debug!(
                wait_ms = poll.as_millis() as u64,
                "message not posted yet; waiting"
            );
            if !self.pause(poll, true).await {
                return Outcome::GiveBack;
            }
            poll = (poll * 2).min(UPDATE_POLL_MAX);
        }
    }
}
