//! Unit tests: each detector alone, profile handling, MCP message shapes.
use serde_json::{Value, json};

use super::*;

fn r() -> Redactor {
    Redactor::builtin()
}
fn base() -> Vec<String> {
    vec![BASELINE.to_string()]
}
/// Redact free text; return the output and the detector names found.
fn text(s: &str) -> (String, Vec<&'static str>) {
    let (out, found) = r().redact_text(s, &base());
    (out.into_owned(), found.iter().map(|f| f.detector).collect())
}
fn assert_text(input: &str, secret: &str, detector: &str) {
    let (out, found) = text(input);
    assert!(!out.contains(secret), "secret survived in {out:?}");
    assert!(
        out.contains(&format!("[REDACTED:{detector}]")),
        "expected {detector} in {out:?} (found {found:?})"
    );
    assert!(found.contains(&detector), "{found:?}");
}
fn tool_result(texts: &[&str]) -> Value {
    let content: Vec<Value> = texts
        .iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 3, "result": {"content": content, "isError": false}})
}

#[test]
fn shipped_policy_compiles_and_defines_the_documented_profiles() {
    let red = r();
    assert_eq!(
        red.profile_names(),
        ["baseline", "credentials", "secret_values", "service_tokens"]
    );
    assert_eq!(red.detector_names().len(), detectors::BUILTIN.len());
}

#[test]
fn aws_keys() {
    assert_text(
        "key id AKIAQ3EGTRMN7XZ4PLKD in use",
        "AKIAQ3EGTRMN7XZ4PLKD",
        "aws_access_key_id",
    );
    assert_text(
        "aws_secret_access_key = q8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2gH5jK8lZ",
        "q8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2gH5jK8lZ",
        "aws_secret_access_key",
    );
    // CSV export: the 40-char key right after the id, no key name.
    assert_text(
        "AKIAQ3EGTRMN7XZ4PLKD,q8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2gH5jK8lZ",
        "q8Zt2vN5mK1pL9xR4wE7",
        "aws_secret_access_key",
    );
    let tok = format!("IQoJb3JpZ2luX2VjEJr{}", "A1b2C3d4E5f6G7h8".repeat(12));
    assert_text(&format!("token {tok} end"), &tok[..30], "aws_session_token");
    assert_text(
        &format!("AWS_SESSION_TOKEN={tok}"),
        &tok[..30],
        "aws_session_token",
    );
    // Not keys: lower-case lookalikes, an AIDA user id, a git SHA near an id.
    assert_eq!(text("asia-pacific akiaqueue").1, Vec::<&str>::new());
}

#[test]
fn pem_private_key_whole_block_even_when_truncated() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx9vQ2pL7mN4rT8wXk\nq8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2\n-----END RSA PRIVATE KEY-----";
    let (out, found) = text(&format!("key:\n{key}\nafter"));
    assert_eq!(found, ["private_key"]);
    assert!(out.ends_with("[REDACTED:private_key]\nafter"), "{out}");
    let (out, _) =
        text("-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\nQ2pL7mN4");
    assert_eq!(out, "[REDACTED:private_key]");
    // Certificates are public.
    assert!(
        text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----")
            .1
            .is_empty()
    );
}

#[test]
fn jwt_bearer_basic() {
    let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJlX2J5dGVz";
    assert_text(&format!("sa token {jwt}"), jwt, "jwt");
    assert_text(
        "curl -H 'Authorization: Bearer 8f2k3j4h5g6f7d8s9a0' https://x",
        "8f2k3j4h5g6f7d8s9a0",
        "credential_assignment",
    );
    assert_text(
        "sent bearer 8f2k3j4h5g6f7d8s9a0",
        "8f2k3j4h5g6f7d8s9a0",
        "bearer_token",
    );
    // base64("admin:hunter22")
    assert_text(
        "proxy header basic YWRtaW46aHVudGVyMjI=",
        "YWRtaW46aHVudGVyMjI=",
        "basic_auth",
    );
    // Prose survives.
    assert!(
        text("the bearer authentication scheme; basic features")
            .1
            .is_empty()
    );
}

