//! classify on manifests that contain a Kubernetes Secret (`apply_yaml.yaml_content`,
//! `manage_k8s_resource` kind/body), written in every spelling the upstream reads as a Secret.
//!
//! The input drives a generator: it picks how the Secret is spelled and planted (kind
//! spellings and aliases, quoted, tagged `!!str`, folded, flow and JSON style, through an
//! anchor and alias, through a `<<` / `!!merge` / `%TAG` merge key, as a `SecretList`, as
//! an item of a `v1/List`, of a List inside a List, as the `kind` argument or body of
//! `manage_k8s_resource`), where among filler documents it goes, which YAML directives and
//! comments surround it, and fuzzer bytes inserted as a document of their own, a comment or a
//! quoted value elsewhere. The target knows it planted a Secret, so it asserts:
//!
//!   the call is denied as unparseable (`parse_error`, the shipped policy denies it), or a
//!   resource fact of kind `Secret` is present.
//!
//! Never "no facts", never a Secret the policy cannot see.
#![no_main]
use eks_mcp_gateway::classify::TargetFacts;
use eks_mcp_gateway_fuzz::{Choices, catalogue};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// What the dynamic client reads as the Secret kind (`kind` is matched without regard to
/// case, plural names too).
const SPELLINGS: [&str; 7] = [
    "Secret", "secret", "SECRET", "secrets", "Secrets", "sEcReT", "SECRETS",
];
const NAMESPACES: [&str; 4] = ["payments", "default", "kube-system", "payments-dev"];

fuzz_target!(|data: &[u8]| {
    let mut c = Choices::new(data);
    let kind = SPELLINGS[c.below(SPELLINGS.len())];
    let ns = NAMESPACES[c.below(NAMESPACES.len())];
    let how = c.byte();
    let layout = c.byte();
    let noise_len = c.below(96);
    let noise = String::from_utf8_lossy(c.take(noise_len)).into_owned();

    let (tool, args) = if how % 8 == 7 {
        (
            "manage_k8s_resource",
            k8s_resource_args(&mut c, kind, ns, &noise),
        )
    } else {
        let doc = secret_document(how, kind, ns);
        let yaml = manifest(&mut c, layout, &doc, &noise);
        let mut args = json!({"cluster_name": "dev", "yaml_content": yaml});
        if c.byte() % 2 == 0 {
            args["namespace"] = json!(ns);
        }
        ("apply_yaml", args)
    };
    let (_, facts) = catalogue().classify(tool, &args);
    assert!(
        facts.parse_error.is_some() || has_secret(&facts),
        "a planted Secret is neither denied nor a fact\n{tool} {}\nfacts: {}",
        serde_json::to_string_pretty(&args).unwrap(),
        serde_json::to_string_pretty(&facts).unwrap()
    );
});

fn has_secret(f: &TargetFacts) -> bool {
    f.resources
        .iter()
        .any(|r| r.kind.as_deref() == Some("Secret"))
}

/// One YAML document whose reading by the upstream is a Secret.
fn secret_document(how: u8, kind: &str, ns: &str) -> String {
    let meta = format!("metadata:\n  name: planted\n  namespace: {ns}\n");
    let data = "stringData:\n  token: planted\n";
    match how % 14 {
        0 => format!("apiVersion: v1\nkind: {kind}\n{meta}{data}"),
        1 => format!("apiVersion: v1\nkind: \"{kind}\"\n{meta}{data}"),
        2 => format!("apiVersion: v1\nkind: '{kind}'\n{meta}{data}"),
        3 => format!("apiVersion: v1\nkind: !!str {kind}\n{meta}{data}"),
        4 => format!("apiVersion: v1\nkind: >-\n  {kind}\n{meta}{data}"),
        5 => format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"{kind}\", \"metadata\": {{\"name\": \"planted\", \"namespace\": \"{ns}\"}}, \"stringData\": {{\"token\": \"planted\"}}}}\n"
        ),
        6 => format!(
            "{{apiVersion: v1, kind: {kind}, metadata: {{name: planted, namespace: {ns}}}}}\n"
        ),
        7 => format!("base: &b {{kind: {kind}}}\napiVersion: v1\n<<: *b\n{meta}{data}"),
        8 => format!(
            "apiVersion: v1\n{meta}!!merge z: {{kind: {kind}, stringData: {{token: planted}}}}\n"
        ),
        9 => format!("apiVersion: v1\n{meta}<<: [{{kind: {kind}}}, {{kind: ConfigMap}}]\n"),
        10 => format!("apiVersion: v1\nk: &k {kind}\nkind: *k\n{meta}{data}"),
        11 => format!(
            "apiVersion: v1\nkind: {kind}List\nitems:\n- metadata: {{name: planted, namespace: {ns}}}\n  stringData: {{token: planted}}\n"
        ),
        12 => format!(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: filler}}\n- apiVersion: v1\n  kind: {kind}\n  metadata: {{name: planted, namespace: {ns}}}\n"
        ),
        _ => format!(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: v1\n    kind: {kind}\n    metadata: {{name: planted}}\n"
        ),
    }
}

