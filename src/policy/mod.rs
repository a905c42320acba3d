//! decide: one Rego evaluation (regorus) per MCP request over `PolicyInput`.
//!
//! The engine is prepared once (policies parsed, data merged, one warm evaluation) and each
//! request evaluates a clone of it, which costs a few hundred nanoseconds; nothing is locked
//! on the request path. Hot reload ([`PolicyHandle`]) swaps the prepared engine atomically.
//! Any evaluation error, an undefined decision or a decision of the wrong shape fails
//! closed: the request is denied with a reason that says so. The policy decides; Rust only
//! executes what it decided.
//!
//! This module never sees caller credentials; the input holds the principal's id, groups and
//! non-secret claims only.
mod bundle;
#[cfg(test)]
mod equivalence;
mod reload;
mod replay;
mod testing;
mod value;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::classify::{Catalogue, TargetFacts, ToolFacts};
use crate::config::{PolicyConfig, PolicyMode};
use crate::identity::{AuthKind, Principal};

use bundle::{FileRole, Snapshot};
pub use reload::PolicyHandle;
pub use replay::{AuditSource, FailOn, ReplayReport, Replayer, replay_bytes};
pub use testing::{TestReport, TestResult, eval_file, format_report, run_tests, run_tests_with};

/// Rule id of a decision the gateway made because the policy could not.
pub const FAIL_CLOSED_RULE: &str = "gateway.fail_closed";

/// Redaction profile every response gets, whatever the policy says.
pub const BASELINE_PROFILE: &str = "baseline";

/// `input.client`
#[derive(Debug, Clone, Serialize, Default)]
pub struct ClientInfo {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// Protocol era of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Era {
    Session,
    Stateless,
}

/// `input.mcp`
#[derive(Debug, Clone, Serialize)]
pub struct McpFacts {
    pub method: String,
    pub protocol_version: Option<String>,
    pub era: Era,
}

/// `input.gateway`
#[derive(Debug, Clone, Serialize)]
pub struct GatewayFacts {
    pub mode: PolicyMode,
    pub upstream: String,
}

/// The whole input document (see `docs/policy.md`).
#[derive(Debug, Clone, Serialize)]
pub struct PolicyInput {
    pub principal: Principal,
    pub client: ClientInfo,
    pub mcp: McpFacts,
    pub tool: Option<ToolFacts>,
    pub target: TargetFacts,
    pub gateway: GatewayFacts,
}

/// What the policy decided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub allow: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Redaction profiles to apply to everything returned for this request.
    #[serde(default)]
    pub redact: Vec<String>,
    /// Identifiers of the rules that matched (for audit and metrics).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Optional role name (a key of `signing.assume_role.roles`) to sign this call with.
    #[serde(default)]
    pub role: Option<String>,
    /// On an allowed call: the person at the keyboard must confirm it first (the gateway asks
    /// through MCP elicitation and forwards nothing before the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirmation>,
}

/// What the policy asks the person before an allowed call goes through (`decision.confirm`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confirmation {
    /// Shown to the person as the elicitation message.
    pub message: String,
    /// The form fields, in order; the first is the free-text reason.
    pub fields: Vec<ConfirmField>,
}

/// One field of the confirmation form (always a string).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfirmField {
    pub name: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    /// The exact text the person must type (a typed confirmation such as a resource name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