#[test]
fn connection_strings_lose_only_the_password() {
    let (out, found) = text(
        "DATABASE_URL is postgres://orders:Xk9vQ2pL7m@db.internal:5432/orders?sslmode=require",
    );
    assert_eq!(
        out,
        "DATABASE_URL is postgres://orders:[REDACTED:connection_string_password]@db.internal:5432/orders?sslmode=require"
    );
    assert_eq!(found, ["connection_string_password"]);
    assert_text(
        "redis://:s3cretpw@cache:6379/0",
        "s3cretpw",
        "connection_string_password",
    );
    assert!(
        text("see https://example.com:8443/path and http://user@host/")
            .1
            .is_empty()
    );
    // A password with `@` in it (unencoded, as people write them) is the userinfo up to the
    // last `@`, as URL parsers read it: none of it survives.
    let (out, _) = text("DATABASE_URL=postgres://app:p@ssw0rd@db.internal:5432/app");
    assert_eq!(
        out,
        "DATABASE_URL=postgres://app:[REDACTED:connection_string_password]@db.internal:5432/app"
    );
    // The fuzz target `redact_text`, minimised: the keyword detector took the `@` after
    // `pwd:` and left `;`, which a second pass read as a new password. The whole password
    // `@;` goes in one pass now, and a second pass changes nothing.
    // The keyword detector then read the marker plus `@` as the value of `pwd:`; a string
    // is read again until nothing more is found, so the output is the fixed point and a
    // second pass changes nothing.
    let (once, _) = text("kd://ppwd:@;@");
    assert_eq!(once, "kd://ppwd:[REDACTED:credential_assignment]");
    assert_eq!(text(&once), (once.clone(), vec![]));
    // Also minimised by `redact_text`: a marker's own `:` is not a userinfo colon, so the
    // redacted `p3://ppwd=…]@` (no password in it: its userinfo has no `:`) stays as it is.
    let (once, _) = text("p3://ppwd=3]@");
    assert_eq!(text(&once), (once.clone(), vec![]));
    assert!(once.starts_with("p3://ppwd=[REDACTED:"), "{once}");
    // A password after a marker-looking user is still found.
    let (out, _) = text("postgres://[REDACTED:jwt]:hunter2pw@db/x");
    assert!(!out.contains("hunter2pw"), "{out}");
}

#[test]
fn assignments_in_log_lines() {
    assert_text(
        "starting with password=hunter2 and more",
        "hunter2",
        "credential_assignment",
    );
    assert_text(
        "INFO token: 9f8e7d6c5b4a",
        "9f8e7d6c5b4a",
        "credential_assignment",
    );
    assert_text(
        r#"{"client_secret": "abc def ghi"} (python repr)"#,
        "abc def ghi",
        "credential_assignment",
    );
    assert_text(
        "{'db_password': 'S3cr3t!'}",
        "S3cr3t!",
        "credential_assignment",
    );
    assert_text(
        r#"msg={\"apiKey\":\"k-123456\"}"#,
        "k-123456",
        "credential_assignment",
    );
    assert_text(
        "GET /cb?access_token=ya29.a0Af&state=1 HTTP/1.1",
        "ya29.a0Af",
        "credential_assignment",
    );
    assert_text(
        "spring.datasource.password=Pa55 w0rd",
        "Pa55",
        "credential_assignment",
    );
    assert_text(
        "psql --password s3cr3t -h db",
        "s3cr3t",
        "credential_assignment",
    );
    // YAML: to the end of the line, and block scalars.
    let (out, _) = text("db:\n  password: two words\n  host: db\n");
    assert_eq!(
        out,
        "db:\n  password: [REDACTED:credential_assignment]\n  host: db\n"
    );
    let (out, _) = text("tls:\n  private_key: |\n    line1\n    line2\n  other: x\n");
    assert_eq!(
        out,
        "tls:\n  private_key: |\n    [REDACTED:credential_assignment]\n  other: x\n"
    );
    // Not credentials.
    for clean in [
        "TOKEN_TTL=3600 KEY_ID_LENGTH=16 password_min_length=12",
        "nextToken=AAAABBBB key=app.kubernetes.io/name",
        "password=${DB_PASSWORD} secret=null token=\"\"",
        "tokenizer=bert-base PWD=/home/app",
        "Mounted secret: default-token-abc? no separator here: secret \"db\" not found",
        "failed to fetch anonymous token: unexpected status from GET",
    ] {
        let (out, found) = text(clean);
        if clean.starts_with("Mounted") {
            // `secret: default-token-abc?` is an assignment by shape; it is redacted whole.
            assert!(found.iter().all(|d| *d == "credential_assignment"), "{out}");
        } else {
            assert!(found.is_empty(), "{clean} -> {out}");
        }
    }
}

#[test]
fn well_known_token_formats() {
    let cases = [
        (
            "ghp_",
            "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "github_token",
        ),
        (
            "pat",
            "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyz0123456789",
            "github_token",
        ),
        ("gl", "glpat-a1B2c3D4e5F6g7H8i9J0", "gitlab_token"),
        (
            "slack",
            "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
            "slack_token",
        ),
        (
            "hook",
            "hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX",
            "slack_webhook",
        ),
        ("stripe", "sk_live_51H8xYzAbCdEfGhIjKlMnOpQr", "stripe_key"),
        (
            "google",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
            "google_api_key",
        ),
        (
            "npm",
            "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "npm_token",
        ),
        (
            "sg",
            "SG.a1B2c3D4e5F6g7H8i9J0kL.a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V",
            "sendgrid_key",
        ),
        (
            "openai",
            "sk-proj-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "openai_api_key",
        ),
        (
            "anthropic",
            "sk-ant-api03-a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
            "anthropic_api_key",
        ),
        ("vault", "hvs.CAESIa1B2c3D4e5F6g7H8i9J0k1L2", "vault_token"),
        (
            "dockerhub",
            "dckr_pat_a1B2c3D4e5F6g7H8i9J0k1L2",
            "docker_hub_token",
        ),
    ];
    for (_, tok, det) in cases {
        assert_text(&format!("using {tok} now"), tok, det);
    }
    // Lookalikes inside words stay.
    assert!(text("task-runner disk-0 mask-ghp_short").1.is_empty());
}

