//! `policy replay`: traffic recorded through the running gateway (several principals with API
//! keys, both eras, reads, writes, Secret calls and denials against the embedded upstream)
//! replayed by the `eks-mcp-gateway` binary against the shipped policy (nothing changes),
//! a policy that revokes a write grant (exactly the granted writes flip to deny, and
//! `--fail-on allow-to-deny` fails the run), and one that widens a namespace allowlist
//! (exactly the denied reads there flip to allow); bad lines are skipped and counted.
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{Harness, McpClient, Options, SESSION_ERA, STATELESS, policy_dir};

/// API keys and who they name.
const KEYS: [(&str, &str, &str); 4] = [
    ("key-alice-0001", "alice", "payments-dev"),
    ("key-wendy-0002", "wendy", "web-dev"),
    ("key-rita-0003", "rita", "readers"),
    ("key-root-0004", "root", "platform-admins"),
];

/// One caller: an MCP client with a bearer API key, in one era.
struct Caller {
    client: McpClient,
    bearer: String,
    stateless: bool,
    posts: usize,
}

impl Caller {
    async fn new(h: &Harness, key: &str, stateless: bool) -> Caller {
        let mut c = Caller {
            client: h.client(),
            bearer: format!("Bearer {key}"),
            stateless,
            posts: 0,
        };
        if !stateless {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": SESSION_ERA, "capabilities": {},
                           "clientInfo": {"name": "replay-test", "version": "1.0"}}});
            let r = c.post(&init, &[]).await;
            assert_eq!(r.status, 200, "initialize: {}", r.text());
            c.client.session = r
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            c.client.protocol = Some(SESSION_ERA.to_owned());
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            assert_eq!(c.post(&note, &[]).await.status, 202);
        }
        c
    }

    async fn post(&mut self, body: &Value, headers: &[(&str, &str)]) -> crate::harness::Reply {
        self.posts += 1;
        let mut all = vec![("authorization", self.bearer.as_str())];
        all.extend_from_slice(headers);
        self.client
            .post_raw(serde_json::to_vec(body).unwrap(), &all)
            .await
    }

    /// A tools/call; true when the policy let it through (the upstream may still answer
    /// with a tool error, e.g. for a namespace the embedded cluster does not have).
    async fn call(&mut self, tool: &str, args: Value) -> bool {
        let id = self.client.next_id();
        let mut params = json!({"name": tool, "arguments": args});
        let r = if self.stateless {
            params["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(STATELESS);
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            self.post(
                &body,
                &[
                    ("mcp-protocol-version", STATELESS),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", tool),
                ],
            )
            .await
        } else {
            let body =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params});
            self.post(&body, &[]).await
        };
        assert_eq!(r.status, 200, "{tool}: {}", r.text());
        r.result()["_meta"]["io.github.eks-mcp-gateway/denial"].is_null()
    }
}

fn list(ns: Option<&str>) -> Value {
    let mut a = json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1"});
    if let Some(ns) = ns {
        a["namespace"] = json!(ns);
    }
    a
}

fn patch(ns: &str, name: &str) -> Value {
    json!({"operation": "patch", "cluster_name": "dev", "kind": "Deployment", "api_version": "apps/v1",
           "name": name, "namespace": ns, "body": {"spec": {"replicas": 2}}})
}