impl Decision {
    /// The decision the gateway substitutes when the policy cannot decide: deny, with the
    /// cause in the reason, and baseline redaction as always.
    pub fn fail_closed(detail: &str) -> Decision {
        let mut detail = detail.trim().replace('\n', " ");
        if detail.len() > 400 {
            let mut cut = 400;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Decision {
            allow: false,
            reasons: vec![format!(
                "policy evaluation failed: {detail}. The gateway denied the request (fail closed); \
                 ask the gateway operator to check the policy"
            )],
            redact: vec![BASELINE_PROFILE.to_string()],
            rules: vec![FAIL_CLOSED_RULE.to_string()],
            role: None,
            confirm: None,
        }
    }

    /// Reasons may quote arguments (a Secret's name, a namespace); whatever a client put
    /// there, no secret-looking value leaves in a deny message, a log or an audit record.
    /// The gateway applies this to every decision, and `policy replay` to the decisions it
    /// compares with recorded ones.
    pub fn redact_reasons(&mut self, redactor: &crate::redact::Redactor) {
        let baseline = [crate::redact::BASELINE.to_owned()];
        for reason in &mut self.reasons {
            let (clean, found) = redactor.redact_text(reason, &baseline);
            if !found.is_empty() {
                *reason = clean.into_owned();
            }
        }
    }

    /// Read a decision document (the entrypoint's value as JSON, from this gateway's engine
    /// or from another Rego engine) as the gateway reads it: the shape is checked, a deny
    /// without reasons gets one, and baseline redaction is always included.
    pub fn from_document(document: &serde_json::Value) -> Result<Decision, String> {
        parse_decision(&regorus::Value::from(document.clone()))
    }

    /// True when the gateway, not the policy, made this decision.
    pub fn is_fail_closed(&self) -> bool {
        self.rules.iter().any(|r| r == FAIL_CLOSED_RULE)
    }
}

/// The redactor of a policy directory: its `redaction.yaml`, or the built-in profiles when
/// it has none.
pub fn redactor_for(dir: &Path) -> anyhow::Result<crate::redact::Redactor> {
    use anyhow::Context as _;
    let file = dir.join("redaction.yaml");
    if file.exists() {
        crate::redact::Redactor::from_file(&file)
            .with_context(|| format!("loading {}", file.display()))
    } else {
        Ok(crate::redact::Redactor::builtin())
    }
}

/// A policy directory that cannot be loaded, phrased for the person editing it.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "policy directory {path} is not a directory. Fix: set policy.dir to the directory holding the .rego files"
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "no policy (*.rego other than *_test.rego) in {dir}. Fix: point policy.dir at the policies directory"
    )]
    NoPolicies { dir: PathBuf },
    /// Rego parse or compile error; regorus messages carry file, line and column.
    #[error("{message}")]
    Rego { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Catalogue { path: PathBuf, message: String },
    #[error("entrypoint {entrypoint}: {message}")]
    Entrypoint { entrypoint: String, message: String },
    #[error("input document: {message}")]
    Input { message: String },
}

/// A prepared policy: the compiled Rego with its data, the tool catalogue of the same
/// directory, and the revision naming both.
#[derive(Clone)]
pub struct PolicyEngine {
    template: regorus::Engine,
    entrypoint: String,
    /// `tool_visible` in the entrypoint's package.
    visibility_rule: String,
    has_visibility_rule: bool,
    revision: String,
    catalogue: Catalogue,
    dir: PathBuf,
    /// The entrypoint compiled to regorus bytecode, used for [`decide`](Self::decide) when
    /// it compiled and agreed with the interpreter at load; `None` decides with the
    /// interpreter.
    bytecode: Option<Arc<Bytecode>>,
    /// `tool_visible` compiled to bytecode (evaluated once per tool of a tools/list).
    visibility_bytecode: Option<Arc<Bytecode>>,
    /// The groups the policy data defines (`gateway.groups` keys): the bounded label set of
    /// `mcp_gateway_group_requests_total`.
    groups: std::collections::BTreeSet<String>,
    /// Per-caller limits (`gateway.limits` of the top-level data file).
    limits: Arc<crate::limits::LimitsData>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("dir", &self.dir)
            .field("entrypoint", &self.entrypoint)
            .field("revision", &self.revision)
            .field("bytecode", &self.bytecode.is_some())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Load, compile and warm the policies, data and catalogue in `cfg.dir`.
    pub fn load(cfg: &PolicyConfig) -> Result<PolicyEngine, PolicyError> {
        let snap = Snapshot::read(&cfg.dir)?;
        Self::from_snapshot(&snap, cfg)
    }