#[test]
fn yaml_secret_manifest_in_text() {
    let y = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {\"data\":{\"password\":\"c2VjcmV0\"}}\ndata:\n  username: YWRtaW4=\n  password: c2VjcmV0\nstringData:\n  note: |\n    multi\n    line\ntype: Opaque\n---\napiVersion: v1\nkind: ConfigMap\ndata:\n  username: kept\n";
    let (out, found) = text(y);
    for s in ["YWRtaW4=", "c2VjcmV0", "multi", "line\n"] {
        assert!(!out.contains(s), "{s} survived: {out}");
    }
    assert!(
        out.contains("  username: [REDACTED:k8s_secret_data]"),
        "{out}"
    );
    assert!(
        out.contains("username: kept"),
        "ConfigMap in another document is not a Secret: {out}"
    );
    assert!(found.contains(&"k8s_secret_last_applied"));
}

#[test]
fn secret_objects_in_json_keep_keys_and_lose_values() {
    let mut v = json!({"kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"c2VjcmV0\"}}", "team": "payments"}},
        "data": {"username": "YWRtaW4=", "password": "c2VjcmV0"}, "stringData": {"token": "plain"}, "type": "Opaque"});
    let found = r().redact_value(&mut v, &base(), "$.params.arguments.body");
    assert_eq!(
        v["data"],
        json!({"username": "[REDACTED:k8s_secret_data]", "password": "[REDACTED:k8s_secret_data]"})
    );
    assert_eq!(v["stringData"]["token"], "[REDACTED:k8s_secret_data]");
    assert_eq!(
        v["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "[REDACTED:k8s_secret_last_applied]"
    );
    assert_eq!(v["metadata"]["annotations"]["team"], "payments");
    let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&"$.params.arguments.body.data.password"),
        "{paths:?}"
    );
    assert!(paths.contains(&"$.params.arguments.body.metadata.annotations[\"kubectl.kubernetes.io/last-applied-configuration\"]"), "{paths:?}");
}

#[test]
fn list_summary_of_secrets_loses_last_applied_in_a_text_block() {
    let doc = json!({"kind": "Secret", "api_version": "v1", "namespace": null, "count": 1, "items": [
        {"name": "db", "namespace": "payments", "creation_timestamp": "2026-01-01T00:00:00+00:00", "labels": {"app": "db"},
         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"data\":{\"password\":\"c2VjcmV0\"},\"kind\":\"Secret\"}"}}]});
    let text = serde_json::to_string(&doc).unwrap().replace(",\"", ", \"");
    let mut msg = tool_result(&[
        "Successfully listed 1 Secret resources in all namespaces",
        &text,
    ]);
    let found = r().redact_message(&mut msg, &["secret_values".to_string()]);
    assert_eq!(found[0].detector, "k8s_secret_last_applied");
    assert_eq!(
        found[0].path,
        "$.result.content[1].text$.items[0].annotations[\"kubectl.kubernetes.io/last-applied-configuration\"]"
    );
    let out = msg["result"]["content"][1]["text"].as_str().unwrap();
    assert!(!out.contains("c2VjcmV0"));
    // Still valid JSON with the same keys.
    let back: Value = serde_json::from_str(out).unwrap();
    assert_eq!(back["items"][0]["labels"], json!({"app": "db"}));
    assert_eq!(
        msg["result"]["content"][0]["text"],
        "Successfully listed 1 Secret resources in all namespaces"
    );
}

#[test]
fn env_values_by_name() {
    let mut v = json!({"containers": [{"name": "api", "env": [
        {"name": "DB_PASSWORD", "value": "Xk9vQ2pL"},
        {"name": "KEY_ID_LENGTH", "value": "16"},
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "key"}}},
        {"name": "DATABASE_URL", "value": "postgres://u:p4ss@db/x"}]}]});
    let found = r().redact_value(&mut v, &base(), "$");
    let env = &v["containers"][0]["env"];
    assert_eq!(env[0]["value"], "[REDACTED:sensitive_env_value]");
    assert_eq!(env[1]["value"], "16");
    assert_eq!(env[2]["value"], "info");
    assert_eq!(env[3]["valueFrom"]["secretKeyRef"]["key"], "key");
    assert_eq!(
        env[4]["value"],
        "postgres://u:[REDACTED:connection_string_password]@db/x"
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].path, "$.containers[0].env[0].value");
}

