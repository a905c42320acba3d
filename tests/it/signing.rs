//! SigV4 signing end to end: requests signed by `sign::Signer` are verified by upstreams that
//! recompute the signature themselves, the embedded simulator (`sim`) and a Python server
//! that uses botocore, an independent SigV4 implementation (tests/interop/sigv4_upstream.py).
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use eks_mcp_gateway::config::SigningConfig;
use eks_mcp_gateway::identity::{AuthKind, Principal};
use eks_mcp_gateway::sign::{Signer, classify_upstream_auth_failure};
use eks_mcp_gateway::sim::{self, SimConfig, SimCredentials};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

pub const AKID: &str = "AKIASIGNINGTEST00001";
pub const SECRET: &str = "signing/test/secret+key=with/odd+chars";
pub const TOKEN: &str = "IQoJb3JpZ2luX2VjEsigning-test-session-token//+==";

pub fn principal(id: &str, groups: &[&str]) -> Principal {
    Principal {
        id: id.to_string(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        auth: AuthKind::Static,
        claims: Default::default(),
    }
}

pub fn static_provider(akid: &str, secret: &str, token: Option<&str>) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        akid,
        secret,
        token.map(str::to_string),
        None,
        "test",
    ))
}

/// What came back from an upstream.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Build a request, sign it with `signer` for `who`, send it, and read the answer.
/// With `read_body: false` only the head is read (for never-ending SSE streams).
pub async fn send(
    signer: &Signer,
    who: &Principal,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    read_body: bool,
) -> Answer {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (mut parts, ()) = b.body(()).unwrap().into_parts();
    signer
        .sign(&mut parts, body, who, None)
        .await
        .expect("signing succeeds");
    let req = http::Request::from_parts(parts, Full::new(Bytes::copy_from_slice(body)));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("upstream answers in time")
        .expect("upstream reachable");
    let (head, body) = resp.into_parts();
    let body = if read_body {
        tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("body in time")
            .expect("body readable")
            .to_bytes()
    } else {
        Bytes::new()
    };
    Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
    }
}

async fn start_sim(creds: SimCredentials) -> sim::SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = SimConfig {
        credentials: Some(creds),
        ..SimConfig::default()
    };
    sim::start(cfg, listener).await.expect("simulator starts")
}

fn sim_creds() -> SimCredentials {
    SimCredentials {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
        session_token: Some(TOKEN.into()),
    }
}

async fn signer_for(url: &str, secret: &str) -> Signer {
    let cfg = SigningConfig {
        region: Some("us-west-2".into()),
        ..Default::default()
    };
    Signer::from_provider(
        &cfg,
        &url.parse().unwrap(),
        static_provider(AKID, secret, Some(TOKEN)),
    )
    .await
    .expect("signer builds")
}

const JSON_ACCEPT: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

#[tokio::test]
async fn simulator_verifies_session_era_requests_signed_with_a_session_token() {
    let sim = start_sim(sim_creds()).await;
    let url = sim.url();
    let signer = signer_for(&url, SECRET).await;
    assert_eq!(
        (signer.service(), signer.region()),
        ("eks-mcp", "us-west-2")
    );
    let who = principal("alice@example.com", &["sre"]);

    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},
        "clientInfo":{"name":"signing-test","version":"1"}}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &JSON_ACCEPT,
        init.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let session = a.headers["mcp-session-id"].to_str().unwrap().to_string();

    let mut h = JSON_ACCEPT.to_vec();
    h.push(("mcp-session-id", &session));
    h.push(("mcp-protocol-version", "2025-11-25"));
    let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        note.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 202);
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        list.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(String::from_utf8_lossy(&a.body).contains("list_k8s_resources"));

    // A tools/call whose answer may be SSE, and the GET stream (empty body, head only).
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
        "name":"list_k8s_resources","arguments":{"cluster_name":"dev","kind":"Pod","api_version":"v1","namespace":"default"}}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        call.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let get = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let a = send(&signer, &who, "GET", &url, &get, b"", false).await;
    assert_eq!(a.status, 200);
    assert_eq!(sim.signature_failures(), 0);
    // initialize, initialized, tools/list, tools/call, GET: each one verified.
    assert_eq!(sim.verified_requests(), 5);
}