    pub(crate) fn from_snapshot(
        snap: &Snapshot,
        cfg: &PolicyConfig,
    ) -> Result<PolicyEngine, PolicyError> {
        let catalogue = match snap.of(FileRole::Catalogue).next() {
            Some(f) => Catalogue::from_yaml_str(&f.text, &f.path)?,
            None => {
                return Err(PolicyError::Catalogue {
                    path: cfg.dir.join(crate::classify::CATALOGUE_FILE),
                    message: "file not found. Fix: copy policies/catalogue.yaml from the \
                              gateway repository into the policy directory"
                        .to_string(),
                });
            }
        };
        let mut engine = build_engine(snap, &cfg.dir, false)?;
        let limit = cfg.eval_timeout;
        if !limit.is_zero() {
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: NonZeroU32::new(32).expect("nonzero"),
            });
        }
        let entrypoint = cfg.entrypoint.trim().to_string();
        let Some((package, _)) = entrypoint.rsplit_once('.') else {
            return Err(PolicyError::Entrypoint {
                entrypoint,
                message: "is not a rule path. Fix: write it as data.<package>.<rule>, e.g. \
                          data.eks_mcp.gateway.decision"
                    .to_string(),
            });
        };
        let visibility_rule = format!("{package}.tool_visible");

        // Warm evaluation: prepares the engine (so clones are cheap), proves the entrypoint
        // exists and that the policy evaluates without error on a plain request.
        let warm = serde_json::to_value(warmup_input()).expect("input serialises");
        engine.set_input(regorus::Value::from(warm.clone()));
        engine
            .eval_rule(entrypoint.clone())
            .map_err(|e| PolicyError::Entrypoint {
                entrypoint: entrypoint.clone(),
                message: format!(
                    "{e}. Fix: define the rule in a loaded policy, or set policy.entrypoint"
                ),
            })?;
        check_data(&engine, package, snap, &cfg.dir)?;
        let interpreted = engine.clone().eval_rule(entrypoint.clone());
        let mut probe = engine.clone();
        let has_visibility_rule = probe.eval_rule(visibility_rule.clone()).is_ok();
        let bytecode = match Bytecode::compile(&engine, &entrypoint, cfg) {
            Ok(b) => match (b.eval(regorus::Value::from(warm)), interpreted) {
                (Ok(fast), Ok(slow)) if fast == slow => Some(Arc::new(b)),
                (fast, slow) => {
                    tracing::warn!(
                        entrypoint = %entrypoint,
                        bytecode = ?fast.map(|v| v.to_string()),
                        interpreter = ?slow.map(|v| v.to_string()),
                        "the policy's bytecode disagrees with the interpreter on the warm-up request; deciding with the interpreter (slower)"
                    );
                    None
                }
            },
            Err(e) => {
                tracing::info!(entrypoint = %entrypoint, error = %e, "the policy cannot be compiled to bytecode; deciding with the interpreter (slower)");
                None
            }
        };

        // tool_visible on bytecode too, checked against the interpreter on a probe for every
        // catalogue tool (a disagreement keeps the interpreter for visibility).
        let visibility_bytecode = if has_visibility_rule {
            compile_visibility(&engine, &visibility_rule, &catalogue, cfg)
        } else {
            None
        };

        Ok(PolicyEngine {
            template: engine,
            entrypoint,
            visibility_rule,
            has_visibility_rule,
            visibility_bytecode,
            revision: snap.revision(),
            catalogue,
            dir: cfg.dir.clone(),
            bytecode,
            groups: data_groups(snap),
            limits: Arc::new(data_limits(snap)?),
        })
    }

    /// The groups the policy data defines (`gateway.groups` in the top-level data file).
    pub fn groups(&self) -> &std::collections::BTreeSet<String> {
        &self.groups
    }

    /// The per-caller limits of the policy data (`gateway.limits`; none when absent).
    pub fn limits(&self) -> &crate::limits::LimitsData {
        &self.limits
    }

    /// Whether decisions run on the compiled bytecode rather than the interpreter.
    pub fn uses_bytecode(&self) -> bool {
        self.bytecode.is_some()
    }

    /// Hash of the policy, data and catalogue files this engine was built from.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The tool catalogue loaded with this policy.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The directory this engine was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Decide one request. Never panics and never fails: an evaluation error, an undefined
    /// decision or a decision of the wrong shape is a deny ([`Decision::fail_closed`]).
    pub fn decide(&self, input: &PolicyInput) -> Decision {
        // Straight into the engine's value type: JSON text or a `serde_json::Value` in
        // between builds a second tree and costs more than evaluating a simple policy.
        match value::to_value(input) {
            Ok(v) => self.decide_regorus(v),
            Err(e) => self.failed(&format!("the input document could not be built ({e})")),
        }
    }

    /// How many bytecode instructions deciding `input` takes: a deterministic measure of a
    /// policy's cost, unlike wall time on a shared machine (the decision bench prints it).
    /// `None` when the decision does not run on bytecode.
    pub fn cost(&self, input: &PolicyInput) -> Option<usize> {
        let input = value::to_value(input).ok()?;
        self.bytecode.as_ref()?.instructions(&input)
    }

    /// Decide over an input document given as JSON (`policy eval --input FILE`).
    pub fn decide_value(&self, input: serde_json::Value) -> Decision {
        self.decide_regorus(regorus::Value::from(input))
    }

    fn decide_regorus(&self, input: regorus::Value) -> Decision {
        // The caller times the evaluation (`policy_eval_seconds`), input building included.
        self.decision_of(self.evaluate(input))
    }

    /// The entrypoint's value for an input document (JSON), evaluated exactly as
    /// [`decide`](Self::decide) evaluates it, before it is read as a [`Decision`]: `Ok(None)`
    /// when it is undefined. For comparing the policy's answer with another Rego engine's
    /// (tests/it/opa.rs runs OPA on the same documents); [`Decision::from_document`] reads
    /// such a value the way the gateway does.
    pub fn decision_document(
        &self,
        input: serde_json::Value,
    ) -> Result<Option<serde_json::Value>, String> {
        match self.evaluate(regorus::Value::from(input))? {
            regorus::Value::Undefined => Ok(None),
            value => serde_json::to_value(&value)
                .map(Some)
                .map_err(|e| format!("the decision does not convert to JSON: {e}")),
        }
    }

    /// The entrypoint's value: on the bytecode, and on the interpreter when the bytecode
    /// could not evaluate it. A panic inside either evaluator is an error, not a crash of the
    /// request task.
    fn evaluate(&self, input: regorus::Value) -> Result<regorus::Value, String> {
        if let Some(bytecode) = &self.bytecode {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                bytecode.eval(input.clone())
            }));
            match result {
                Ok(Ok(value)) => return Ok(value),
                // The interpreter has the last word on anything the bytecode could not
                // evaluate (it fails closed in turn if it cannot either).
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "bytecode evaluation failed; evaluating with the interpreter")
                }
                Err(_) => {
                    tracing::warn!("bytecode evaluation panicked; evaluating with the interpreter")
                }
            }
        }
        self.interpret_value(input)
    }

    /// [`decide_value`](Self::decide_value) with the interpreter only.
    #[cfg(test)]
    fn interpret(&self, input: regorus::Value) -> Decision {
        self.decision_of(self.interpret_value(input))
    }

    fn interpret_value(&self, input: regorus::Value) -> Result<regorus::Value, String> {
        let mut engine = self.template.clone();
        engine.set_input(input);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.eval_rule(self.entrypoint.clone())
        }));
        match result {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the policy interpreter panicked".to_string()),
        }
    }

    /// The decision for the entrypoint's value (or the evaluation error).
    fn decision_of(&self, result: Result<regorus::Value, String>) -> Decision {
        match result {
            Err(e) => self.failed(&e),
            Ok(regorus::Value::Undefined) => self.failed(&format!(
                "{} is undefined for this request",
                self.entrypoint
            )),
            Ok(value) => match parse_decision(&value) {
                Ok(d) => d,
                Err(problem) => self.failed(&format!("{} {problem}", self.entrypoint)),
            },
        }
    }

    fn failed(&self, detail: &str) -> Decision {
        crate::metrics::global().policy_eval_errors_total.inc();
        tracing::error!(revision = %self.revision, error = %detail, "policy evaluation failed; request denied");
        Decision::fail_closed(detail)
    }

    /// Whether `tools/list` shows `tool_name` to the caller of `input`: false for tools the
    /// principal may never call (unknown tools, or every call a write without a grant).
    /// Evaluates `tool_visible` in the entrypoint's package with `input.tool` set to the
    /// catalogue's probe for the tool; a policy without that rule shows every known tool
    /// (calls are still decided one by one). Errors hide the tool (fail closed).
    pub fn tool_visible(&self, input: &PolicyInput, tool_name: &str) -> bool {
        self.visible_tools(input, [tool_name])
            .first()
            .copied()
            .unwrap_or(false)
    }

    /// [`tool_visible`](Self::tool_visible) for many tools with one input document; the
    /// answer has one entry per name, in order.
    pub fn visible_tools<'a>(
        &self,
        input: &PolicyInput,
        tool_names: impl IntoIterator<Item = &'a str>,
    ) -> Vec<bool> {
        let names: Vec<&str> = tool_names.into_iter().collect();
        if !self.has_visibility_rule {
            return names.iter().map(|n| self.catalogue.known(n)).collect();
        }
        let Some(base) = visibility_base(input) else {
            return vec![false; names.len()];
        };
        names
            .iter()
            .map(|name| {
                let Some(doc) = with_probe(&base, &self.catalogue, name) else {
                    return false;
                };
                let Some(bytecode) = &self.visibility_bytecode else {
                    return self.visible_interpreted(doc, name);
                };
                let fast = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    bytecode.eval(doc.clone())
                }));
                match fast {
                    Ok(Ok(regorus::Value::Bool(b))) => b,
                    Ok(Ok(_)) => false,
                    // The interpreter has the last word, as for decisions.
                    _ => self.visible_interpreted(doc, name),
                }
            })
            .collect()
    }

    /// `tool_visible` for one probe document on the interpreter; errors hide the tool.
    fn visible_interpreted(&self, doc: regorus::Value, name: &str) -> bool {
        let mut engine = self.template.clone();
        engine.set_input(doc);
        match engine.eval_rule(self.visibility_rule.clone()) {
            Ok(regorus::Value::Bool(b)) => b,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(tool = %name, error = %e, "tool_visible failed; tool hidden");
                false
            }
        }
    }
}