#[test]
fn kubeconfig_and_docker_config_json() {
    let mut v = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://x", "certificate-authority-data": "LS0tQ0E="}}],
        "users": [{"name": "u", "user": {"client-certificate-data": "LS0tQ0VSVA==", "client-key-data": "LS0tS0VZ", "token": "abc.def"}}]});
    r().redact_value(&mut v, &base(), "$");
    let u = &v["users"][0]["user"];
    assert_eq!(u["client-key-data"], "[REDACTED:kubeconfig_credential]");
    assert_eq!(
        u["client-certificate-data"],
        "[REDACTED:kubeconfig_credential]"
    );
    assert_eq!(u["token"], "[REDACTED:kubeconfig_credential]");
    assert_eq!(
        v["clusters"][0]["cluster"]["certificate-authority-data"], "LS0tQ0E=",
        "the CA is public"
    );

    let mut v = json!({"auths": {"123456789012.dkr.ecr.us-west-2.amazonaws.com": {"auth": "QVdTOnBhc3M=", "email": "a@b"}}});
    r().redact_value(&mut v, &base(), "$");
    assert_eq!(
        v["auths"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"]["auth"],
        "[REDACTED:docker_config]"
    );
    assert_eq!(
        v["auths"]["123456789012.dkr.ecr.us-west-2.amazonaws.com"]["email"],
        "a@b"
    );
    assert_text(
        "dockerconfig eyJhdXRocyI6eyJyZWcuaW8iOnsiYXV0aCI6IlpHVjJPbkJoYzNNPSJ9fX0=",
        "eyJhdXRocyI6",
        "docker_config",
    );
}

#[test]
fn tools_list_and_protocol_fields_are_untouched() {
    let mut msg = json!({"jsonrpc": "2.0", "id": "token=abc123", "result": {"tools": [{"name": "get_secret_token",
        "description": "password=hunter2 is an example", "inputSchema": {"type": "object", "properties": {"password": {"type": "string", "default": "hunter2"}}}}],
        "nextCursor": "token=abc123"}});
    let before = msg.clone();
    assert!(r().redact_message(&mut msg, &base()).is_empty());
    assert_eq!(msg, before);
}

#[test]
fn notifications_errors_and_resources() {
    let mut n = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "logger": "app", "data": "connecting with password=hunter2"}});
    let f = r().redact_message(&mut n, &base());
    assert_eq!(f[0].path, "$.params.data");
    assert_eq!(
        n["params"]["data"],
        "connecting with password=[REDACTED:credential_assignment]"
    );
    assert_eq!(n["method"], "notifications/message");

    let mut e = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "upstream said token: 9f8e7d6c5b4a", "data": {"apiKey": "k-1"}}});
    r().redact_message(&mut e, &base());
    assert_eq!(
        e["error"]["message"],
        "upstream said token: [REDACTED:credential_assignment]"
    );
    assert_eq!(
        e["error"]["data"]["apiKey"],
        "[REDACTED:credential_assignment]"
    );
    assert_eq!(e["error"]["code"], -32000);

    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let png = b64("\u{89}PNG password=hunter2");
    let mut rr = json!({"jsonrpc": "2.0", "id": 2, "result": {"contents": [
        {"uri": "file:///a.env", "mimeType": "text/plain", "blob": b64("password=hunter2\n")},
        {"uri": "file:///b.png", "mimeType": "image/png", "blob": png},
        {"uri": "file:///c", "mimeType": "text/plain", "text": "token=abc123xyz"}]}});
    let f = r().redact_message(&mut rr, &base());
    assert_eq!(f.len(), 2);
    assert_eq!(
        rr["result"]["contents"][0]["blob"],
        b64("password=[REDACTED:credential_assignment]\n")
    );
    assert_eq!(
        rr["result"]["contents"][1]["blob"], png,
        "binary blobs are left alone"
    );
    assert_eq!(
        rr["result"]["contents"][2]["text"],
        "token=[REDACTED:credential_assignment]"
    );

    let mut emb = json!({"jsonrpc": "2.0", "id": 4, "result": {"content": [{"type": "resource", "resource": {"uri": "k8s://x", "mimeType": "application/json", "text": "{\"kind\":\"Secret\",\"data\":{\"a\":\"b\"}}"}}],
        "structuredContent": {"kind": "Secret", "data": {"a": "b"}}}});
    let f = r().redact_message(&mut emb, &base());
    assert_eq!(
        f.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(),
        [
            "$.result.content[0].resource.text$.data.a",
            "$.result.structuredContent.data.a"
        ]
    );
    assert_eq!(
        emb["result"]["content"][0]["resource"]["text"],
        "{\"kind\":\"Secret\",\"data\":{\"a\":\"[REDACTED:k8s_secret_data]\"}}"
    );
}

#[test]
fn json_text_without_findings_is_left_byte_for_byte() {
    let t = "{\"pod_name\": \"api\", \"log_lines\": [\"key=value ok\", \"\"]}";
    let mut msg = tool_result(&[t]);
    assert!(r().redact_message(&mut msg, &base()).is_empty());
    assert_eq!(msg["result"]["content"][0]["text"], t);
}

