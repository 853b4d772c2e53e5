//! In-process waiters for session locks, woken when a release is announced on the pod's one
//! pub/sub subscription (the decision hub's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::{Keys, SessionId};
use tokio::sync::Notify;

/// Per session: how many waiters, and what wakes them.
type Waiters = Arc<Mutex<HashMap<String, (usize, Arc<Notify>)>>>;

/// This pod's lock waiters, by session.
#[derive(Clone)]
pub struct LockWakeups {
    channel: String,
    waiting: Waiters,
}

/// One waiter's registration; dropping it unregisters.
pub struct Waiting {
    session: String,
    /// Notified on every release of the session's lock.
    pub notify: Arc<Notify>,
    waiting: Waiters,
}

impl LockWakeups {
    /// Waiters for releases announced on `keys`' channel.
    pub fn new(keys: &Keys) -> Self {
        Self {
            channel: keys.lock_released_channel(),
            waiting: Arc::default(),
        }
    }

    /// The channel on which releases are announced.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Registers a waiter for `session`'s lock.
    pub fn register(&self, session: &SessionId) -> Waiting {
        let notify = match self.waiting.lock() {
            Ok(mut w) => {
                let e = w.entry(session.0.clone()).or_default();
                e.0 += 1;
                e.1.clone()
            }
            // A poisoned map only costs the push: the waiter's safety re-check still runs.
            Err(_) => Arc::default(),
        };
        Waiting {
            session: session.0.clone(),
            notify,
            waiting: self.waiting.clone(),
        }
    }

    /// Wakes this pod's waiters of the session named by a release announcement.
    pub fn wake(&self, payload: &[u8]) {
        let Ok(session) = std::str::from_utf8(payload) else {
            return;
        };
        let notify = self
            .waiting
            .lock()
            .ok()
            .and_then(|w| w.get(session).map(|e| e.1.clone()));
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock()
            && let Some(e) = w.get_mut(&self.session)
        {
            e.0 -= 1;
            if e.0 == 0 {
                w.remove(&self.session);
            }
        }
    }
}