/// Drive a mix of traffic through a gateway with API-key callers and return the audit file
/// (a copy that outlives the gateway) with the number of records in it.
async fn record_traffic(dir: &Path) -> (PathBuf, usize) {
    let keys = dir.join("keys.yaml");
    let mut text = String::from("keys:\n");
    for (key, who, group) in KEYS {
        text.push_str(&format!(
            "  - sha256: {}\n    principal: {who}\n    groups: [{group}]\n",
            eks_mcp_gateway::identity::api_key_hash(key)
        ));
    }
    std::fs::write(&keys, text).unwrap();
    let auth = format!("mode: api_key\nfile: {}\n", keys.display());
    let h = Harness::start_with(
        Options::default().tweak(move |cfg| cfg.auth = serde_yaml::from_str(&auth).unwrap()),
    )
    .await;
    let secret_manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: leaked\n  namespace: web\n\
         stringData:\n  password: {}\n",
        eks_mcp_gateway::sim::planted::DB_PASSWORD
    );
    let mut posts = 0;
    for round in 0..2 {
        let stateless = round == 1;
        let mut alice = Caller::new(&h, KEYS[0].0, stateless).await;
        assert!(
            alice
                .call("list_k8s_resources", list(Some("payments")))
                .await
        );
        assert!(
            alice
                .call("manage_k8s_resource", patch("payments", "payments-api"))
                .await
        );
        assert!(
            !alice
                .call(
                    "read_k8s_resource",
                    json!({"cluster_name": "dev", "kind": "Secret", "api_version": "v1",
                           "namespace": "payments", "name": "payments-db-credentials"}),
                )
                .await
        );
        assert!(!alice.call("list_k8s_resources", list(Some("web"))).await);
        assert!(
            alice
                .call(
                    "get_pod_logs",
                    json!({"cluster_name": "dev", "namespace": "payments",
                                                  "pod_name": eks_mcp_gateway::sim::CRASHLOOP_POD})
                )
                .await
        );

        let mut wendy = Caller::new(&h, KEYS[1].0, stateless).await;
        assert!(
            wendy
                .call("manage_k8s_resource", patch("web", "web-frontend"))
                .await
        );
        assert!(
            wendy
                .call("list_k8s_resources", list(Some("frontend")))
                .await
        );
        let mut delete = patch("web", "web-frontend");
        delete["operation"] = json!("delete");
        assert!(!wendy.call("manage_k8s_resource", delete).await);
        assert!(
            !wendy
                .call(
                    "apply_yaml",
                    json!({"cluster_name": "dev", "namespace": "web", "yaml_content": secret_manifest}),
                )
                .await
        );

        let mut rita = Caller::new(&h, KEYS[2].0, stateless).await;
        assert!(
            rita.call("list_k8s_resources", list(Some("payments")))
                .await
        );
        assert!(
            !rita
                .call("manage_k8s_resource", patch("payments", "payments-api"))
                .await
        );
        assert!(!rita.call("list_k8s_resources", list(None)).await);

        let mut root = Caller::new(&h, KEYS[3].0, stateless).await;
        assert!(root.call("list_k8s_resources", list(None)).await);
        let tools = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list", "params": {}});
        if !stateless {
            assert_eq!(root.post(&tools, &[]).await.status, 200);
        }
        posts += alice.posts + wendy.posts + rita.posts + root.posts;
    }
    let records = h.audit_records(posts).await;
    assert_eq!(records.len(), posts, "one record per request");
    let out = dir.join("audit.jsonl");
    std::fs::copy(&h.audit_path, &out).unwrap();
    h.stop().await;
    (out, posts)
}

fn records(path: &Path) -> Vec<Value> {
    crate::harness::read_jsonl(path)
}

/// The shipped policies (files only: not `fixtures/`) copied for editing.
fn policy_copy(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(policy_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let data = dir.path().join("data.yaml");
    let before = std::fs::read_to_string(&data).unwrap();
    let after = edit(before.clone());
    assert_ne!(before, after, "the edit changed data.yaml");
    std::fs::write(&data, after).unwrap();
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", self.stdout, self.stderr))
    }
}

fn replay(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eks-mcp-gateway"));
    cmd.arg("policy")
        .arg("replay")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || pipe.write_all(&bytes));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Decision ids of the flips of one direction, from the JSON report's examples would only
/// give one per group; the exact set comes from the records themselves.
fn ids(recs: &[Value], keep: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    recs.iter()
        .filter(|r| keep(r))
        .map(|r| r["decision_id"].as_str().unwrap().to_owned())
        .collect()
}

