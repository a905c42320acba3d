//! `policy test` and `policy eval`: the `opa test` habit without OPA.
//!
//! regorus has no test runner, so this one does what `opa test` does for the subset we use:
//! load every policy, test and data file of the directory into one engine, then evaluate
//! each rule named `test_*` in a `*_test.rego` file on its own clone. A test passes when it
//! evaluates to `true`; `false`, undefined and errors fail it.
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

/// Run every `test_*` rule of every `*_test.rego` under `dir`.
pub fn run_tests(dir: &Path) -> TestReport {
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
