//! The approval-request job: post the message once per ticket and record it.

use std::time::Duration;

use airlock_shared::TicketId;
use airlock_shared::TicketStatus;
use airlock_shared::telemetry::chain;
use airlock_shared::ticket::{self, PostedMessage};
use tracing::{debug, info, warn};

use crate::claim::Claim;
use crate::message;
use crate::web_api::Posted;

use super::context::{Failure, Outcome};
use super::job::JobRun;

/// How often a job whose ticket is being posted by someone else looks again.
const BUSY_POLL: Duration = Duration::from_millis(100);

impl JobRun {
    /// Posts the approval request once per ticket.
    pub(super) async fn approval_request(&mut self, id: TicketId) -> Outcome {
        let holder = self.holder();
        loop {
            let t = match self.load(id).await {
                Ok(Some(t)) => t,
                Ok(None) => return Outcome::DeadLetter("no such ticket".into()),
                Err(o) => return o,
            };
            if t.message_ts.is_some() {
                debug!("already posted; nothing to do");
                return Outcome::Done;
            }
            let channel = t
                .slack_channel
                .clone()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| self.p().default_channel.clone());
            match self.paced(&channel).await {
                Ok(()) => {}
                Err(Some(o)) => return o,
                Err(None) => continue,
            }
            match self.p().claims.acquire(id, &holder).await {
                Ok(Claim::Acquired) => {}
                Ok(Claim::Busy) => {
                    debug!("another worker is posting this ticket; waiting");
                    if !self.pause(BUSY_POLL, false).await {
                        return Outcome::GiveBack;
                    }
                    continue;
                }
                Ok(Claim::Posted { channel, ts }) => {
                    info!(%channel, %ts, "a message was posted but not recorded; recording it");
                    // What it showed is unknown; "pending" at worst costs one needless update.
                    let posted = Posted { channel, ts };
                    return self.record_posted(id, &posted, TicketStatus::Pending).await;
                }
                Err(e) => match self.failed("claiming the post", Failure::Redis(e)).await {
                    Some(o) => return o,
                    None => continue,
                },
            }
            // Before the buttons appear: the first click should find its members stored.
            if !t.approver_groups.is_empty() {
                self.p().usergroups.prepare(&t.approver_groups).await;
            }
            // No second read under the claim: a holder that posted before us left "posted" in
            // the claim (kept for a day), which `acquire` reported above; and if even that was
            // lost, recording keeps the first message and deletes ours.
            let msg = message::approval_request(&t);
            let slack = self.p().slack.clone();
            let result = self
                .slack(
                    "chat.postMessage",
                    slack.post_message(&channel, &msg.text, &msg.blocks),
                )
                .await;
            match result {
                Ok(posted) => {
                    if let Err(e) = self
                        .p()
                        .claims
                        .mark_posted(id, &posted.channel, &posted.ts)
                        .await
                    {
                        warn!(error = %chain(&e), "could not keep the posted ts in Redis");
                    }
                    info!(channel = %posted.channel, ts = %posted.ts, "approval request posted");
                    return self.record_posted(id, &posted, t.status).await;
                }
                Err(e) => {
                    let _ = self.p().claims.release(id, &holder).await;
                    if let Some(o) = self.failed("chat.postMessage", Failure::Slack(e)).await {
                        return o;
                    }
                }
            }
        }
    }

    /// Waits for a posting slot in `channel`: `Ok` to go on, `Err(None)` to try again, and
    /// `Err(Some(_))` to end the job.
    async fn paced(&mut self, channel: &str) -> Result<(), Option<Outcome>> {
        match self.p().pacer.reserve(channel).await {
            Ok(wait) if wait.is_zero() => Ok(()),
            Ok(wait) => match self.pause(wait, false).await {
                true => Ok(()),
                false => Err(Some(Outcome::GiveBack)),
            },
            Err(e) => Err(self
                .failed("reserving a posting slot", Failure::Redis(e))
                .await),
        }
    }

    /// Stores the posted message, and the state its body `shown`, on the ticket; if another
    /// message won, deletes ours.
    pub(super) async fn record_posted(
        &mut self,
        id: TicketId,
        posted: &Posted,
        shown: TicketStatus,
    ) -> Outcome {
        let record = PostedMessage {
            ticket: id,
            channel: posted.channel.clone(),
            ts: posted.ts.clone(),
            shown,
        };
        let mut batched = self
            .ctx
            .records
            .submit(record.clone())
            .await
            .map(Ok::<_, sqlx::Error>);
        loop {
            let recorded = match batched.take() {
                Some(r) => r,
                None => ticket::record_message(&self.p().pool, &record).await,
            };
            match recorded {
                Ok(Some(row)) => {
                    if row.message_ts.as_deref() != Some(posted.ts.as_str()) {
                        warn!(ours = %posted.ts, kept = ?row.message_ts, "another message was recorded first; deleting ours");
                        self.p().metrics.duplicates_removed.inc();
                        let slack = self.p().slack.clone();
                        if let Err(e) = self
                            .slack("chat.delete", slack.delete(&posted.channel, &posted.ts))
                            .await
                        {
                            warn!(error = %e, "could not delete the duplicate message");
                        }
                    }
                    return Outcome::Done;
                }
                Ok(None) => return Outcome::DeadLetter("the ticket vanished after posting".into()),
                Err(e) => {
                    if let Some(o) = self.failed("recording the message", Failure::Db(e)).await {
                        return o;
                    }
                }
            }
        }
    }
}
