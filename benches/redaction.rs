//! Redaction throughput: MB/s of `Redactor::redact_message` on 1 MB tool results.
//!
//! Four inputs, each an MCP `tools/call` result shaped like the EKS MCP server's (a summary
//! text block plus a JSON document in a text block):
//! - `log_clean`: ~1 MB of pod log lines (`get_pod_logs`) with no secrets;
//! - `log_secrets`: the same with a planted secret every ~50 lines;
//! - `json_clean`: ~1 MB `list_k8s_resources`-style JSON document with no secrets (but with
//!   trigger words such as toleration `key`s, so the cheap probe has to look closer);
//! - `json_secrets`: the same with Secrets, env credentials and tokens mixed in.
//!
//! Each iteration redacts a fresh copy of the message; the copy is made in criterion's untimed
//! setup (`iter_batched`), so the figures are net of the 1 MB clone. Run:
//! `cargo bench --bench redaction`.
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eks_mcp_gateway::redact::Redactor;
use serde_json::{Value, json};

const TARGET: usize = 1 << 20;

fn log_lines(with_secrets: bool) -> Vec<String> {
    let clean = [
        r#"10.0.3.17 - - [25/Nov/2026:13:02:11 +0000] "GET /api/v1/orders?page=3&limit=50 HTTP/1.1" 200 5123 "-" "Mozilla/5.0 (X11; Linux x86_64)" rt=0.012 uct=0.001"#,
        "2026-11-25T13:02:11.482Z INFO  [main] o.s.b.w.embedded.tomcat.TomcatWebServer : Tomcat started on port(s): 8080 (http) with context path ''",
        "2026-11-25T13:02:12.001Z DEBUG [http-nio-8080-exec-3] c.a.orders.OrderService : loaded order 7f3c9a2e-41b0-4c1e-9d7a-0b5e2f1c8a90 for customer 88121 in 14 ms",
        "time=\"2026-11-25T13:02:12Z\" level=info msg=\"reconciled deployment payments/api-7d9f8b6c5d-x2k4q\" generation=42 resourceVersion=918273645",
        "I1125 13:02:13.774512       1 controller.go:211] Successfully synced 'kube-system/coredns' image=602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns@sha256:5b7ec0b1a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d",
        "\tat com.acme.orders.OrderController.create(OrderController.java:87) ~[classes/:na]",
        "[2026-11-25 13:02:14,118] WARNING urllib3.connectionpool: Retrying (Retry(total=2)) after connection broken by 'NewConnectionError': /v1/metrics",
        "commit 3f9a1c2b7d4e5f60718293a4b5c6d7e8f9012345 deployed to arn:aws:eks:us-west-2:123456789012:cluster/prod-east",
    ];
    let secrets = [
        "2026-11-25T13:02:15Z ERROR db connect failed url=postgres://orders:Xk9vQ2pL7mN4rT8w@db.internal:5432/orders",
        "export AWS_ACCESS_KEY_ID=AKIAQ3EGTRMN7XZ4PLKD AWS_SECRET_ACCESS_KEY=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",
        "10.0.3.17 - - [25/Nov/2026:13:02:16 +0000] \"GET /callback?code=abc&access_token=ya29.a0AfH6SMBx7Kq2Lm9Np4Rs HTTP/1.1\" 302 0",
        "INFO config loaded: {'db_host': 'db.internal', 'db_password': 'S3cr3t-Pa55w0rd!', 'debug': False}",
        "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlX2J5dGVz",
    ];
    let mut out = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < TARGET {
        let line = if with_secrets && i % 50 == 49 {
            secrets[(i / 50) % secrets.len()].to_string()
        } else {
            clean[i % clean.len()].to_string()
        };
        size += line.len() + 4;
        out.push(line);
        i += 1;
    }
    out
}