/// The caller's request as `tool_visible` sees it, without its target: converted once per
/// tools/list; [`with_probe`] sets `input.tool` for each tool.
fn visibility_base(input: &PolicyInput) -> Option<regorus::Value> {
    let mut base = value::to_value(input).ok()?;
    let target = value::to_value(&TargetFacts::default()).ok()?;
    base.as_object_mut()
        .ok()?
        .insert(regorus::Value::from("target"), target);
    Some(base)
}

/// `base` with `input.tool` set to the catalogue's probe for `name` (the rest of the
/// document is shared, not copied).
fn with_probe(base: &regorus::Value, catalogue: &Catalogue, name: &str) -> Option<regorus::Value> {
    let mut doc = base.clone();
    let probe = value::to_value(&catalogue.probe(name)).ok()?;
    doc.as_object_mut()
        .ok()?
        .insert(regorus::Value::from("tool"), probe);
    Some(doc)
}

/// Compile `tool_visible` and keep it only if it agrees with the interpreter on the probe of
/// every catalogue tool (for the warm-up principal; the tests compare more principals).
fn compile_visibility(
    engine: &regorus::Engine,
    rule: &str,
    catalogue: &Catalogue,
    cfg: &PolicyConfig,
) -> Option<Arc<Bytecode>> {
    let bytecode = match Bytecode::compile(engine, rule, cfg) {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(rule = %rule, error = %e, "tool_visible cannot be compiled to bytecode; tools/list filtering uses the interpreter (slower)");
            return None;
        }
    };
    let mut warm = warmup_input();
    warm.mcp.method = "tools/list".into();
    let base = visibility_base(&warm)?;
    for name in catalogue.tool_names() {
        let doc = with_probe(&base, catalogue, name)?;
        let mut interp = engine.clone();
        interp.set_input(doc.clone());
        let slow = interp
            .eval_rule(rule.to_string())
            .map_err(|e| e.to_string());
        let fast = bytecode.eval(doc).map_err(|e| e.to_string());
        if fast != slow {
            tracing::warn!(rule = %rule, tool = %name, bytecode = ?fast, interpreter = ?slow, "tool_visible bytecode disagrees with the interpreter; tools/list filtering uses the interpreter (slower)");
            return None;
        }
    }
    Some(Arc::new(bytecode))
}