fn group<'a>(report: &'a Value, change: &str, by: &str) -> Vec<(&'a str, u64)> {
    report["flips"][change][by]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|g| (g["key"].as_str().unwrap(), g["count"].as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_traffic_replays_against_policy_changes() {
    let work = tempfile::tempdir().unwrap();
    let (audit, n) = record_traffic(work.path()).await;
    let recs = records(&audit);
    let audit_arg = audit.to_str().unwrap();

    // The recording holds what the test is about: several principals, both verdicts,
    // Secret calls, redacted arguments, both eras, schema 2 records.
    let principals: BTreeSet<&str> = recs
        .iter()
        .map(|r| r["principal"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(principals.len(), 4, "{principals:?}");
    assert!(
        recs.iter()
            .any(|r| r["decision"]["rules"] == json!(["secrets.read"]))
    );
    assert!(
        recs.iter()
            .any(|r| r["decision"]["rules"] == json!(["secrets.write"]))
    );
    assert!(
        recs.iter()
            .all(|r| r["schema"] == 2 && r["gateway"]["mode"] == "enforce")
    );
    let applied = recs.iter().find(|r| r["tool"] == "apply_yaml").unwrap();
    assert!(
        !applied
            .to_string()
            .contains(eks_mcp_gateway::sim::planted::DB_PASSWORD),
        "arguments are recorded redacted"
    );

    // 1. The shipped policy reproduces every recorded decision, reasons and redaction
    //    profiles included.
    let shipped = policy_dir();
    let run = replay(
        &[
            "--audit",
            audit_arg,
            "--dir",
            shipped.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["replayed"], n as u64, "{r}");
    assert_eq!(r["unchanged"], n as u64, "{r}");
    assert_eq!(r["allow_to_deny"], 0);
    assert_eq!(r["deny_to_allow"], 0);
    assert_eq!(r["changed"]["total"], 0, "{r}");
    assert_eq!(r["skipped"], 0);
    assert_eq!(r["inexact"]["facts_changed"], 0, "{r}");
    assert_eq!(
        r["inexact"]["arguments_redacted"], 2,
        "the two Secret manifests: {r}"
    );

    // 2. Revoking payments-dev's write grant: exactly alice's granted writes flip to deny,
    //    reported under writes.no_grant / payments-dev / manage_k8s_resource.
    let revoked = policy_copy(|d| {
        d.replace(
            "      writes:\n        - id: payments-dev-writes\n          clusters: [dev, \"dev-*\", staging, \"staging-*\"]\n          namespaces: [\"payments\", \"payments-*\"]\n",
            "",
        )
    });
    let revoked_dir = revoked.path().to_str().unwrap();
    let want = ids(&recs, |r| {
        r["principal"]["id"] == "alice"
            && r["facts"]["access"] == "write"
            && r["decision"]["allow"] == true
    });
    assert_eq!(want.len(), 2);
    let run = replay(
        &[
            "--audit",
            audit_arg,
            "--dir",
            revoked_dir,
            "--format",
            "json",
            "--fail-on",
            "allow-to-deny",
        ],
        None,
    );
    assert_eq!(run.code, 2, "--fail-on allow-to-deny fails: {}", run.stderr);
    let r = run.json();
    assert_eq!(r["allow_to_deny"], want.len() as u64, "{r}");
    assert_eq!(r["deny_to_allow"], 0);
    assert_eq!(r["unchanged"], (n - want.len()) as u64);
    assert_eq!(
        group(&r, "allow_to_deny", "by_rule"),
        vec![("writes.no_grant", 2)]
    );
    assert_eq!(
        group(&r, "allow_to_deny", "by_principal_group"),
        vec![("payments-dev", 2)]
    );
    assert_eq!(
        group(&r, "allow_to_deny", "by_tool"),
        vec![("manage_k8s_resource", 2)]
    );
    let example = &r["flips"]["allow_to_deny"]["by_rule"][0]["example"];
    assert!(
        want.contains(example["decision_id"].as_str().unwrap()),
        "{example}"
    );
    assert_eq!(example["arguments"]["namespace"], "payments");
    assert_eq!(example["before"]["rules"], json!(["writes.granted"]));
    // Widening is not what this change does: deny-to-allow does not fail it.
    let run = replay(
        &[
            "--audit",
            audit_arg,
            "--dir",
            revoked_dir,
            "--fail-on",
            "deny-to-allow",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("allow -> deny"))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert_eq!(line.split_whitespace().last(), Some("2"), "{}", run.stdout);
    assert!(run.stdout.contains("writes.no_grant"), "{}", run.stdout);
    // The same flips against a baseline directory instead of the recorded decisions.
    let run = replay(
        &[
            "--audit",
            audit_arg,
            "--dir",
            revoked_dir,
            "--baseline-dir",
            shipped.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let r = run.json();
    assert_eq!(r["allow_to_deny"], 2, "{r}");
    assert_eq!(r["baseline_differs_from_recorded"], 0, "{r}");
    assert!(r["baseline"]["revision"].is_string());

    // 3. Widening payments-dev's namespace allowlist to `web`: exactly alice's denied reads
    //    of web flip to allow, and `--fail-on deny-to-allow` blocks the change. Read from
    //    stdin this time.
    let widened = policy_copy(|d| {
        d.replacen(
            "namespaces: [\"payments\", \"payments-*\"]\n      writes:",
            "namespaces: [\"payments\", \"payments-*\", \"web\"]\n      writes:",
            1,
        )
    });
    let want = ids(&recs, |r| {
        r["principal"]["id"] == "alice"
            && r["facts"]["namespaces"] == json!(["web"])
            && r["decision"]["allow"] == false
    });
    assert_eq!(want.len(), 2);
    let bytes = std::fs::read(&audit).unwrap();
    let run = replay(
        &[
            "--audit",
            "-",
            "--dir",
            widened.path().to_str().unwrap(),
            "--format",
            "json",
            "--fail-on",
            "deny-to-allow",
        ],
        Some(&bytes),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["deny_to_allow"], 2, "{r}");
    assert_eq!(r["allow_to_deny"], 0);
    assert_eq!(
        group(&r, "deny_to_allow", "by_rule"),
        vec![("namespaces.not_allowed", 2)]
    );
    assert_eq!(
        group(&r, "deny_to_allow", "by_tool"),
        vec![("list_k8s_resources", 2)]
    );
    let example = &r["flips"]["deny_to_allow"]["by_tool"][0]["example"];
    assert!(
        want.contains(example["decision_id"].as_str().unwrap()),
        "{example}"
    );
    assert_eq!(example["after"]["allow"], true);
    assert_eq!(r["files"], json!(["<stdin>"]));

    // 4. A truncated record, a text line and a JSON line from another program, and a blank
    //    line: the three bad ones are counted with their line numbers and skipped.
    let mut text = std::fs::read_to_string(&audit).unwrap();
    let first = text.lines().next().unwrap().to_owned();
    text.push_str(&first[..first.len() / 2]);
    text.push('\n');
    text.push_str(
        "2026-12-05T09:00:00Z INFO eks_mcp_gateway::front: listening on 127.0.0.1:8080\n",
    );
    text.push('\n');
    text.push_str("{\"level\":\"INFO\",\"fields\":{\"message\":\"audit sink recovered\"}}\n");
    let rotated = work.path().join("audit.jsonl.1");
    std::fs::write(&rotated, text).unwrap();
    let run = replay(
        &[
            "--audit",
            rotated.to_str().unwrap(),
            audit_arg,
            "--dir",
            shipped.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r = run.json();
    assert_eq!(r["replayed"], 2 * n as u64, "both files replayed: {r}");
    assert_eq!(r["unchanged"], 2 * n as u64);
    assert_eq!(r["skipped"], 3, "{r}");
    assert_eq!(
        r["skipped_by_reason"],
        json!({"not_json": 2, "not_a_record": 1})
    );
    let skipped: Vec<(u64, &str)> = r["skipped_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["line"].as_u64().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    let n = n as u64;
    assert_eq!(
        skipped,
        vec![
            (n + 1, "not_json"),
            (n + 2, "not_json"),
            (n + 4, "not_a_record")
        ]
    );
    assert!(
        r["skipped_lines"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{r}"
    );
    assert_eq!(r["skipped_lines"][0]["file"], rotated.to_str().unwrap());

    // Nothing replayable is an error, not a green run.
    let junk = work.path().join("junk.log");
    std::fs::write(&junk, "not an audit file\n").unwrap();
    let run = replay(
        &[
            "--audit",
            junk.to_str().unwrap(),
            "--dir",
            shipped.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no audit record could be replayed"),
        "{}",
        run.stderr
    );
}

/// `policy test` fixtures: the shipped recorded decisions hold under the shipped policy and
/// one of them fails, naming what changed, once the write grant it relies on is revoked.
#[test]
fn recorded_fixtures_pin_decisions_in_policy_test() {
    use eks_mcp_gateway::policy::{format_report, run_tests, run_tests_with};
    let shipped = run_tests(&policy_dir());
    let fixtures: Vec<_> = shipped
        .results
        .iter()
        .filter(|r| r.name.starts_with("fixture "))
        .collect();
    assert!(fixtures.len() >= 3, "{}", format_report(&shipped, true));
    assert!(shipped.success(), "{}", format_report(&shipped, false));

    let revoked = policy_copy(|d| {
        d.replace(
            "      writes:\n        - id: payments-dev-writes\n          clusters: [dev, \"dev-*\", staging, \"staging-*\"]\n          namespaces: [\"payments\", \"payments-*\"]\n",
            "",
        )
    });
    let report = run_tests_with(revoked.path(), Some(&policy_dir().join("fixtures")));
    // (Rego unit tests about that grant fail too; the fixtures are what is checked here.)
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| !r.passed && r.name.starts_with("fixture "))
        .collect();
    assert_eq!(failed.len(), 1, "{}", format_report(&report, false));
    assert_eq!(failed[0].name, "fixture payments-dev-patch-on-dev");
    let why = failed[0].failure.as_deref().unwrap();
    assert!(why.contains("expected allow, got deny"), "{why}");
    assert!(why.contains("writes.no_grant"), "{why}");
}