#[tokio::test]
async fn simulator_verifies_stateless_requests_with_mcp_headers() {
    let sim = start_sim(sim_creds()).await;
    let url = sim.url();
    let signer = signer_for(&url, SECRET).await;
    let who = principal("bob", &[]);
    let call = json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{
        "name":"list_k8s_resources",
        "arguments":{"cluster_name":"dev","kind":"Pod","api_version":"v1"},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}});
    let mut h = JSON_ACCEPT.to_vec();
    h.extend([
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "list_k8s_resources"),
        ("mcp-param-cluster_name", "dev"),
    ]);
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        call.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(sim.signature_failures(), 0);
    assert_eq!(sim.verified_requests(), 1);
}

#[tokio::test]
async fn wrong_secret_is_rejected_with_403_and_a_client_safe_hint() {
    let sim = start_sim(sim_creds()).await;
    let url = sim.url();
    let signer = signer_for(&url, "not-the-secret").await;
    let list = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"});
    let mut h = JSON_ACCEPT.to_vec();
    h.extend([
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/list"),
    ]);
    let a = send(
        &signer,
        &principal("eve", &[]),
        "POST",
        &url,
        &h,
        list.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(sim.signature_failures(), 1);
    let hint = classify_upstream_auth_failure(a.status, &a.headers, &a.body)
        .expect("an AWS auth failure is recognised");
    assert!(hint.contains("signature"), "{hint}");
    assert!(
        !hint.contains("not-the-secret") && !hint.contains(TOKEN),
        "{hint}"
    );
}

// ---------------------------------------------------------------------------------------
// botocore interop
// ---------------------------------------------------------------------------------------

/// The Python of the interop venv (`scripts/setup-interop` installs botocore and moto there).
pub fn interop_python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/venv-mcp/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-interop (it installs botocore and moto[server] \
         into .cache/venv-mcp)",
        p.display()
    );
    p
}

/// tests/interop/sigv4_upstream.py, running on 127.0.0.1; killed on drop.
pub struct BotocoreUpstream {
    _child: tokio::process::Child,
    pub port: u16,
}

impl BotocoreUpstream {
    pub async fn start(keys: &[(String, String)]) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sigv4_upstream.py");
        let mut cmd = tokio::process::Command::new(interop_python());
        cmd.arg(script)
            .args(["--service", "eks-mcp", "--region", "us-west-2"]);
        for (k, s) in keys {
            cmd.arg("--key").arg(format!("{k}={s}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start sigv4_upstream.py");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("sigv4_upstream.py starts in time")
            .unwrap()
            .expect("sigv4_upstream.py printed its port");
        let port = line
            .strip_prefix("LISTENING ")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Self {
            _child: child,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    pub async fn stats(&self) -> Value {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://127.0.0.1:{}/stats", self.port)
            .parse()
            .unwrap();
        let resp = client.get(uri).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test]
async fn botocore_recomputes_every_signature_and_all_match() {
    let up = BotocoreUpstream::start(&[(AKID.into(), SECRET.into())]).await;
    let url = up.url();
    let signer = signer_for(&url, SECRET).await;
    let who = principal("carol@example.com", &["platform", "sre"]);
    let mut expected = 0;

    // JSON (session era, initialize).
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &JSON_ACCEPT,
        init.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    expected += 1;
    let session = a.headers["mcp-session-id"].to_str().unwrap().to_string();

    // Session headers; a tools/call answered as SSE.
    let mut h = JSON_ACCEPT.to_vec();
    h.push(("mcp-session-id", &session));
    h.push(("mcp-protocol-version", "2025-11-25"));
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{
        "name":"get_pod_logs","arguments":{"cluster_name":"dev","namespace":"default","pod_name":"web-1"}}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        call.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.headers["content-type"], "text/event-stream");
    expected += 1;

    // SSE-only accept, GET stream and DELETE (empty bodies).
    let get = [
        ("accept", "text/event-stream"),
        ("mcp-session-id", session.as_str()),
    ];
    let a = send(&signer, &who, "GET", &url, &get, b"", true).await;
    assert_eq!(a.status, 200);
    assert!(String::from_utf8_lossy(&a.body).starts_with("event: message"));
    expected += 1;

    // Stateless era: Mcp-Method / Mcp-Name / Mcp-Param-* headers, odd but legal values.
    let mut s = JSON_ACCEPT.to_vec();
    s.extend([
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "list_k8s_resources"),
        ("mcp-param-cluster_name", "dev-cluster"),
        ("mcp-param-namespace", "  payments   team  "),
        ("x-custom-end-to-end", "a, b"),
    ]);
    let stateless = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{
        "name":"list_k8s_resources","arguments":{"cluster_name":"dev-cluster","namespace":"payments team"}}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &s,
        stateless.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    expected += 1;

    // Unicode bodies (raw UTF-8, not \u escapes).
    for text in [
        "héllo wörld",
        "日本語のログ",
        "emoji 🚀🔥 and RTL שלום",
        "\u{2028}\u{0000}",
    ] {
        let body = serde_json::to_string(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call",
            "params":{"name":"search_eks_documentation","arguments":{"query":text}}}))
        .unwrap();
        let a = send(
            &signer,
            &who,
            "POST",
            &url,
            &JSON_ACCEPT,
            body.as_bytes(),
            true,
        )
        .await;
        assert_eq!(
            a.status,
            200,
            "{text}: {}",
            String::from_utf8_lossy(&a.body)
        );
        expected += 1;
    }

