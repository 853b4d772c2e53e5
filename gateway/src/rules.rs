//! The policy and the agent keys in force, re-read on SIGHUP and when either file changes.
//!
//! Both files are read and checked together (an owner in the keys file must not be the only
//! approver a rule can have) and swapped as one. A new pair that fails is refused with a log
//! line and the old pair stays in force. A call takes its verdict when it arrives, so calls
//! already held finish under the policy they were held by; new calls use the new one.
//! Kubernetes updates a mounted ConfigMap by swapping a symlink: the files are re-read through
//! their paths and compared by content, so that swap is seen like any other change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::auth::{AgentKeys, KeysError};
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};

/// Why a pair of files could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    AgentKeys(#[from] KeysError),
}

/// One consistent pair: a policy and the agent keys it was checked against.
pub struct InForce {
    pub policy: Arc<Policy>,
    pub agents: Arc<AgentKeys>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// Both files read as before.
    Unchanged,
    /// The new pair is in force; the policy's revision.
    Applied(String),
}

/// The rules in force, shared by every request of the pod.
#[derive(Clone)]
pub struct Rules {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<InForce>,
    policy_file: String,
    keys_file: String,
    /// Content hash of the pair last tried (in force or refused), so a refused file is
    /// logged once, not on every poll.
    last_tried: Mutex<[u8; 32]>,
    metrics: Metrics,
}

impl Rules {
    /// Reads both files; an error here stops the start.
    pub fn load(policy_file: &str, keys_file: &str, metrics: Metrics) -> Result<Self, RulesError> {
        let (texts, pair) = read_pair(policy_file, keys_file)?;
        metrics.policy_revision(&pair.policy.revision);
        Ok(Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(pair),
                policy_file: policy_file.to_owned(),
                keys_file: keys_file.to_owned(),
                last_tried: Mutex::new(hash(&texts)),
                metrics,
            }),
        })
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.current.load().policy.clone()
    }

    /// The agent keys in force now.
    pub fn agents(&self) -> Arc<AgentKeys> {
        self.inner.current.load().agents.clone()
    }

    /// Re-reads both files and puts them in force if they changed and are valid.
    pub fn reload(&self) -> Result<Reloaded, RulesError> {
        let i = &self.inner;
        let texts = read_texts(&i.policy_file, &i.keys_file)?;
        let h = hash(&texts);
        if let Ok(last) = i.last_tried.lock()
            && *last == h
        {
            return Ok(Reloaded::Unchanged);
        }
        if let Ok(mut last) = i.last_tried.lock() {
            *last = h;
        }
        let pair = check_pair(&texts)?;
        let revision = pair.policy.revision.to_string();
        i.metrics.policy_revision(&revision);
        i.current.store(Arc::new(pair));
        Ok(Reloaded::Applied(revision))
    }
}

impl Rules {
    /// Reloads on SIGHUP and every `every` (none: on SIGHUP only) until `stop`.
    pub fn watch(&self, every: Option<Duration>, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(watch(self.clone(), every, stop))
    }
}

async fn watch(rules: Rules, every: Option<Duration>, stop: CancellationToken) {
    let mut hangups = signal(SignalKind::hangup()).ok();
    let mut tick = every.map(|d| {
        let mut i = tokio::time::interval_at(Instant::now() + d, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    });
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = next_tick(&mut tick) => {}
            Some(()) = next_hangup(&mut hangups) => {
                tracing::info!("SIGHUP: re-reading the policy and agent keys");
            }
        }
        apply(&rules);
    }
}

async fn next_tick(tick: &mut Option<Interval>) {
    match tick {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn next_hangup(hangups: &mut Option<Signal>) -> Option<()> {
    match hangups {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn apply(rules: &Rules) {
    let m = &rules.inner.metrics;
    match rules.reload() {
        Ok(Reloaded::Unchanged) => {}
        Ok(Reloaded::Applied(revision)) => {
            m.policy_reloads.with_label_values(&["applied"]).inc();
            tracing::info!(revision = %revision, "new policy and agent keys in force");
        }
        Err(e) => {
            m.policy_reloads.with_label_values(&["refused"]).inc();
            tracing::error!(error = %airlock_shared::telemetry::chain(&e), "new policy or agent keys refused; the previous ones stay in force");
        }
    }
}

fn read_texts(policy_file: &str, keys_file: &str) -> Result<[String; 2], RulesError> {
    let policy = std::fs::read_to_string(policy_file).map_err(|source| PolicyError::Read {
        path: policy_file.to_owned(),
        source,
    })?;
    let keys = std::fs::read_to_string(keys_file).map_err(|source| KeysError::Read {
        path: keys_file.to_owned(),
        source,
    })?;
    Ok([policy, keys])
}

fn check_pair([policy, keys]: &[String; 2]) -> Result<InForce, RulesError> {
    let policy = Policy::parse(policy)?;
    let agents = AgentKeys::parse(keys)?;
    policy.check_owners(agents.owners())?;
    Ok(InForce {
        policy: Arc::new(policy),
        agents: Arc::new(agents),
    })
}

fn read_pair(policy_file: &str, keys_file: &str) -> Result<([String; 2], InForce), RulesError> {
    let texts = read_texts(policy_file, keys_file)?;
    let pair = check_pair(&texts)?;
    Ok((texts, pair))
}

fn hash(texts: &[String; 2]) -> [u8; 32] {
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_be_bytes());
        h.update(t.as_bytes());
    }
    h.finalize().into()
}