fn log_result(with_secrets: bool) -> Value {
    let lines = log_lines(with_secrets);
    let doc = json!({"pod_name": "orders-api-7d9f8b6c5d-x2k4q", "namespace": "payments", "container_name": null, "log_lines": lines});
    tool_result(
        format!(
            "Successfully retrieved {} log lines from pod payments/orders-api-7d9f8b6c5d-x2k4q",
            lines.len()
        ),
        doc,
    )
}

fn json_result(with_secrets: bool) -> Value {
    let mut items = Vec::new();
    let mut size = 0;
    let mut i = 0usize;
    while size < TARGET {
        let item = if with_secrets && i % 20 == 19 {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("db-creds-{i}"), "namespace": "payments",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"data\":{\"password\":\"UzNjcjN0\"},\"kind\":\"Secret\"}\n"}},
                "data": {"username": "b3JkZXJz", "password": "UzNjcjN0LVBhNTV3MHJkIQ=="}, "type": "Opaque"})
        } else if with_secrets && i % 20 == 9 {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": format!("api-{i}"), "namespace": "payments"},
                "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "123456789012.dkr.ecr.us-west-2.amazonaws.com/api:1.4.2",
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "value": "Xk9vQ2pL7mN4rT8w"},
                        {"name": "STRIPE_KEY", "value": "sk_live_51H8xYzAbCdEfGhIjKlMnOpQr"}]}]}}}})
        } else {
            json!({"name": format!("orders-api-7d9f8b6c5d-{i:05}"), "namespace": "payments",
                "creation_timestamp": "2026-11-25T13:02:11Z",
                "labels": {"app.kubernetes.io/name": "orders-api", "pod-template-hash": "7d9f8b6c5d"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-20T08:00:00Z", "prometheus.io/scrape": "true"},
                "uid": "7f3c9a2e-41b0-4c1e-9d7a-0b5e2f1c8a90", "resourceVersion": "918273645",
                "image": "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns@sha256:5b7ec0b1a2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d",
                "nodeName": "ip-10-0-3-17.us-west-2.compute.internal", "podIP": "10.0.3.17",
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "payments", "effect": "NoSchedule"}]})
        };
        size += item.to_string().len();
        items.push(item);
        i += 1;
    }
    let doc = json!({"kind": "Pod", "api_version": "v1", "namespace": null, "count": items.len(), "items": items});
    tool_result(
        format!("Successfully listed {i} Pod resources in all namespaces"),
        doc,
    )
}

fn tool_result(summary: String, doc: Value) -> Value {
    // Python `json.dumps` default separators, as the EKS MCP server sends them.
    let text = serde_json::to_string(&doc)
        .unwrap()
        .replace("\",\"", "\", \"")
        .replace("\":", "\": ");
    json!({"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": summary}, {"type": "text", "text": text}], "isError": false}})
}

fn message_bytes(m: &Value) -> u64 {
    m["result"]["content"][1]["text"]
        .as_str()
        .map_or(0, str::len) as u64
}

fn bench(c: &mut Criterion) {
    let r = Redactor::builtin();
    let profiles = vec!["baseline".to_string()];
    let mut g = c.benchmark_group("redaction");
    g.sample_size(20);
    for (name, msg) in [
        ("log_clean", log_result(false)),
        ("log_secrets", log_result(true)),
        ("json_clean", json_result(false)),
        ("json_secrets", json_result(true)),
    ] {
        g.throughput(Throughput::Bytes(message_bytes(&msg)));
        // Each iteration needs a fresh copy to redact: the copy is made in the untimed setup
        // (and dropped untimed), so the figure is the redaction alone.
        g.bench_function(name, |b| {
            b.iter_batched(
                || msg.clone(),
                |mut m| {
                    black_box(r.redact_message(&mut m, &profiles));
                    m
                },
                BatchSize::LargeInput,
            )
        });
    }
    // Free text (log lines handed to the logger, deny reasons): no clone involved.
    let text = log_lines(false).join("\n");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("text_clean", |b| {
        b.iter(|| black_box(r.redact_text(&text, &profiles).1.len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