/// The decision entrypoint compiled to regorus bytecode (the RVM), with the data it runs
/// over. Each evaluation borrows a virtual machine from a small pool (a VM keeps nothing
/// from one evaluation to the next but its allocations).
struct Bytecode {
    program: Arc<regorus::rvm::Program>,
    data: regorus::Value,
    timer: Option<regorus::utils::limits::ExecutionTimerConfig>,
    pool: Mutex<Vec<regorus::rvm::RegoVM>>,
}

/// VMs kept for reuse; more than the worker threads is never needed.
const VM_POOL: usize = 16;

impl Bytecode {
    fn compile(
        engine: &regorus::Engine,
        entrypoint: &str,
        cfg: &PolicyConfig,
    ) -> anyhow::Result<Bytecode> {
        let mut engine = engine.clone();
        let rule: Arc<str> = Arc::from(entrypoint);
        let policy = engine.compile_with_entrypoint(&rule)?;
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &policy,
            &[entrypoint],
        )?;
        let data = engine.get_data();
        program.check_rule_data_conflicts(&data)?;
        let timer =
            (!cfg.eval_timeout.is_zero()).then(|| regorus::utils::limits::ExecutionTimerConfig {
                limit: cfg.eval_timeout,
                check_interval: NonZeroU32::new(32).expect("nonzero"),
            });
        Ok(Bytecode {
            program,
            data,
            timer,
            pool: Mutex::new(Vec::new()),
        })
    }

    fn new_vm(&self) -> anyhow::Result<regorus::rvm::RegoVM> {
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(self.program.clone());
        // Checked once in `compile`; the data never changes for this program.
        vm.set_data(self.data.clone())?;
        vm.set_strict_builtin_errors(false);
        // The time limit, not an instruction count, bounds an evaluation (large
        // grant lists legitimately take many instructions).
        vm.set_max_instructions(usize::MAX);
        vm.set_execution_timer_config(self.timer);
        Ok(vm)
    }

    /// The instruction count of one evaluation, found by bisecting the VM's instruction
    /// limit (the VM does not report it). A diagnostic: never on the request path.
    fn instructions(&self, input: &regorus::Value) -> Option<usize> {
        let mut vm = self.new_vm().ok()?;
        vm.set_execution_timer_config(None);
        let mut fits = |limit: usize| -> Option<bool> {
            vm.set_max_instructions(limit);
            vm.set_input(input.clone());
            match vm.execute() {
                Ok(_) => Some(true),
                Err(regorus::rvm::vm::VmError::InstructionLimitExceeded { .. }) => Some(false),
                Err(_) => None,
            }
        };
        let mut high = 1024;
        while !fits(high)? {
            high = high.checked_mul(2)?;
        }
        let mut low = 0;
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if fits(mid)? {
                high = mid;
            } else {
                low = mid;
            }
        }
        Some(high)
    }

    fn eval(&self, input: regorus::Value) -> anyhow::Result<regorus::Value> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let mut vm = match pooled {
            Some(vm) => vm,
            None => self.new_vm()?,
        };
        vm.set_input(input);
        let result = vm.execute().map_err(anyhow::Error::from);
        vm.set_input(regorus::Value::Null);
        if let Ok(mut p) = self.pool.lock()
            && p.len() < VM_POOL
        {
            p.push(vm);
        }
        result
    }
}

