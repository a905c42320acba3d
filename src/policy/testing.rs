//! `policy test` and `policy eval`: the `opa test` habit without OPA.
//!
//! regorus has no test runner, so this one does what `opa test` does for the subset we use:
//! load every policy, test and data file of the directory into one engine, then evaluate
//! each rule named `test_*` in a `*_test.rego` file on its own clone. A test passes when it
//! evaluates to `true`; `false`, undefined and errors fail it.
//!
//! Fixtures pin recorded decisions: each `NAME.expected.json` in `fixtures/` (or the
//! directory `--fixtures` names) states what the policy must decide for `NAME.json`, an
//! audit record as the gateway wrote it (its input is rebuilt as `policy replay` rebuilds
//! it) or a whole input document. They are decided like the gateway decides, not with the
//! test engine.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::bundle::{FileRole, Snapshot};
use super::{Decision, PolicyEngine, PolicyError, build_engine};
use crate::config::PolicyConfig;

/// Outcome of one `test_*` rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: PathBuf,
    /// Full rule path, e.g. `data.eks_mcp.gateway_test.test_secret_read_is_denied`.
    pub name: String,
    pub passed: bool,
    /// Why it failed: `false`, `undefined`, or the evaluation error.
    pub failure: Option<String>,
    pub duration: Duration,
}

/// Outcome of a `policy test` run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub results: Vec<TestResult>,
    /// The directory did not load (a parse error in a policy or test file, bad data).
    pub load_error: Option<String>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
    /// True when everything loaded, at least one test ran, and every test passed.
    pub fn success(&self) -> bool {
        self.load_error.is_none() && !self.results.is_empty() && self.failed() == 0
    }
}

/// Run every `test_*` rule of every `*_test.rego` under `dir`, then the fixtures of
/// `dir/fixtures` when that directory exists.
pub fn run_tests(dir: &Path) -> TestReport {
    let fixtures = dir.join(super::bundle::FIXTURES_DIR);
    run_tests_with(dir, fixtures.is_dir().then_some(fixtures.as_path()))
}

/// [`run_tests`] with the fixtures taken from `fixtures` (none when `None`).
pub fn run_tests_with(dir: &Path, fixtures: Option<&Path>) -> TestReport {
    let mut report = run_rego_tests(dir);
    if report.load_error.is_some() {
        return report;
    }
    if let Some(fixtures) = fixtures {
        match run_fixtures(dir, fixtures) {
            Ok(results) => report.results.extend(results),
            Err(e) => report.load_error = Some(e),
        }
    }
    report
}

/// Decide every fixture of `fixtures` with the policy in `dir`.
fn run_fixtures(dir: &Path, fixtures: &Path) -> Result<Vec<TestResult>, String> {
    let entries = std::fs::read_dir(fixtures)
        .map_err(|e| format!("cannot read fixtures {}: {e}", fixtures.display()))?;
    let mut expected: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(EXPECTED_SUFFIX))
        })
        .collect();
    expected.sort();
    if expected.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = PolicyConfig {
        dir: dir.to_path_buf(),
        ..PolicyConfig::default()
    };
    let engine = PolicyEngine::load(&cfg).map_err(|e| e.to_string())?;
    let redactor = super::redactor_for(dir).map_err(|e| format!("{e:#}"))?;
    Ok(expected
        .into_iter()
        .map(|path| {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stem = file_name.trim_end_matches(EXPECTED_SUFFIX).to_string();
            let started = Instant::now();
            let failure = check_fixture(&engine, &redactor, &path, &stem).err();
            TestResult {
                file: path.clone(),
                name: format!("fixture {stem}"),
                passed: failure.is_none(),
                failure,
                duration: started.elapsed(),
            }
        })
        .collect())
}

const EXPECTED_SUFFIX: &str = ".expected.json";

/// What a fixture expects; every key given must hold.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    allow: bool,
    /// The decision's rules, as a set.
    rules: Option<Vec<String>>,
    /// The redaction profiles, as a set.
    redact: Option<Vec<String>>,
    /// Each string must occur in one of the reasons.
    reasons: Option<Vec<String>>,
}

