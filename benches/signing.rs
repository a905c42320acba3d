//! Cost of SigV4-signing one upstream MCP request (4 KiB JSON body, the usual MCP headers).
//!
//! - `sigv4/sign_request_4k`: the signing itself (header selection, canonical request, body
//!   hash, key derivation, HMAC) at a fixed time with fixed credentials.
//! - `sigv4/signer_sign_4k`: the whole `Signer::sign` path the pipeline calls, including the
//!   credential cache lookup (credentials held, no refresh), driven by a current-thread runtime.
//!
//! Target: p50 under 30 µs per request. Run: `cargo bench --bench signing`.
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use eks_mcp_gateway::config::SigningConfig;
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::sign::{Signer, sign_request};

const URL: &str = "https://eks-mcp.us-west-2.api.aws/mcp";

fn body_4k() -> Vec<u8> {
    let filler = "a".repeat(4096 - 150);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{{"name":"apply_yaml","arguments":{{"cluster_name":"dev","yaml_content":"{filler}"}}}}}}"#
    );
    assert!((4000..=4200).contains(&body.len()));
    body.into_bytes()
}

fn parts() -> http::request::Parts {
    http::Request::post(URL)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "apply_yaml")
        .header("mcp-param-cluster_name", "dev")
        .header("user-agent", "eks-mcp-gateway/0.1")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn creds() -> Credentials {
    Credentials::new(
        "ASIAEXAMPLEBENCH0001",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        Some("IQoJb3JpZ2luX2VjEBenchmarkSessionToken".repeat(8)),
        None,
        "bench",
    )
}

fn bench(c: &mut Criterion) {
    let body = body_4k();
    let creds = creds();
    let settings = Default::default();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    let mut g = c.benchmark_group("sigv4");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("sign_request_4k", |b| {
        b.iter_batched(
            parts,
            |mut p| {
                sign_request(
                    &mut p,
                    black_box(&body),
                    &creds,
                    "eks-mcp",
                    "us-west-2",
                    t,
                    &settings,
                )
                .unwrap();
                p
            },
            BatchSize::SmallInput,
        )
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = rt
        .block_on(Signer::from_provider(
            &SigningConfig::default(),
            &URL.parse().unwrap(),
            SharedCredentialsProvider::new(creds.clone()),
        ))
        .unwrap();
    let who = Principal {
        id: "alice@example.com".into(),
        groups: vec!["sre".into()],
        auth: AuthKind::Static,
        claims: Default::default(),
    };
    g.bench_function("signer_sign_4k", |b| {
        b.iter_batched(
            parts,
            |mut p| {
                rt.block_on(signer.sign(&mut p, black_box(&body), &who, None))
                    .unwrap();
                p
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