#[test]
fn profiles_switches_and_unknown_names() {
    let y = "always_apply: []\ndetectors: {jwt: false}\nprofiles:\n  baseline: [private_key, jwt]\n  logs: [credential_assignment]\n";
    let red = Redactor::from_yaml_str(y).unwrap();
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";
    let s = format!("{jwt} password=hunter2");
    // Named profile only.
    let (out, _) = red.redact_text(&s, &["logs".to_string()]);
    assert!(out.contains(jwt) && !out.contains("hunter2"));
    // Unknown profile: baseline (fail safe); jwt is switched off everywhere.
    let (out, _) = red.redact_text(&s, &["no-such-profile".to_string()]);
    assert!(out.contains(jwt) && out.contains("hunter2"));
    let (out, _) = red.redact_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        &["nope".to_string()],
    );
    assert_eq!(out, "[REDACTED:private_key]");
    // No profiles and no always_apply: nothing.
    assert!(red.redact_text(&s, &[]).1.is_empty());
}

#[test]
fn policy_errors_name_the_problem() {
    let err = |y: &str| Redactor::from_yaml_str(y).unwrap_err().to_string();
    assert!(err("profiles:\n  baseline: [jwtt]\n").contains("`jwtt`"));
    assert!(err("profiles:\n  other: [jwt]\n").contains("`baseline` must be defined"));
    assert!(err("profiles:\n  baseline: [a]\n  a: [baseline]\n").contains("cycle"));
    assert!(
        err("detectors: {nope: false}\nprofiles:\n  baseline: [jwt]\n")
            .contains("unknown detector `nope`")
    );
    assert!(err("profiles:\n  baseline: [jwt]\nbogus: 1\n").contains("bogus"));
    assert!(err("profiles:\n  baseline: [jwt]\nextra_patterns:\n  - {name: x, regex: '(', keywords: [abc]}\n").contains("invalid regex"));
    assert!(err("profiles:\n  baseline: [jwt]\nextra_patterns:\n  - {name: x, regex: 'abc', keywords: []}\n").contains("keywords"));
    assert!(err("profiles:\n  baseline: [jwt]\nextra_patterns:\n  - {name: jwt, regex: 'abc', keywords: [abc]}\n").contains("already in use"));
}

#[test]
fn extra_patterns_are_detectors() {
    let y = "profiles:\n  baseline: [acme_token]\nextra_patterns:\n  - name: acme_token\n    regex: '\\bacme_[A-Za-z0-9]{16}\\b'\n    keywords: [acme_]\n";
    let red = Redactor::from_yaml_str(y).unwrap();
    let (out, found) = red.redact_text("id acme_0123456789abcdef ok ACME_nope", &[]);
    assert_eq!(out, "id [REDACTED:acme_token] ok ACME_nope");
    assert_eq!(found[0].detector, "acme_token");
}

#[test]
fn redactor_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Redactor>();
}

#[test]
fn trigger_dense_blobs_scan_in_linear_time_and_stay_intact() {
    // Keywords every few bytes inside one long run: each check must stay bounded. Counted in
    // bytes the scanner looks at (no clock): 8x the run may cost at most 12x the work, and
    // never more than 64 bytes per byte. A key check that walked the whole run for each
    // keyword (the quadratic shape) looks at ~10^10 bytes for the 512 KiB run and fails both.
    let cost = |copies: usize| {
        let text = format!("data {} end", "keyPassTokenAuth".repeat(copies));
        let before = super::text::work_done();
        let (out, found) = r().redact_text(&text, &base());
        let spent = super::text::work_done() - before;
        assert!(found.is_empty());
        assert_eq!(out, text);
        (spent, text.len() as u64)
    };
    let (small, _) = cost(4 * 1024);
    let (large, len) = cost(32 * 1024);
    assert!(
        large <= 12 * small,
        "8x the run cost {:.1}x the work ({small} -> {large} bytes looked at)",
        large as f64 / small as f64
    );
    assert!(large <= 64 * len, "{large} bytes looked at for {len} bytes");
}

