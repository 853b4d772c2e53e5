//! The grant buttons: "Approve for …" (an approval vote that, deciding, makes a standing grant in
//! the same transaction) and Revoke (ends the grant a ticket made, then redraws its message).

use airlock_shared::grant::{self, GrantVote, Revoker};
use airlock_shared::job::{self, NotifyJob, Refusal};
use airlock_shared::ticket;

use crate::approval::{Approvals, DecideError, Outcome};
use crate::interaction::Click;

impl Approvals {
    /// An "Approve for" click: the quorum, owner, approver and fingerprint checks of Approve,
    /// decided alone (not batched) because its grant shares the decision's transaction.
    pub async fn apply_for(&self, click: &Click) -> Result<Outcome, DecideError> {
        if self.is_foreign(click) {
            return Ok(Outcome::Foreign);
        }
        let vote = self.click_decision(click);
        let voted = self
            .db(grant::vote_with_grant(&self.pool, &vote, &self.approvers))
            .await?;
        match voted {
            GrantVote::NotOffered(_) => Ok(self.refuse(click, Refusal::NoGrant).await),
            GrantVote::Voted(decided, made) => {
                if let Some(g) = made {
                    tracing::info!(grant = %g.id, expires_at = %g.expires_at, scope = %g.scope, "standing grant made");
                }
                Ok(self.settle(click, decided).await)
            }
        }
    }

    /// A Revoke click by someone who may decide the ticket (its approvers, else the global
    /// list): the grant ends at once and the notifier redraws the message.
    pub async fn revoke(&self, click: &Click) -> Result<Outcome, DecideError> {
        if self.is_foreign(click) {
            return Ok(Outcome::Foreign);
        }
        let by = Revoker {
            id: &click.user_id,
            name: &click.user_name,
            allowed_by_global: ticket::may_decide(&click.user_id, &[], &self.approvers),
            operator: false,
        };
        let revoked = self
            .db(grant::revoke(&self.pool, click.ticket_id.0, by))
            .await?;
        if let Some(g) = revoked {
            tracing::info!(grant = %g.id, "standing grant revoked");
            let job = NotifyJob::TicketClosed {
                ticket_id: g.ticket_id,
            };
            let mut conn = self.redis.clone();
            let enqueued = self
                .redis_step(job::enqueue(&mut conn, &self.keys, &job))
                .await;
            self.record_redis("enqueue_revoke", enqueued.map(|_| ()));
            return Ok(Outcome::Revoked);
        }
        // Nothing revoked: one read says why.
        let refusal = match self.db(ticket::get(&self.pool, click.ticket_id)).await? {
            None => Refusal::UnknownTicket,
            Some(t) if !ticket::may_decide(&click.user_id, &t.approvers, &self.approvers) => {
                Refusal::NotAnApprover
            }
            Some(_) => Refusal::NoGrant,
        };
        Ok(self.refuse(click, refusal).await)
    }
}
