//! The refused-click job: tell the clicker, privately, why their click did not count.

use airlock_shared::{Refusal, TicketId};

use crate::message;

use super::context::{Failure, Outcome};
use super::job::JobRun;

impl JobRun {
    /// Tells a clicker, privately, why their click did not count.
    pub(super) async fn refused_click(
        &mut self,
        id: Option<TicketId>,
        user: &str,
        channel: &str,
        refusal: &Refusal,
    ) -> Outcome {
        loop {
            let t = match id {
                Some(id) => match self.load(id).await {
                    Ok(t) => t,
                    Err(o) => return o,
                },
                None => None,
            };
            let msg = message::refusal(refusal, t.as_ref());
            let slack = self.p().slack.clone();
            let result = self
                .slack(
                    "chat.postEphemeral",
                    slack.post_ephemeral(channel, user, &msg.text, &msg.blocks),
                )
                .await;
            match result {
                Ok(()) => return Outcome::Done,
                Err(e) => {
                    if let Some(o) = self.failed("chat.postEphemeral", Failure::Slack(e)).await {
                        return o;
                    }
                }
            }
        }
    }
}