/// Adversarial texts for the linear-time test, built to `n` bytes: each makes some check look
/// far ahead from many triggers without finding what it looks for.
fn adversarial_texts(n: usize) -> Vec<(&'static str, String)> {
    let fill = |head: &str, unit: &str, tail: &str| {
        let mut s = String::with_capacity(n + 64);
        s.push_str(head);
        while s.len() < n {
            s.push_str(unit);
        }
        s.push_str(tail);
        s
    };
    let mut nested_yaml = String::from("kind: Secret\ndata:\n");
    let mut nested_block = String::from("config:\n");
    let mut nested_last_applied = String::from("kind: Secret\nmetadata:\n");
    let mut depth = 1;
    while nested_yaml.len() < n {
        let pad = " ".repeat(depth);
        nested_yaml.push_str(&format!("{pad}data:\n"));
        nested_block.push_str(&format!("{pad}password: |\n{pad} ${{X}}\n"));
        nested_last_applied.push_str(&format!(
            "{pad}kubectl.kubernetes.io/last-applied-configuration: |\n"
        ));
        depth += 1;
    }
    vec![
        (
            "json Secret with repeated data objects",
            fill(r#"{"kind":"Secret","#, r#""data":{"x":"y","#, ""),
        ),
        (
            "escaped json Secret with repeated data objects",
            fill(r#"{\"kind\":\"Secret\","#, r#"\"data\":{\"x\":\"y\","#, ""),
        ),
        ("placeholders in a run", fill("", "password=${", "")),
        (
            "unclosed quoted markers",
            fill("", "password=\"[REDACTED:x] ", ""),
        ),
        ("unclosed escaped quotes", fill("", "password=\\\"x ", "")),
        (
            "header markers",
            fill("", "Authorization: [REDACTED:x] ", ""),
        ),
        (
            "PEM headers without END",
            fill("", "-----BEGIN RSA PRIVATE KEY-----!", ""),
        ),
        ("yaml data nested in data", nested_yaml),
        ("yaml blocks nested in blocks", nested_block),
        ("last-applied nested", nested_last_applied),
        (
            "keywords and quotes",
            fill("", "token: \"secret: 'key=", ""),
        ),
        ("fragments", fill("log ", "{\"a\":[{\"password\":", "")),
        ("flags", fill("", "--password --token -p ", "")),
    ]
}

/// The scan's cost (bytes its checks look at) grows linearly with the text: the text 8 times
/// longer costs at most ~8 times more, and a megabyte stays within a small constant per byte.
/// The quadratic version of the JSON Secret fallback counted 60x for 8x here (and at 1 MB ran
/// for minutes and allocated gigabytes of spans). A thread with a generous deadline is only
/// the safety net; the assertions are on counted work and output sizes.
#[test]
fn every_detector_is_linear_in_its_input() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let red = r();
        let cost = |s: &str| {
            let before = super::text::work_done();
            let (out, found) = red.redact_text(s, &base());
            let mut msg = tool_result(&[s]);
            let found_msg = red.redact_message(&mut msg, &base());
            let spent = super::text::work_done() - before;
            // Memory: what comes back is bounded by the input, never by its square.
            // (A one-byte secret becomes a ~30-byte marker.)
            assert!(found.len() <= s.len() / 4 && found_msg.len() <= s.len() / 4);
            assert!(out.len() <= 32 * s.len() + 64);
            spent
        };
        for (name, small) in adversarial_texts(16 * 1024) {
            let large = adversarial_texts(128 * 1024)
                .into_iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1;
            let (a, b) = (cost(&small), cost(&large));
            let ratio = b as f64 / a as f64;
            let size_ratio = large.len() as f64 / small.len() as f64;
            assert!(
                ratio <= size_ratio * 1.5,
                "{name}: 8x the text cost {ratio:.1}x the work ({a} -> {b} bytes looked at)"
            );
        }
        for (name, big) in adversarial_texts(1024 * 1024) {
            let spent = cost(&big);
            assert!(
                spent <= 64 * big.len() as u64,
                "{name}: {spent} bytes looked at for a {} byte text",
                big.len()
            );
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(600))
        .expect("redaction of adversarial texts finished (a hang means a quadratic detector)");
}

/// Issue 18 leak classes, one assertion each (the gateway-level tests are in tests/it/leaks.rs).
#[test]
fn leak_classes_of_issue_18() {
    let red = r();
    let msg_texts = |v: Value| -> String {
        let mut m = v;
        red.redact_message(&mut m, &base());
        m.to_string()
    };
    // 18.1: a PEM key one line per array element; END missing -> to the end of the array.
    let out = msg_texts(json!({"result": {"structuredContent": {"log_lines": [
        "starting", "-----BEGIN RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEAx9vQ2pL7mN4rT8wXk",
        "q8Zt2vN5mK1pL9xR4wE7uY3iO6aS0dF2", "-----END RSA PRIVATE KEY-----", "after"]}}}));
    assert!(
        !out.contains("MIIEowIBAAKCAQEAx9vQ2pL7mN4rT8wXk") && !out.contains("q8Zt2vN5"),
        "{out}"
    );
    assert!(out.contains("starting") && out.contains("after"), "{out}");
    let out = msg_texts(json!({"result": {"structuredContent": {"args": [
        "-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "Zt2vN5mK1pL9xR4wE7uY3iO6"]}}}));
    assert!(
        !out.contains("MIIEvQIBADANBgkq") && !out.contains("Zt2vN5mK1pL9"),
        "{out}"
    );
    // Flags whose value is the next element.
    let out = msg_texts(
        json!({"result": {"structuredContent": {"containers": [{"args": [
        "--api-token", "tk-8f3a9c2e7b1d", "--verbose", "-u", "root", "-p", "My5qlR00t!"]}]}}}),
    );
    assert!(
        !out.contains("tk-8f3a9c2e7b1d") && !out.contains("My5qlR00t!"),
        "{out}"
    );
    assert!(out.contains("--verbose") && out.contains("root"), "{out}");
    assert_text(
        "run --password hunter2xyz now",
        "hunter2xyz",
        "credential_assignment",
    );
    // 18.2: JSON fragments after a prefix in a line.
    let (out, _) = text(
        r#"DEBU[0000] {"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNzd29yZDEyMw=="}}} done"#,
    );
    assert!(!out.contains("dXNlcjpwYXNzd29yZDEyMw"), "{out}");
    assert!(
        out.starts_with("DEBU[0000] {") && out.ends_with("} done"),
        "{out}"
    );
    let (out, _) = text(r#"level=debug msg={"client_secret":"cs-91ab77e2f0","user":"bob"}"#);
    assert!(
        !out.contains("cs-91ab77e2f0") && out.contains("bob"),
        "{out}"
    );
    // 18.3: formats and encodings.
    for (input, secret) in [
        (
            "<server><id>nexus</id><password>Mvn-P4ss-2026</password></server>",
            "Mvn-P4ss-2026",
        ),
        (
            r#"<add key="ClearTextPassword" value="NuG3t-Secr3t" />"#,
            "NuG3t-Secr3t",
        ),
        (
            r#"<property name="password" value="Pr0p-Secr3t"/>"#,
            "Pr0p-Secr3t",
        ),
        (
            "curl -u admin:Curl-S3cret https://api.example.com",
            "Curl-S3cret",
        ),
        ("mysql -uroot -pMyR00tPw -h db", "MyR00tPw"),
        ("BASIC_AUTH=admin:B4sic-Pw", "B4sic-Pw"),
        (
            "git clone https://ghx0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6@github.com/org/repo.git",
            "ghx0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
        ),
        (
            "GET /login?user=bob&password%3DUrl3nc0ded%26next=1",
            "Url3nc0ded",
        ),
        (
            "https://acct.blob.core.windows.net/c?sv=2022-11-02&sr=b&sig=aBcD1234eFgH5678iJkL%2Bmn%3D",
            "aBcD1234eFgH5678iJkL",
        ),
        (
            "spring.security.oauth2.client.registration.keycloak.client-secret=Kc-S3cret-77",
            "Kc-S3cret-77",
        ),
        ("spring.security.user.password={noop}N0op-Pass", "N0op-Pass"),
        ("DB_PW=ShortName-Pw9", "ShortName-Pw9"),
        ("password.txt: Fil3-Secr3t", "Fil3-Secr3t"),
        ("_auth=bnBtdXNlcjpucG1wYXNz", "bnBtdXNlcjpucG1wYXNz"),
        (
            "env: |\n  - name: DB_PASSWORD\n    value: Yaml-Env-Pw1\n",
            "Yaml-Env-Pw1",
        ),
        (
            r#"{"ParameterKey": "DbPassword", "ParameterValue": "Cfn-Param-Pw1"} tail"#,
            "Cfn-Param-Pw1",
        ),
    ] {
        let (out, found) = text(input);
        assert!(!out.contains(secret), "{input:?} -> {out:?} ({found:?})");
    }
    // JWK "k" and name/value lists in JSON.
    let out = msg_texts(json!({"result": {"structuredContent": {
        "keys": [{"kty": "oct", "kid": "hmac-1", "k": "GawgguFyGrWKav7AX4VKUg"}],
        "helm": {"parameters": [{"name": "db.password", "value": "Argo-Helm-Pw1"}, {"name": "replicas", "value": "3"}]},
        "Parameters": [{"ParameterKey": "AdminPassword", "ParameterValue": "Cfn-Admin-Pw1"}]}}}));
    for secret in ["GawgguFyGrWKav7AX4VKUg", "Argo-Helm-Pw1", "Cfn-Admin-Pw1"] {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    assert!(out.contains("hmac-1") && out.contains("\"3\""), "{out}");
    // JWT wrapped at 64 columns.
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzdmMtd3JhcHBlZCIsImV4cCI6MTg5MzQ1NjAwMH0.c2lnbmF0dXJlLXdyYXBwZWQtYXQtNjQtY29sdW1ucy0wMTIz";
    let wrapped: Vec<&str> = jwt
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let (out, _) = text(&format!("{}\nnext line", wrapped.join("\n")));
    for part in &wrapped {
        assert!(!out.contains(part), "{part} survived: {out}");
    }
    assert!(out.ends_with("\nnext line"), "{out}");
    // ... and one line per element of a log_lines array.
    let mut lines = vec!["token follows:"];
    lines.extend(wrapped.iter().copied());
    lines.push("done");
    let out = msg_texts(json!({"result": {"structuredContent": {"log_lines": lines}}}));
    for part in &wrapped {
        assert!(!out.contains(part), "{part} survived: {out}");
    }
    assert!(
        out.contains("token follows:") && out.contains("done"),
        "{out}"
    );
    // Base64 PEM under a data key, pretty docker config in base64, Helm release gzip+base64.
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let pem = b64(
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
    );
    let docker = b64(
        "{\n  \"auths\": {\n    \"r.example.com\": {\n      \"auth\": \"dXNlcjpwdw==\"\n    }\n  }\n}",
    );
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(br#"{"name":"pay","config":{"db":{"password":"H3lm-Values-Pw"}},"manifest":"kind: Secret"}"#).unwrap();
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            e.finish().unwrap(),
        )
    };
    let out = msg_texts(json!({"result": {"structuredContent": {"kind": "ConfigMap",
        "binaryData": {"key.pem": pem}, "data": {"config.json": docker, "release": gz}}}}));
    for secret in [&pem[..40], &docker[..40], &gz[..40]] {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    assert!(out.contains("[REDACTED:encoded_payload]"), "{out}");
}

/// 18.4: identifiers survive.
#[test]
fn identifiers_are_not_secrets() {
    for clean in [
        "arn:aws:secretsmanager:us-west-2:111122223333:secret:prod/db-password-AbCdEf",
        "SecretArn: arn:aws:secretsmanager:us-west-2:111122223333:secret:payments/api-token-x1Y2z3",
        "arn:aws:ssm:us-west-2:111122223333:parameter/payments/db/password",
        "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "KeyId: 1234abcd-12ab-34cd-56ef-1234567890ab",
        "image: 111122223333.dkr.ecr.us-west-2.amazonaws.com/app@sha256:4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c",
        "uid: 8c1f0e4a-3b2d-4c5e-9f6a-7b8c9d0e1f2a",
        "commit 9f90b74c3e2a1d0b8c7d6e5f4a3b2c1d0e9f8a7b",
        "checksum/config: 5d41402abc4b2a76b9719d911017c592",
        "git clone https://github.com/org/repo.git",
        "ssh://git@github.com/org/repo.git",
        "kms-key: arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        r#"{"kmsKey": "arn:aws:kms:us-west-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", "db_secret": "arn:aws:secretsmanager:us-west-2:111122223333:secret:x-AbCdEf"} x"#,
    ] {
        let (out, found) = text(clean);
        assert_eq!(out, clean, "{found:?}");
    }
}

/// Redaction is idempotent: what it wrote is never found again. Inputs from the fuzz targets
/// `redact_text` and `redact_json` (seeds from tests/redaction_corpus): a Secret's data value
/// already redacted by one detector was re-marked by the Secret-data detector, changing the
/// text (`redact_text`) or reporting a redaction that changed nothing (`redact_json`).
#[test]
fn redacting_redacted_output_changes_and_reports_nothing() {
    for once in [
        r#"{"kind": "Secret", "data": {".dockerconfigjson": "[REDACTED:docker_config]"}}"#,
        "log line password=[REDACTED:credential_assignment]\n{\"kind\":\"Secret\",\"data\":{\"a\":\"[REDACTED:k8s_secret_data]\"}}",
        "kind: Secret\ndata:\n  a: '[REDACTED:docker_config]'\n  b: [REDACTED:jwt]\n",
    ] {
        assert_eq!(text(once), (once.to_string(), vec![]), "{once}");
        let mut msg = tool_result(&[once]);
        let before = msg.clone();
        assert_eq!(r().redact_message(&mut msg, &base()), vec![], "{once}");
        assert_eq!(msg, before);
    }
    // A marker's `:` is not a separator (fuzz targets `redact_text` and `redact_json`,
    // minimised): nothing is found again from inside a marker.
    for once in [
        "kind: Secret\ndata:\n  data:\n   x accessKeyId=[REDACTED:aws_access_key_id]   data:\n",
        r#"{"kind": "Secret", "data": {"x.password=[REDACTED:credential_assignment],info": "[REDACTED:k8s_secret_data]"}}"#,
    ] {
        assert_eq!(text(once), (once.to_string(), vec![]), "{once}");
    }
    // A marker next to a value is still a value: that one is redacted.
    let (out, _) = text("kind: Secret\ndata:\n  b: [REDACTED:jwt] hunter2\n");
    assert!(!out.contains("hunter2"), "{out}");
}

/// Found by the fuzz target `redact_json` in CI (2026-12-05): the name/value detector looks
/// at most 256 bytes past the name, and a quoted value with no closing quote in that window
/// ended where the window did, inside a multi-byte character, so slicing it panicked (a
/// tool result with such text failed the whole response). The bound now takes the whole
/// character, and the spans of every detector are widened to character boundaries instead
/// of being dropped (dropping one would leave its secret in place).
#[test]
fn a_look_ahead_bound_inside_a_character_neither_panics_nor_leaks() {
    for pad in 0..5 {
        let value = format!("{}{}", "k".repeat(pad), "Zx9\u{e9}".repeat(80));
        let t = format!("{{\"name\": \"DB_PASSWORD\", \"value\": \"{value}");
        let (out, found) = text(&t);
        assert!(!out.contains("Zx9"), "pad {pad}: {out}");
        assert!(!found.is_empty(), "pad {pad}");
        let mut msg = tool_result(&[&t]);
        r().redact_message(&mut msg, &base());
        assert!(!msg.to_string().contains("Zx9"), "pad {pad}: {msg}");
    }
}