const FILLERS: [&str; 3] = [
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: filler\ndata:\n  a: b\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: nginx}]\n",
    "apiVersion: v1\nkind: Service\nmetadata: {name: svc}\nspec: {ports: [{port: 80}]}\n",
];

/// The planted document among fillers, with directives, comments and noise around it.
fn manifest(c: &mut Choices, layout: u8, doc: &str, noise: &str) -> String {
    let mut out = String::new();
    if layout & 1 != 0 {
        out.push_str("%YAML 1.1\n---\n");
    }
    let before = c.below(3);
    let after = c.below(3);
    let mut docs: Vec<String> = Vec::new();
    for i in 0..before {
        docs.push(FILLERS[(i + layout as usize) % FILLERS.len()].to_string());
    }
    let mut planted = doc.to_string();
    match (layout >> 1) % 5 {
        // Fuzzer bytes as a comment line before the Secret.
        1 => planted = format!("# {}\n{planted}", noise.replace(['\n', '\r'], " ")),
        // As a quoted value in a filler.
        2 => docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: noisy}}\ndata:\n  note: {}\n",
            serde_json::to_string(noise).unwrap()
        )),
        // As a document of its own, before the Secret.
        3 => docs.push(noise.to_string()),
        _ => {}
    }
    docs.push(planted);
    for i in 0..after {
        docs.push(FILLERS[(i + 1) % FILLERS.len()].to_string());
    }
    if (layout >> 1) % 5 == 4 {
        docs.push(noise.to_string());
    }
    for (i, d) in docs.iter().enumerate() {
        if i > 0 || layout & 8 != 0 {
            out.push_str(if layout & 16 != 0 {
                "--- # doc\n"
            } else {
                "---\n"
            });
        }
        out.push_str(d);
        if !d.ends_with('\n') {
            out.push('\n');
        }
        if layout & 32 != 0 {
            out.push_str("...\n");
        }
    }
    if layout & 64 != 0 {
        out = out.replace('\n', "\r\n");
    }
    out
}

/// `manage_k8s_resource` naming a Secret: as the `kind` argument, in the body, or as a
/// typed or plain List body whose items are Secrets.
fn k8s_resource_args(c: &mut Choices, kind: &str, ns: &str, noise: &str) -> Value {
    let op = [
        "create", "replace", "patch", "delete", "read", "get", "CREATE",
    ][c.below(7)];
    let body_item = json!({"metadata": {"name": "planted", "namespace": ns, "labels": {"note": noise}},
                           "stringData": {"token": "planted"}});
    let mut args = json!({"operation": op, "cluster_name": "dev", "api_version": "v1"});
    match c.below(5) {
        0 => {
            args["kind"] = json!(kind);
            args["name"] = json!("planted");
            args["namespace"] = json!(ns);
        }
        1 => {
            args["kind"] = json!(kind);
            let mut body = body_item.clone();
            body["kind"] = json!(kind);
            body["apiVersion"] = json!("v1");
            args["body"] = body;
        }
        2 => {
            args["kind"] = json!(format!("{kind}List"));
            args["body"] = json!({"items": [body_item]});
        }
        3 => {
            args["kind"] = json!("List");
            let mut item = body_item.clone();
            item["kind"] = json!(kind);
            args["body"] = json!({"apiVersion": "v1", "kind": "List", "items": [item]});
        }
        _ => {
            args["kind"] = json!(kind);
            args["namespace"] = json!(ns);
            if c.byte() % 2 == 0 {
                args["name"] = json!(noise);
            }
        }
    }
    args
}
