//! In-process waiters for session locks. A release that hands the lock to a waiter on another pod
//! names it (by its token) on the pods' one pub/sub subscription (the decision hub's); only that
//! waiter wakes. A waiter on the releasing pod is woken from the release's reply.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airlock_shared::Keys;
use tokio::sync::Notify;

/// Waiting calls on this pod, by their queue token.
type Waiters = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// This pod's lock waiters.
#[derive(Clone)]
pub struct LockWakeups {
    channel: String,
    /// This pod's id, which starts each of its waiters' tokens.
    pod: Arc<str>,
    waiting: Waiters,
}

/// One waiter's registration; dropping it unregisters.
pub struct Waiting {
    token: String,
    /// Notified when a release names this waiter.
    pub notify: Arc<Notify>,
    waiting: Waiters,
}

impl LockWakeups {
    /// Waiters for releases announced on `keys`' channel.
    pub fn new(keys: &Keys) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self {
            channel: keys.lock_released_channel(),
            pod: format!("{}.", &id[..12]).into(),
            waiting: Arc::default(),
        }
    }

    /// A new queue token, unique, that says it waits on this pod.
    pub fn token(&self) -> String {
        format!("{}{}", self.pod, uuid::Uuid::new_v4().simple())
    }

    /// The prefix of this pod's tokens.
    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// The channel on which releases are announced.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Registers the waiter whose queue token is `token`.
    pub fn register(&self, token: &str) -> Waiting {
        let notify = Arc::new(Notify::new());
        // A poisoned map only costs the push: the waiter's safety re-check still runs.
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(token.to_owned(), notify.clone());
        }
        Waiting {
            token: token.to_owned(),
            notify,
            waiting: self.waiting.clone(),
        }
    }

    /// Wakes the waiter named by a release announcement, if it waits on this pod.
    pub fn wake(&self, payload: &[u8]) {
        let Ok(token) = std::str::from_utf8(payload) else {
            return;
        };
        let notify = self.waiting.lock().ok().and_then(|w| w.get(token).cloned());
        if let Some(n) = notify {
            // A permit is kept if the waiter is between checks, so the turn is not missed.
            n.notify_one();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(&self.token);
        }
    }
}
