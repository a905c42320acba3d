//! Policy engine: shipped policies decide real tool calls; bypass attempts; reload; fail closed.
use std::path::PathBuf;

use eks_mcp_gateway::config::PolicyConfig;
use eks_mcp_gateway::policy::{PolicyEngine, format_report, run_tests};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

#[test]
fn shipped_policy_tests_pass() {
    let report = run_tests(&shipped());
    println!("{}", format_report(&report, true));
    assert!(report.success(), "{}", format_report(&report, false));
}

#[test]
fn shipped_policies_load() {
    let cfg = PolicyConfig {
        dir: shipped(),
        ..PolicyConfig::default()
    };
    PolicyEngine::load(&cfg).unwrap();
}
