//! Jobs on the notification stream, and how they are written to it.

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::ids::TicketId;
use crate::keys::{JOB_FIELD, Keys};
use crate::otel::Carrier;
use crate::ticket::TicketStatus;

/// One unit of work for the notifier. The ticket row stays the source of truth: jobs carry ids,
/// and the notifier reads the current row when it runs the job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyJob {
    /// Post the approval request with its buttons.
    ApprovalRequest { ticket_id: TicketId },
    /// The ticket left `pending`: update its message to show the outcome and drop the buttons.
    TicketClosed { ticket_id: TicketId },
    /// A vote counted but the ticket is still short of its quorum: show the progress.
    TicketVoted { ticket_id: TicketId },
    /// Tell a clicker, privately, why their click did not count.
    RefusedClick {
        ticket_id: Option<TicketId>,
        user_id: String,
        channel: String,
        refusal: Refusal,
    },
}

impl NotifyJob {
    /// The ticket this job is about, if any.
    pub fn ticket_id(&self) -> Option<TicketId> {
        match self {
            Self::ApprovalRequest { ticket_id }
            | Self::TicketClosed { ticket_id }
            | Self::TicketVoted { ticket_id } => Some(*ticket_id),
            Self::RefusedClick { ticket_id, .. } => *ticket_id,
        }
    }

    /// The job kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ApprovalRequest { .. } => "approval_request",
            Self::TicketClosed { .. } => "ticket_closed",
            Self::TicketVoted { .. } => "ticket_voted",
            Self::RefusedClick { .. } => "refused_click",
        }
    }
}

/// Why a click changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum Refusal {
    /// The clicker is not among the ticket's (or the global) approvers.
    NotAnApprover,
    /// Someone decided first, or the ticket expired or was cancelled.
    AlreadyClosed {
        status: TicketStatus,
        decided_by: Option<String>,
    },
    /// The button named a ticket we do not have.
    UnknownTicket,
    /// The clicker owns the agent that made the call; their approval never counts.
    SelfApproval,
    /// The clicker's approval was already counted; one person counts once.
    AlreadyVoted,
    /// The clicked message showed another call than the one the ticket holds.
    WrongCall,
    /// The clicker is not listed, and who is in this user group is not known recently enough.
    MembershipUnknown { group: String },
    /// "Approve for" on a ticket that offers no grant, or Revoke when no grant is active.
    NoGrant,
}

/// A job as it is written to the stream: its own fields, and beside them (when OpenTelemetry is
/// on) the trace context of the span that enqueued it, so the notifier's work joins that trace.
/// Readers that know nothing of traces ignore the extra fields; entries without them parse as
/// no context (see [`trace_of`]).
#[derive(Serialize)]
struct Entry<'a> {
    #[serde(flatten)]
    job: &'a NotifyJob,
    #[serde(flatten)]
    trace: Option<Carrier>,
}

/// The stream entry's JSON for `job`, carrying the current span's trace context.
pub fn to_entry(job: &NotifyJob) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Entry {
        job,
        trace: Carrier::current(),
    })
}

/// The trace context a job's JSON carries (empty when none, or unreadable).
pub fn trace_of(raw: &str) -> Carrier {
    serde_json::from_str(raw).unwrap_or_default()
}

/// Appends a job to the notification stream and returns its entry id. The job carries the
/// current span's trace context.
pub async fn enqueue<C: AsyncCommands>(
    conn: &mut C,
    keys: &Keys,
    job: &NotifyJob,
) -> Result<String, redis::RedisError> {
    let body = to_entry(job).map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::Client, "job serialisation", e.to_string()))
    })?;
    conn.xadd(keys.notify_stream(), "*", &[(JOB_FIELD, body)])
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_have_a_stable_wire_shape() {
        let id = TicketId::new();
        let job = NotifyJob::RefusedClick {
            ticket_id: Some(id),
            user_id: "U1".into(),
            channel: "C1".into(),
            refusal: Refusal::AlreadyClosed {
                status: TicketStatus::Approved,
                decided_by: Some("ana".into()),
            },
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "refused_click",
                "ticket_id": id.to_string(),
                "user_id": "U1",
                "channel": "C1",
                "refusal": {"why": "already_closed", "status": "approved", "decided_by": "ana"},
            })
        );
        let back: NotifyJob = serde_json::from_value(v).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn an_entry_is_the_job_itself_when_no_trace_is_on() {
        let job = NotifyJob::ApprovalRequest {
            ticket_id: TicketId::new(),
        };
        let raw = to_entry(&job).unwrap();
        assert_eq!(raw, serde_json::to_string(&job).unwrap());
        assert_eq!(trace_of(&raw), Carrier::default());
    }

    #[test]
    fn a_traced_entry_still_reads_as_its_job() {
        let id = TicketId::new();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        let raw = format!(r#"{{"kind":"ticket_closed","ticket_id":"{id}","traceparent":"{tp}"}}"#);
        let job: NotifyJob = serde_json::from_str(&raw).unwrap();
        assert_eq!(job, NotifyJob::TicketClosed { ticket_id: id });
        assert_eq!(trace_of(&raw).traceparent.as_deref(), Some(tp));
    }
}