    // A 1 MiB body.
    let big = "x".repeat(1024 * 1024 - 200);
    let body = json!({"jsonrpc":"2.0","id":5,"method":"tools/call",
        "params":{"name":"apply_yaml","arguments":{"yaml_content":big}}})
    .to_string();
    assert!(body.len() >= 1024 * 1024 - 200);
    let json_only = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &json_only,
        body.as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["result"]["content"][0]["type"], "text");
    expected += 1;

    // A notification (202) and a path with a query string.
    let note = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}});
    let a = send(
        &signer,
        &who,
        "POST",
        &url,
        &h,
        note.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 202);
    expected += 1;
    let q = format!("{url}?b=2&a=1&z=%20space");
    let a = send(
        &signer,
        &who,
        "POST",
        &q,
        &JSON_ACCEPT,
        init.to_string().as_bytes(),
        true,
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    expected += 1;

    let stats = up.stats().await;
    assert_eq!(stats["mismatched"], 0, "{stats}");
    assert_eq!(stats["verified"], expected, "{stats}");
}

#[tokio::test]
async fn botocore_rejects_a_wrong_secret() {
    let up = BotocoreUpstream::start(&[(AKID.into(), SECRET.into())]).await;
    let signer = signer_for(&up.url(), "wrong").await;
    let a = send(
        &signer,
        &principal("eve", &[]),
        "POST",
        &up.url(),
        &JSON_ACCEPT,
        b"{}",
        true,
    )
    .await;
    assert_eq!(a.status, 403);
    assert_eq!(a.headers["x-amzn-errortype"], "InvalidSignatureException");
    let stats = up.stats().await;
    assert_eq!(
        (stats["verified"].as_u64(), stats["mismatched"].as_u64()),
        (Some(0), Some(1))
    );
}

// ---------------------------------------------------------------------------------------
// What the client sees when the upstream refuses the gateway's signature, or it cannot sign