/// Run the policy's own checks of its data, `<package>.data_errors` (a set of sentences),
/// once per load: any entry fails the load with those sentences, so a misspelled setting or
/// a malformed grant cannot silently change what is allowed. A policy without the rule is
/// not checked.
/// Keys of `gateway.groups` in the top-level data files; empty when there are none. The data
/// already loaded into the engine, so a file that does not parse here adds no groups.
fn data_groups(snap: &Snapshot) -> std::collections::BTreeSet<String> {
    snap.of(FileRole::Data)
        .filter(|f| f.dirs.is_empty())
        .filter_map(|f| serde_yaml::from_str::<serde_json::Value>(&f.text).ok())
        .filter_map(|v| {
            v.get("gateway")?
                .get("groups")?
                .as_object()
                .map(|g| g.keys().cloned().collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// `gateway.limits` of the top-level data files, checked (the error names the key).
fn data_limits(snap: &Snapshot) -> Result<crate::limits::LimitsData, PolicyError> {
    for f in snap.of(FileRole::Data).filter(|f| f.dirs.is_empty()) {
        let Ok(v) = serde_yaml::from_str::<serde_json::Value>(&f.text) else {
            continue;
        };
        match crate::limits::LimitsData::from_data(&v) {
            Ok(Some(l)) => return Ok(l),
            Ok(None) => {}
            Err(message) => {
                return Err(PolicyError::Data {
                    path: f.path.clone(),
                    message,
                });
            }
        }
    }
    Ok(Default::default())
}

fn check_data(
    engine: &regorus::Engine,
    package: &str,
    snap: &Snapshot,
    dir: &Path,
) -> Result<(), PolicyError> {
    let path = snap
        .of(FileRole::Data)
        .next()
        .map(|f| f.path.clone())
        .unwrap_or_else(|| dir.to_path_buf());
    let rule = format!("{package}.data_errors");
    let results = engine
        .clone()
        .eval_query(rule.clone(), false)
        .map_err(|e| PolicyError::Data {
            path: path.clone(),
            message: format!("{rule} failed to evaluate: {e}. Fix: correct the rule"),
        })?;
    let Some(value) = results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .map(|e| &e.value)
    else {
        return Ok(());
    };
    let errors: Vec<String> = match value {
        regorus::Value::Set(s) => s.iter().map(sentence).collect(),
        regorus::Value::Array(a) => a.iter().map(sentence).collect(),
        other => {
            return Err(PolicyError::Data {
                path,
                message: format!(
                    "{rule} is {other}, not a set of sentences. Fix: define it as `data_errors contains msg if {{ ... }}`"
                ),
            });
        }
    };
    if errors.is_empty() {
        return Ok(());
    }
    Err(PolicyError::Data {
        path,
        message: format!("the policy data fails its checks: {}", errors.join("; ")),
    })
}

fn sentence(v: &regorus::Value) -> String {
    match v {
        regorus::Value::String(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Build an engine from the snapshot's policies (and tests when asked) and data.
fn build_engine(
    snap: &Snapshot,
    dir: &Path,
    with_tests: bool,
) -> Result<regorus::Engine, PolicyError> {
    let mut engine = regorus::Engine::new();
    engine.set_strict_builtin_errors(false);
    let mut policies = 0;
    for f in snap.files.iter() {
        let load = match f.role {
            FileRole::Policy => {
                policies += 1;
                true
            }
            FileRole::Test => with_tests,
            _ => false,
        };
        if load {
            engine
                .add_policy(f.path.display().to_string(), f.text.clone())
                .map_err(|e| PolicyError::Rego {
                    path: f.path.clone(),
                    message: e.to_string(),
                })?;
        }
    }
    if policies == 0 {
        return Err(PolicyError::NoPolicies {
            dir: dir.to_path_buf(),
        });
    }
    for f in snap.of(FileRole::Data) {
        let data = parse_data(f)?;
        let mut wrapped = data;
        for d in f.dirs.iter().rev() {
            let mut m = serde_json::Map::new();
            m.insert(d.clone(), wrapped);
            wrapped = serde_json::Value::Object(m);
        }
        engine
            .add_data(regorus::Value::from(wrapped))
            .map_err(|e| PolicyError::Data {
                path: f.path.clone(),
                message: format!("{e}. Fix: data files must not set the same key twice"),
            })?;
    }
    Ok(engine)
}

fn parse_data(f: &bundle::BundleFile) -> Result<serde_json::Value, PolicyError> {
    let err = |message: String| PolicyError::Data {
        path: f.path.clone(),
        message,
    };
    let value = if f.path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&f.text).map_err(|e| err(e.to_string()))?
    } else {
        let mut docs = crate::classify::parse_manifest(&f.text).map_err(err)?;
        if docs.len() != 1 {
            return Err(err(format!(
                "holds {} YAML documents. Fix: keep one document (remove extra `---`)",
                docs.len()
            )));
        }
        docs.remove(0)
    };
    match value {
        serde_json::Value::Object(_) => Ok(value),
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        _ => Err(err(
            "the top level must be a mapping of keys to values".to_string()
        )),
    }
}

/// Convert the entrypoint's value into a `Decision`, checking its shape.
fn parse_decision(value: &regorus::Value) -> Result<Decision, String> {
    use regorus::Value as V;
    const SHAPE: &str = "expected {allow: bool, reasons: [string], redact: [string], rules: [string], role: string|null, confirm: {message, fields}|null}";
    let V::Object(obj) = value else {
        return Err("is not an object {allow, reasons, redact, rules, role}".into());
    };
    let field = |name: &str| obj.get(&V::from(name));
    let allow = match field("allow") {
        Some(V::Bool(b)) => *b,
        Some(_) => return Err("has an `allow` that is not a boolean".into()),
        None => return Err("has no `allow`".into()),
    };
    // A list of strings; absent is empty. Sets (Rego's `contains` rules) count as lists.
    let strings = |name: &str| -> Result<Vec<String>, String> {
        let items: Vec<&V> = match field(name) {
            None | Some(V::Undefined) => return Ok(Vec::new()),
            Some(V::Array(a)) => a.iter().collect(),
            Some(V::Set(s)) => s.iter_sorted().collect(),
            Some(_) => return Err(format!("has a `{name}` that is not a list; {SHAPE}")),
        };
        items
            .into_iter()
            .map(|v| match v {
                V::String(s) => Ok(s.to_string()),
                _ => Err(format!(
                    "has a `{name}` entry that is not a string; {SHAPE}"
                )),
            })
            .collect()
    };
    let mut reasons = strings("reasons")?;
    if !allow && reasons.is_empty() {
        reasons.push("denied by policy (the policy gave no reason)".to_string());
    }
    let mut redact = strings("redact")?;
    if !redact.iter().any(|p| p == BASELINE_PROFILE) {
        redact.insert(0, BASELINE_PROFILE.to_string());
    }
    let rules = strings("rules")?;
    let role = match field("role") {
        None | Some(V::Null) | Some(V::Undefined) => None,
        Some(V::String(s)) => Some(s.to_string()),
        Some(_) => return Err(format!("has a `role` that is not a string; {SHAPE}")),
    };
    let confirm = match field("confirm") {
        None | Some(V::Null) | Some(V::Undefined) => None,
        Some(v) => Some(parse_confirmation(v).map_err(|p| format!("has a `confirm` {p}"))?),
    };
    Ok(Decision {
        allow,
        reasons,
        redact,
        rules,
        role,
        confirm: confirm.filter(|_| allow),
    })
}

/// `decision.confirm`: `{message: string, fields: [{name, title, description, required,
/// expect?}]}` with at least one field, names of `[a-z0-9_]` and no name twice. Anything else
/// fails the decision closed: a confirmation the gateway cannot ask must not become an allow.
fn parse_confirmation(value: &regorus::Value) -> Result<Confirmation, String> {
    let json: serde_json::Value =
        serde_json::to_value(value).map_err(|e| format!("that cannot be read ({e})"))?;
    let c: Confirmation = serde_json::from_value(json)
        .map_err(|e| format!("of the wrong shape ({e}); expected {{message: string, fields: [{{name, title, description, required, expect}}]}}"))?;
    if c.fields.is_empty() {
        return Err("with no fields; ask at least for a reason".into());
    }
    let mut seen = std::collections::HashSet::new();
    for f in &c.fields {
        let ok = !f.name.is_empty()
            && f.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || !seen.insert(f.name.as_str()) {
            return Err(format!(
                "field name {:?} that is not a unique name of a-z, 0-9 and _",
                f.name
            ));
        }
    }
    Ok(c)
}

/// A plain `ping` used to prepare a freshly loaded engine.
fn warmup_input() -> PolicyInput {
    PolicyInput {
        principal: Principal {
            id: "gateway-warmup".to_string(),
            groups: Vec::new(),
            auth: AuthKind::Static,
            claims: Default::default(),
        },
        client: ClientInfo::default(),
        mcp: McpFacts {
            method: "ping".to_string(),
            protocol_version: None,
            era: Era::Session,
        },
        tool: None,
        target: TargetFacts::default(),
        gateway: GatewayFacts {
            mode: PolicyMode::Enforce,
            upstream: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_closed_names_the_cause_and_keeps_baseline_redaction() {
        let d = Decision::fail_closed("boom\nat line 3");
        assert!(!d.allow);
        assert!(d.reasons[0].contains("policy evaluation failed: boom at line 3"));
        assert_eq!(d.redact, vec!["baseline"]);
        assert!(d.is_fail_closed());
        let long = "x".repeat(2000);
        assert!(Decision::fail_closed(&long).reasons[0].len() < 600);
    }

    #[test]
    fn tools_list_visibility_on_bytecode_matches_the_interpreter() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let engine = PolicyEngine::load(&PolicyConfig {
            dir,
            ..PolicyConfig::default()
        })
        .unwrap();
        assert!(
            engine.visibility_bytecode.is_some(),
            "tool_visible compiles"
        );
        let names: Vec<String> = engine
            .catalogue()
            .tool_names()
            .map(str::to_string)
            .chain(["not_a_tool".to_string()])
            .collect();
        let mut hidden_somewhere = 0;
        for (id, groups) in [
            ("nobody", vec![]),
            ("alice", vec!["payments-dev"]),
            ("root", vec!["platform-admins"]),
            ("sre", vec!["sre-oncall", "sre-breakglass"]),
            ("rita", vec!["readers"]),
        ] {
            let mut input = warmup_input();
            input.principal.id = id.into();
            input.principal.groups = groups.iter().map(|g| g.to_string()).collect();
            input.mcp.method = "tools/list".into();
            let fast = engine.visible_tools(&input, names.iter().map(String::as_str));
            let base = visibility_base(&input).unwrap();
            for (name, fast) in names.iter().zip(fast) {
                let doc = with_probe(&base, engine.catalogue(), name).unwrap();
                assert_eq!(fast, engine.visible_interpreted(doc, name), "{id}: {name}");
                hidden_somewhere += usize::from(!fast);
            }
        }
        assert!(hidden_somewhere > 5, "the filter hides tools from someone");
    }

    #[test]
    fn data_failing_the_policys_own_checks_does_not_load() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        let cfg = PolicyConfig {
            dir: dir.path().to_path_buf(),
            ..PolicyConfig::default()
        };
        PolicyEngine::load(&cfg).expect("the shipped data passes its checks");

        // A write-grant list in the format of earlier versions, and a misspelled setting.
        let data = std::fs::read_to_string(shipped.join("data.yaml")).unwrap();
        let old = data.replacen(
            "\n  principals: {}\n",
            "\n  principals: {}\n  grants:\n    - groups: [web-dev]\n      clusters: [dev]\n      namespaces: [web]\n  break_glass_group: [x]\n",
            1,
        );
        assert_ne!(old, data);
        std::fs::write(dir.path().join("data.yaml"), &old).unwrap();
        let err = PolicyEngine::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("data.yaml: the policy data fails its checks"),
            "{err}"
        );
        assert!(
            err.contains("data.gateway.grants is no longer read: move each write grant under the group it names (groups.<group>.writes)"),
            "{err}"
        );
        assert!(
            err.contains("data.gateway.break_glass_group is not a setting the policies read"),
            "{err}"
        );

        // Policies that define no data_errors rule are not checked.
        std::fs::remove_file(dir.path().join("data_check.rego")).unwrap();
        std::fs::remove_file(dir.path().join("data_check_test.rego")).unwrap();
        PolicyEngine::load(&cfg).expect("no data_errors rule, no checks");
    }

    #[test]
    fn decisions_of_the_wrong_shape_are_rejected() {
        let v = |j: &str| regorus::Value::from_json_str(j).unwrap();
        assert!(parse_decision(&v(r#"{"allow": "yes"}"#)).is_err());
        assert!(parse_decision(&v(r#"{"reasons": []}"#)).is_err());
        assert!(parse_decision(&v(r#"true"#)).is_err());
        assert!(parse_decision(&v(r#"{"allow": true, "reasons": "x"}"#)).is_err());
        let d = parse_decision(&v(r#"{"allow": false}"#)).unwrap();
        assert_eq!(d.reasons.len(), 1, "a deny always carries a reason");
        assert_eq!(d.redact, vec!["baseline"]);
    }
}
