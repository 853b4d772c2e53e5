//! The ticket-closed and ticket-voted jobs: show the outcome on the message and remove its
//! buttons, or, while a quorum is incomplete, show who approved so far.

use std::time::Duration;

use airlock_shared::TicketId;
use airlock_shared::TicketStatus;
use airlock_shared::grant;
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, PostedMessage, Ticket};
use chrono::Utc;
use tracing::{debug, info, warn};

use crate::message;

use super::context::{Failure, Outcome};
use super::job::JobRun;

/// Longest gap between looks while an update waits for its message to be posted.
const UPDATE_POLL_MAX: Duration = Duration::from_secs(2);

impl JobRun {
    /// Shows the outcome on the approval message and removes its buttons; on a pending ticket
    /// with approvals, shows the progress and keeps the buttons.
    pub(super) async fn ticket_closed(&mut self, id: TicketId) -> Outcome {
        let mut poll = Duration::from_millis(50);
        loop {
            let t = match self.load(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Outcome::DeadLetter("no such ticket".into()),
                Err(o) => return o,
            };
            let progress = t.status.is_pending();
            if progress && (t.approved_by_ids.is_empty() || t.message_ts.is_none()) {
                // Not posted yet: the post itself will show the progress.
                debug!("the ticket is still pending with nothing new to show");
                return Outcome::Done;
            }
            if let (Some(channel), Some(ts)) = (t.message_channel.clone(), t.message_ts.clone()) {
                let msg = match self.message_for(&t, progress).await {
                    Ok(m) => m,
                    Err(o) => return o,
                };
                let slack = self.p().slack.clone();
                let result = self
                    .slack(
                        "chat.update",
                        slack.update(&channel, &ts, &msg.text, &msg.blocks),
                    )
                    .await;
                match result {
                    Ok(_) if progress => {
                        info!(approvals = t.approved_by_ids.len(), %channel, %ts, "approval progress shown");
                        // The decision's own update may have gone out before this one: if the
                        // ticket is decided by now, go round again so the message ends on it.
                        match self.load(id).await {
                            Ok(Some(now)) if !now.status.is_pending() => continue,
                            _ => return Outcome::Done,
                        }
                    }
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
            if self.recover_claimed_post(id).await {
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

    /// The progress message, or the decided one with the state of the grant the ticket made
    /// (one more read, only for tickets that offered one).
    async fn message_for(
        &mut self,
        t: &Ticket,
        progress: bool,
    ) -> Result<message::Rendered, Outcome> {
        if progress {
            return Ok(message::approval_request(t));
        }
        if t.grant_for_secs.is_none() {
            return Ok(message::closed(t));
        }
        loop {
            match grant::for_ticket(&self.p().pool, t.id).await {
                Ok(g) => return Ok(message::closed_with_grant(t, g.as_ref(), Utc::now())),
                Err(e) => {
                    if let Some(o) = self.failed("reading the grant", Failure::Db(e)).await {
                        return Err(o);
                    }
                }
            }
        }
    }

    /// A worker may have posted and crashed before recording: its claim has the ts. Says
    /// whether there was one (recorded now, so the next look finds the message).
    async fn recover_claimed_post(&self, id: TicketId) -> bool {
        let Ok(Some((channel, ts))) = self.p().claims.posted(id).await else {
            return false;
        };
        let posted = PostedMessage {
            ticket: id,
            channel,
            ts,
            shown: TicketStatus::Pending,
        };
        if let Err(e) = ticket::record_message(&self.p().pool, &posted).await {
            debug!(error = %chain(&e), "could not record the claimed message yet");
        }
        true
    }
}