/// The upstream refuses the gateway's credentials: a bad secret (invalid signature) and a
/// session token that was rotated away (expired token) each reach the client as `-31014`
/// with the upstream's status and a hint, never as a policy denial or a bare 403.
#[tokio::test]
async fn rejected_credentials_are_an_upstream_auth_error_with_a_hint() {
    use crate::harness::{ACCESS_KEY, Harness, Options, SESSION_TOKEN};
    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let check = |r: &crate::harness::Reply, hint: &str| {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["x-mcp-gateway-error"], "upstream_auth_failed");
        let err = r.error();
        assert_eq!(
            err["code"],
            eks_mcp_gateway::jsonrpc::UPSTREAM_AUTH_FAILED,
            "{err}"
        );
        assert_eq!(
            err["data"],
            json!({"source": "upstream", "kind": "upstream_auth_failed", "upstream_status": 403})
        );
        let message = err["message"].as_str().unwrap();
        assert!(
            message.starts_with("upstream rejected the gateway's credentials (HTTP 403): ")
                && message.contains(hint),
            "{message}"
        );
    };

    // A secret key the upstream does not know: the signature does not verify.
    let wrong = static_provider(
        ACCESS_KEY,
        "not/the/secret/the/upstream/knows",
        Some(SESSION_TOKEN),
    );
    let h = Harness::start_with(Options {
        credentials: Some(wrong),
        ..Options::default()
    })
    .await;
    let r = h
        .client()
        .stateless_call("list_k8s_resources", args.clone())
        .await;
    check(
        &r,
        "signature (InvalidSignatureException): check the gateway's clock and credentials",
    );
    assert_eq!(h.sim.signature_failures(), 1);
    assert_eq!(h.sim.verified_requests(), 0);
    h.stop().await;

    // The upstream rotated the credentials (same key id, new secret and token): the
    // gateway's session token has expired.
    let h = Harness::start().await;
    let ok = h
        .client()
        .stateless_call("list_k8s_resources", args.clone())
        .await;
    assert!(!ok.is_tool_error(), "{}", ok.text());
    h.sim.rotate_credentials(SimCredentials {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: "rotated/secret".into(),
        session_token: Some("rotated-token".into()),
    });
    let r = h.client().stateless_call("list_k8s_resources", args).await;
    check(
        &r,
        "(ExpiredTokenException): the gateway's AWS credentials or clock are stale",
    );
    assert_eq!(h.sim.signature_failures(), 1);
    h.stop().await;
}

/// Credentials that expire and cannot be refreshed: the gateway cannot sign, says so with
/// `-31016`, and sends nothing unsigned upstream.
#[tokio::test]
async fn a_signing_failure_is_a_gateway_error_and_nothing_is_forwarded() {
    use crate::harness::{ACCESS_KEY, Harness, Options, SECRET_KEY, SESSION_TOKEN};
    use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out credentials that live two seconds, once; every later call fails.
    #[derive(Debug, Default)]
    struct OnceThenGone(AtomicUsize);
    impl ProvideCredentials for OnceThenGone {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                future::ProvideCredentials::ready(Ok(Credentials::new(
                    ACCESS_KEY,
                    SECRET_KEY,
                    Some(SESSION_TOKEN.into()),
                    Some(std::time::SystemTime::now() + Duration::from_secs(2)),
                    "short-lived",
                )))
            } else {
                future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
                    "the credential source went away",
                )))
            }
        }
    }

    let h = Harness::start_with(Options {
        credentials: Some(SharedCredentialsProvider::new(OnceThenGone::default())),
        ..Options::default()
    })
    .await;
    let signer = h.gateway.signer.as_ref().expect("signing is on");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while signer.health().is_ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the credentials never became unusable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});
    let r = h.client().stateless_call("list_k8s_resources", args).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-mcp-gateway-error"], "signing_failed");
    let err = r.error();
    assert_eq!(
        err["code"],
        eks_mcp_gateway::jsonrpc::SIGNING_FAILED,
        "{err}"
    );
    assert_eq!(
        err["data"],
        json!({"source": "gateway", "kind": "signing_failed"})
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("the gateway could not sign the upstream request: "),
        "{err}"
    );
    assert!(!r.text().contains(SECRET_KEY) && !r.text().contains(SESSION_TOKEN));
    assert!(
        h.sim.received().is_empty(),
        "an unsigned request reached the upstream: {:?}",
        h.sim.received()
    );
    h.stop().await;
}
