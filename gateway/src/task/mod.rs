//! Approvals as MCP tasks: a held call whose client can take a task is answered at once with a
//! task handle; the ticket waits in Postgres, any replica answers the polls, and exactly one
//! instance runs the approved call (the ticket's single-use claim) and stores its answer.
//!
//! Who runs it: the instance that made the task waits on its hub like a held call and claims
//! the ticket the moment it is approved. If that instance is gone, the first poll that finds
//! the ticket approved (on any replica) claims it, and the sweeper of every replica claims
//! tasks approved and unclaimed for a few seconds. The claim is one conditional `UPDATE`, so
//! whoever wins runs the call once; the others see "claimed" and leave it.

pub mod create;
pub mod list;
pub mod listen;
pub mod methods;
pub mod run;
pub mod sweep;
pub mod watch;
pub mod wire;

use std::time::Duration;

use airlock_shared::db::Db;

use crate::approval::Holds;
use crate::audit::AuditSink;
use crate::metrics::Metrics;
use crate::upstream_session::UpstreamSessions;

pub use create::TaskCall;
pub use wire::Era;

/// How tasks behave (`TASK_*` variables).
#[derive(Clone, Copy, Debug)]
pub struct TaskSettings {
    /// The `pollInterval` clients are asked to keep (`TASK_POLL_INTERVAL`).
    pub poll_interval: Duration,
    /// The largest upstream answer a task stores (`TASK_MAX_RESULT_BYTES`); a larger one
    /// fails the task, never truncated.
    pub max_result_bytes: usize,
    /// How long an ended task and its result are kept (`TASK_RETENTION`).
    pub retention: Duration,
    /// How often the sweeper runs (`TASK_SWEEP_INTERVAL`).
    pub sweep_interval: Duration,
    /// How long an approved task may stay unclaimed before the sweeper runs it elsewhere.
    pub takeover_after: Duration,
    /// How long a claimed task may go without a stored answer before it is failed (the
    /// instance running it died mid-call).
    pub lost_after: Duration,
}

/// What serving held calls as tasks uses.
pub struct Tasks {
    pub pool: Db,
    pub holds: Holds,
    pub link: UpstreamSessions,
    pub audit: AuditSink,
    pub metrics: Metrics,
    pub settings: TaskSettings,
    /// How often a blocked `tasks/result` stream gets a keepalive.
    pub keepalive: Duration,
    /// Hands the tasks this instance makes to its watch loop.
    pub watch: watch::Watcher,
}

impl Tasks {
    fn shown(&self) -> wire::Shown {
        wire::Shown {
            retention: self.settings.retention,
        }
    }

    fn poll_interval_ms(&self) -> i32 {
        i32::try_from(self.settings.poll_interval.as_millis()).unwrap_or(i32::MAX)
    }

    /// Counts a task that just ended, once across all replicas (the writer that ended it).
    fn count_ended(&self, ended: &airlock_shared::ticket::task::Ended, status: &str) {
        let m = &self.metrics.tasks;
        m.ended.with_label_values(&[status]).inc();
        if let Some(decided) = ended.decided_at {
            let secs = (decided - ended.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            m.to_decision.observe(secs);
        }
    }
}

/// Whether a request is a task method on one of the gateway's own tasks (the others, the
/// upstream's own tasks of allowed calls, are relayed).
pub fn handles(method: &str, params: &serde_json::Value) -> bool {
    methods::is_task_method(method) && wire::own_task_id(params).is_some()
}

/// The revision whose tasks the gateway serves in sessions.
pub const CLASSIC_VERSION: &str = "2025-11-25";

/// Whether a session request speaks 2025-11-25, the revision with (classic) tasks.
pub fn speaks_classic(headers: &axum::http::HeaderMap) -> bool {
    crate::transport::protocol_version(headers).is_ok_and(|v| v == CLASSIC_VERSION)
}

/// The dialect a session `tools/call` asks for a task in: 2025-11-25 with `params.task`.
pub fn classic_ask(headers: &axum::http::HeaderMap, params: &serde_json::Value) -> Option<Era> {
    (speaks_classic(headers) && wire::asks_classic(params)).then_some(Era::Classic)
}

/// The dialect a 2026-07-28 `tools/call` can take a task in: its per-request capabilities
/// include the extension.
pub fn extension_ask(params: &serde_json::Value) -> Option<Era> {
    wire::declares_extension(params).then_some(Era::Extension)
}
