//! What every job of a worker shares, and how a job ends.

use std::sync::Arc;

use airlock_shared::TicketId;
use airlock_shared::batch::Batcher;
use airlock_shared::db::Db;
use airlock_shared::ticket::{PostedMessage, Ticket};
use redis::RedisError;
use tokio::sync::Semaphore;

use crate::claim::PostClaims;
use crate::config::Tuning;
use crate::metrics::Metrics;
use crate::pace::Pacer;
use crate::stream::JobStream;
use crate::web_api::{SlackClient, SlackError};

/// Everything a job needs.
pub struct Parts {
    /// Ticket rows.
    pub pool: Db,
    /// The stream, as this consumer.
    pub stream: JobStream,
    /// Slack.
    pub slack: SlackClient,
    /// Per-channel pacing.
    pub pacer: Pacer,
    /// Post claims.
    pub claims: PostClaims,
    /// Metrics.
    pub metrics: Metrics,
    /// Where requests go when their rule names no channel.
    pub default_channel: String,
    /// Timing knobs.
    pub tuning: Tuning,
    /// Jobs worked on at once.
    pub concurrency: usize,
    /// User group memberships, stored before a request naming a group is posted.
    pub usergroups: crate::usergroups::UserGroups,
}

pub(super) struct Ctx {
    pub(super) parts: Parts,
    pub(super) slots: Arc<Semaphore>,
    /// Ticket reads of concurrent jobs, one statement per batch.
    pub(super) reads: Batcher<TicketId, Option<Ticket>>,
    /// Posted messages of concurrent jobs, recorded in one statement (one commit) per batch.
    pub(super) records: Batcher<PostedMessage, Option<Ticket>>,
}

/// How a job ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Its effect is done (or was already done): acknowledge.
    Done,
    /// It cannot succeed: move to the dead-letter stream and mark the ticket.
    DeadLetter(String),
    /// We are stopping: put it back for another replica.
    GiveBack,
}

impl Outcome {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::DeadLetter(_) => "dead_letter",
            Self::GiveBack => "given_back",
        }
    }
}

/// What went wrong in one attempt.
pub(super) enum Failure {
    Slack(SlackError),
    Db(sqlx::Error),
    Redis(RedisError),
}
