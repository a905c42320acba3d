//! Hot reload: the current policy behind an `ArcSwap`, and a watcher that swaps in changes.
//!
//! A request takes the engine that is current when it starts and keeps it to the end, so a
//! swap never changes a decision half-way and never drops a request in flight. A changed
//! directory that does not compile leaves the old policy in place; the error (with file and
//! line) is logged once, counted, and kept for `/readyz` until a later reload succeeds.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::bundle::Snapshot;
use super::{PolicyEngine, PolicyError};
use crate::config::PolicyConfig;

/// The policy in force, shared by every request, with hot reload.
pub struct PolicyHandle {
    cfg: PolicyConfig,
    current: ArcSwap<PolicyEngine>,
    state: Mutex<ReloadState>,
}

#[derive(Default)]
struct ReloadState {
    /// Message of the last failed reload, cleared by a successful one.
    last_error: Option<String>,
    /// Revision of the files that failed, so the same broken files are not recompiled (and
    /// logged) every poll.
    failed_revision: Option<String>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("current", &self.current.load().revision())
            .finish()
    }
}

impl PolicyHandle {
    /// Load the policy in `cfg.dir`; an error here means the gateway must not start.
    pub fn load(cfg: &PolicyConfig) -> Result<PolicyHandle, PolicyError> {
        let engine = PolicyEngine::load(cfg)?;
        crate::metrics::global().set_policy_revision(engine.revision());
        Ok(Self::from_engine(cfg, engine))
    }

    /// Wrap an engine that is already loaded.
    pub fn from_engine(cfg: &PolicyConfig, engine: PolicyEngine) -> PolicyHandle {
        PolicyHandle {
            cfg: cfg.clone(),
            current: ArcSwap::from_pointee(engine),
            state: Mutex::new(ReloadState::default()),
        }
    }

    /// The policy in force now. Hold the `Arc` for the whole request.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// The error of the last reload attempt, if it failed and nothing newer loaded since.
    pub fn last_reload_error(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone()
    }

    /// Read the directory and swap in a new engine if the files changed. `Ok(true)` when a
    /// new revision is now in force, `Ok(false)` when nothing changed, `Err` when the new
    /// files do not load (the old policy stays).
    pub fn reload(&self) -> Result<bool, PolicyError> {
        let metrics = crate::metrics::global();
        let snap = match Snapshot::read(&self.cfg.dir) {
            Ok(s) => s,
            Err(e) => {
                self.record_failure(None, &e);
                return Err(e);
            }
        };
        let revision = snap.revision();
        if revision == self.current.load().revision() {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // Back to the files in force (a broken edit was reverted).
            metrics.policy_reload_failing.set(0);
            st.last_error = None;
            st.failed_revision = None;
            return Ok(false);
        }
        {
            let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.failed_revision.as_deref() == Some(revision.as_str()) {
                let msg = st.last_error.clone().unwrap_or_default();
                return Err(PolicyError::Rego {
                    path: self.cfg.dir.clone(),
                    message: msg,
                });
            }
        }
        match PolicyEngine::from_snapshot(&snap, &self.cfg) {
            Ok(engine) => {
                let old = self.current.load().revision().to_string();
                metrics.set_policy_revision(engine.revision());
                metrics
                    .policy_reloads_total
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(old = %old, new = %engine.revision(), dir = %self.cfg.dir.display(), "policy reloaded");
                self.current.store(Arc::new(engine));
                metrics.policy_reload_failing.set(0);
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.last_error = None;
                st.failed_revision = None;
                Ok(true)
            }
            Err(e) => {
                self.record_failure(Some(revision), &e);
                Err(e)
            }
        }
    }

    fn record_failure(&self, revision: Option<String>, e: &PolicyError) {
        let message = e.to_string();
        crate::metrics::global().policy_reload_failing.set(1);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // The same failure seen again on the next poll is not news.
        if st.last_error.as_deref() != Some(message.as_str()) {
            crate::metrics::global()
                .policy_reloads_total
                .with_label_values(&["error"])
                .inc();
            tracing::error!(
                dir = %self.cfg.dir.display(),
                kept = %self.current.load().revision(),
                error = %message,
                "policy reload failed; the previous policy stays in force"
            );
        }
        st.last_error = Some(message);
        st.failed_revision = revision;
    }

    /// Poll the policy directory every `interval` and reload on change, until the handle is
    /// dropped by everyone else or the task is aborted. Compilation runs on the blocking pool.
    /// Call this when `policy.hot_reload` is true.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; the policy was just loaded
            loop {
                tick.tick().await;
                let Some(handle) = weak.upgrade() else { return };
                // Errors are recorded and logged inside reload().
                let _ = tokio::task::spawn_blocking(move || handle.reload()).await;
            }
        })
    }
}
