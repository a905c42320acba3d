//! `/healthz` and `/readyz`: is the process alive, and can it serve traffic right now.
//!
//! Components report their own readiness under a name (`policy`, `credentials`, `upstream`,
//! `auth`, `audit`): either by pushing a status when it changes ([`Readiness::set`]) or by
//! registering a probe that is asked on every report ([`Readiness::register`]). The gateway
//! is ready when every registered component is. The report names each component with its
//! status and a short detail, never a secret.
use std::collections::BTreeMap;
use std::sync::{LazyLock, RwLock};

use serde_json::{Value, json};

type Probe = Box<dyn Fn() -> (bool, String) + Send + Sync>;

enum Check {
    Status { ok: bool, detail: String },
    Probe(Probe),
}

/// Readiness of the named components of this process.
pub struct Readiness {
    checks: RwLock<BTreeMap<String, Check>>,
}

impl Readiness {
    fn new() -> Self {
        Readiness {
            checks: RwLock::new(BTreeMap::new()),
        }
    }

    /// Record the current state of `component` (replaces an earlier status or probe).
    pub fn set(&self, component: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        if let Ok(mut c) = self.checks.write() {
            c.insert(component.to_owned(), Check::Status { ok, detail });
        }
    }

    /// Ask `probe` for the state of `component` on every report. The probe must be cheap
    /// and must not block (read an atomic or a cached result).
    pub fn register(
        &self,
        component: &str,
        probe: impl Fn() -> (bool, String) + Send + Sync + 'static,
    ) {
        if let Ok(mut c) = self.checks.write() {
            c.insert(component.to_owned(), Check::Probe(Box::new(probe)));
        }
    }

    /// Stop reporting `component`.
    pub fn remove(&self, component: &str) {
        if let Ok(mut c) = self.checks.write() {
            c.remove(component);
        }
    }

    /// Whether every component is ready, and the document served on `/readyz`:
    /// `{"ready": bool, "checks": {name: {"ok": bool, "detail": "..."}}}`.
    pub fn report(&self) -> (bool, Value) {
        let Ok(checks) = self.checks.read() else {
            return (
                false,
                json!({"ready": false, "checks": {}, "error": "readiness state poisoned"}),
            );
        };
        let mut ready = true;
        let mut out = serde_json::Map::new();
        for (name, check) in checks.iter() {
            let (ok, detail) = match check {
                Check::Status { ok, detail } => (*ok, detail.clone()),
                Check::Probe(p) => p(),
            };
            ready &= ok;
            out.insert(name.clone(), json!({"ok": ok, "detail": detail}));
        }
        (ready, json!({"ready": ready, "checks": out}))
    }
}

static READINESS: LazyLock<Readiness> = LazyLock::new(Readiness::new);

/// The process-wide readiness registry.
pub fn readiness() -> &'static Readiness {
    &READINESS
}

/// `/readyz`: whether the gateway is ready, and the per-component document. Serve 200 when
/// ready, 503 otherwise.
pub fn report() -> (bool, Value) {
    readiness().report()
}

/// `/healthz`: the process is up and answering (no dependency is consulted).
pub fn liveness() -> Value {
    json!({"status": "ok"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let r = Readiness::new();
        assert!(r.report().0, "no components: nothing to wait for");
        r.set("policy", true, "revision abc");
        r.register("upstream", || (false, "connection refused".into()));
        let (ready, doc) = r.report();
        assert!(!ready);
        assert_eq!(doc["checks"]["upstream"]["detail"], "connection refused");
        assert_eq!(doc["checks"]["policy"]["ok"], true);
        r.register("upstream", || (true, "reachable".into()));
        assert!(r.report().0);
    }
}