fn check_fixture(
    engine: &PolicyEngine,
    redactor: &crate::redact::Redactor,
    expected_path: &Path,
    stem: &str,
) -> Result<(), String> {
    let read = |p: &Path| -> Result<serde_json::Value, String> {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    };
    let expected: Expected = serde_json::from_value(read(expected_path)?).map_err(|e| {
        format!(
            "{}: {e}. Fix: write {{\"allow\": bool, \"rules\": [..], \"redact\": [..], \"reasons\": [..]}} (allow required)",
            expected_path.display()
        )
    })?;
    let input_path = expected_path.with_file_name(format!("{stem}.json"));
    let input = read(&input_path)?;
    let mut decision = if input.get("decision_id").is_some() {
        let rec: crate::audit::AuditRecord = serde_json::from_value(input)
            .map_err(|e| format!("{}: not an audit record: {e}", input_path.display()))?;
        let input = rec
            .input(engine.catalogue())
            .map_err(|e| format!("{}: {e}", input_path.display()))?;
        engine.decide(&input)
    } else {
        engine.decide_value(input)
    };
    decision.redact_reasons(redactor);
    let mut problems = Vec::new();
    if decision.allow != expected.allow {
        problems.push(format!(
            "expected {}, got {}",
            verdict(expected.allow),
            verdict(decision.allow)
        ));
    }
    let same_set = |a: &[String], b: &[String]| {
        let mut a = a.to_vec();
        let mut b = b.to_vec();
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        a == b
    };
    if let Some(rules) = &expected.rules
        && !same_set(rules, &decision.rules)
    {
        problems.push(format!(
            "expected rules {rules:?}, got {:?}",
            decision.rules
        ));
    }
    if let Some(redact) = &expected.redact
        && !same_set(redact, &decision.redact)
    {
        problems.push(format!(
            "expected redaction {redact:?}, got {:?}",
            decision.redact
        ));
    }
    for want in expected.reasons.iter().flatten() {
        if !decision.reasons.iter().any(|r| r.contains(want.as_str())) {
            problems.push(format!(
                "no reason contains {want:?}; reasons: {:?}",
                decision.reasons
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn verdict(allow: bool) -> &'static str {
    if allow { "allow" } else { "deny" }
}

/// The `test_*` rules only.
fn run_rego_tests(dir: &Path) -> TestReport {
    let snap = match Snapshot::read(dir) {
        Ok(s) => s,
        Err(e) => {
            return TestReport {
                results: Vec::new(),
                load_error: Some(e.to_string()),
            };
        }
    };
    let engine = match build_engine(&snap, dir, true) {
        Ok(e) => e,
        Err(e) => {
            return TestReport {
                results: Vec::new(),
                load_error: Some(e.to_string()),
            };
        }
    };
    let mut results = Vec::new();
    for file in snap.of(FileRole::Test) {
        let Some(package) = package_of(&file.text) else {
            results.push(TestResult {
                file: file.path.clone(),
                name: "package".to_string(),
                passed: false,
                failure: Some("no package declaration".to_string()),
                duration: Duration::ZERO,
            });
            continue;
        };
        for rule in test_rule_names(&file.text) {
            let name = format!("data.{package}.{rule}");
            let started = Instant::now();
            let mut e = engine.clone();
            let outcome = e.eval_rule(name.clone());
            let duration = started.elapsed();
            let failure = match outcome {
                Ok(regorus::Value::Bool(true)) => None,
                Ok(regorus::Value::Undefined) => {
                    Some("undefined (a condition in the test body did not hold)".to_string())
                }
                Ok(v) => Some(format!("evaluated to {v}")),
                Err(err) => Some(err.to_string()),
            };
            results.push(TestResult {
                file: file.path.clone(),
                name,
                passed: failure.is_none(),
                failure,
                duration,
            });
        }
    }
    TestReport {
        results,
        load_error: None,
    }
}

/// `opa test`-style text: failures with their cause, then one line per test and a summary.
pub fn format_report(report: &TestReport, verbose: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(e) = &report.load_error {
        let _ = writeln!(out, "error: {e}");
        return out;
    }
    if report.results.is_empty() {
        let _ = writeln!(
            out,
            "no tests found (rules named test_* in *_test.rego files)"
        );
        return out;
    }
    let mut current: Option<&Path> = None;
    for r in &report.results {
        if !verbose && r.passed {
            continue;
        }
        if current != Some(r.file.as_path()) {
            let _ = writeln!(out, "{}:", r.file.display());
            current = Some(r.file.as_path());
        }
        let status = if r.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "{}: {status} ({:.1?})", r.name, r.duration);
        if let Some(f) = &r.failure {
            let _ = writeln!(out, "  {f}");
        }
    }
    let _ = writeln!(out, "{}", "-".repeat(80));
    if report.passed() > 0 {
        let _ = writeln!(out, "PASS: {}/{}", report.passed(), report.results.len());
    }
    if report.failed() > 0 {
        let _ = writeln!(out, "FAIL: {}/{}", report.failed(), report.results.len());
    }
    out
}

/// `policy eval --input FILE`: the decision of the policy in `dir` for one input document
/// (JSON text of the whole document, as documented in docs/policy.md).
pub fn eval_file(dir: &Path, input_json: &str) -> Result<Decision, PolicyError> {
    let cfg = PolicyConfig {
        dir: dir.to_path_buf(),
        ..PolicyConfig::default()
    };
    let engine = PolicyEngine::load(&cfg)?;
    let input: serde_json::Value =
        serde_json::from_str(input_json).map_err(|e| PolicyError::Input {
            message: format!("{e}. Fix: give a JSON object"),
        })?;
    if !input.is_object() {
        return Err(PolicyError::Input {
            message: "is not a JSON object".to_string(),
        });
    }
    Ok(engine.decide_value(input))
}

/// The package of a Rego file (`package a.b` → `a.b`).
fn package_of(text: &str) -> Option<String> {
    text.lines().map(str::trim).find_map(|l| {
        let rest = l.strip_prefix("package")?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        Some(rest.split('#').next().unwrap_or("").trim().to_string())
    })
}

/// Names of rules starting with `test_` declared at the start of a line, in file order,
/// each once.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_package_and_test_rules() {
        let src = "# c\npackage eks_mcp.gateway_test # x\n\ntest_a if {\n  true\n}\n\
                   test_b if true\nnot_a_test if true\n  test_indented if true\ntest_a if false\n";
        assert_eq!(package_of(src).as_deref(), Some("eks_mcp.gateway_test"));
        assert_eq!(test_rule_names(src), vec!["test_a", "test_b"]);
    }
}
