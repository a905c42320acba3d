//! The AWS credential chain as the gateway uses it: environment, profile files, IRSA web
//! identity against a local STS (moto), EKS Pod Identity / container credentials from a local
//! endpoint, refresh of short-lived credentials while requests flow, and per-caller STS role
//! sessions.
//!
//! The chain reads process-wide environment variables. So that tests never race on them
//! (with `cargo test` they run as threads of one process), each chain test re-runs itself in
//! a child process (`run_in_child`) with exactly the environment it needs; the parent keeps
//! serving the local endpoints (STS, container credentials, upstream) meanwhile. The
//! environment of the test process itself is never modified. IMDS is always disabled, so
//! nothing tries to reach 169.254.169.254.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use eks_mcp_gateway::config::{AssumeRoleConfig, SigningConfig};
use eks_mcp_gateway::sign::{SignError, Signer};
use eks_mcp_gateway::sim::{self, SimConfig, SimCredentials};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::harness::{is_child, run_in_child};
use crate::signing::{BotocoreUpstream, interop_python, principal, send, static_provider};

async fn start_sim(akid: &str, secret: &str, token: Option<&str>) -> sim::SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let creds = SimCredentials {
        access_key_id: akid.into(),
        secret_access_key: secret.into(),
        session_token: token.map(str::to_string),
    };
    let cfg = SimConfig {
        credentials: Some(creds),
        ..SimConfig::default()
    };
    sim::start(cfg, listener).await.expect("simulator starts")
}

const HEADERS: [(&str, &str); 4] = [
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/list"),
];

/// One stateless `tools/list` through `signer` to `url`; returns the HTTP status.
async fn list_tools(signer: &Signer, url: &str) -> u16 {
    let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list",
        "params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})
    .to_string();
    let a = send(
        signer,
        &principal("tester", &[]),
        "POST",
        url,
        &HEADERS,
        body.as_bytes(),
        true,
    )
    .await;
    if a.status != 200 {
        eprintln!(
            "upstream answered {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
    }
    a.status
}

fn signing_on() -> SigningConfig {
    SigningConfig {
        enabled: Some(true),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// Local endpoints: container credentials (EKS Pod Identity / ECS format) and moto STS
// ---------------------------------------------------------------------------------------

/// A container-credentials endpoint: checks the `Authorization` header against `token`,
/// and hands out key `n` (`AKIDCONTAINER000n` / `container-secret-n`) on the n-th call,
/// expiring `lifetime` from now.
struct ContainerEndpoint {
    addr: SocketAddr,
    authorized: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

fn container_key(n: usize) -> (String, String, String) {
    (
        format!("AKIDCONTAINER{n:04}"),
        format!("container-secret-{n}"),
        format!("container-token-{n}"),
    )
}

impl ContainerEndpoint {
    async fn start(token: &str, lifetime: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let authorized = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (a, r, token) = (authorized.clone(), refused.clone(), token.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (a, r, token) = (a.clone(), r.clone(), token.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let ok = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v == token.as_str());
                        let resp = if ok {
                            let n = a.fetch_add(1, Ordering::SeqCst);
                            let (k, s, t) = container_key(n);
                            let exp = aws_sdk_sts::primitives::DateTime::from(
                                SystemTime::now() + lifetime,
                            )
                            .fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime)
                            .unwrap();
                            let body = json!({"AccessKeyId": k, "SecretAccessKey": s,
                                "Token": t, "Expiration": exp, "AccountId": "123456789012"});
                            http::Response::new(Full::new(Bytes::from(body.to_string())))
                        } else {
                            r.fetch_add(1, Ordering::SeqCst);
                            let mut resp = http::Response::new(Full::new(Bytes::from_static(
                                br#"{"code":"AccessDenied","message":"bad token"}"#,
                            )));
                            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                            resp
                        };
                        async move { Ok::<_, std::convert::Infallible>(resp) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            authorized,
            refused,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }
}

/// `moto_server` on 127.0.0.1 (STS AssumeRole / AssumeRoleWithWebIdentity); killed on drop.
struct Moto {
    _child: tokio::process::Child,
    port: u16,
}

impl Moto {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(interop_python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start moto.server");
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    _child: child,
                    port,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto.server did not listen on 127.0.0.1:{port} within 60 s");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

// ---------------------------------------------------------------------------------------
// The chain, one source at a time
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn environment_credentials_sign_requests_the_upstream_accepts() {
    const NAME: &str = "credentials::environment_credentials_sign_requests_the_upstream_accepts";
    if !is_child(NAME) {
        return run_in_child(
            NAME,
            &[
                ("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001".into()),
                ("AWS_SECRET_ACCESS_KEY", "env/secret".into()),
                ("AWS_SESSION_TOKEN", "env-session-token".into()),
                ("AWS_REGION", "us-west-2".into()),
            ],
        )
        .await;
    }
    let sim = start_sim(
        "AKIAENVIRONMENT00001",
        "env/secret",
        Some("env-session-token"),
    )
    .await;
    let signer = Signer::from_config(&signing_on(), &sim.url().parse().unwrap())
        .await
        .expect("credentials resolve")
        .expect("signing is on");
    assert_eq!(signer.region(), "us-west-2");
    assert_eq!(list_tools(&signer, &sim.url()).await, 200);
    assert_eq!(sim.signature_failures(), 0);
    assert!(signer.health().is_ready(), "{}", signer.health().message());
}

/// Credentials and region from shared config files, the profile named by `signing.profile`
/// (`via_env: false`) or by `AWS_PROFILE` (`via_env: true`). The `default` profile holds other
/// keys, so using it would fail the signature check.
async fn profile_case(name: &str, via_env: bool) {
    if !is_child(name) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let credentials = dir.path().join("credentials");
        std::fs::write(&config, "[profile gateway]\nregion = eu-north-1\n").unwrap();
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKIAWRONGDEFAULT0001\naws_secret_access_key = no\n\n\
             [gateway]\naws_access_key_id = AKIAPROFILE000000001\n\
             aws_secret_access_key = profile/secret\n",
        )
        .unwrap();
        let mut env = vec![
            ("AWS_CONFIG_FILE", config.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
        ];
        if via_env {
            env.push(("AWS_PROFILE", "gateway".to_string()));
        }
        return run_in_child(name, &env).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let creds = SimCredentials {
        access_key_id: "AKIAPROFILE000000001".into(),
        secret_access_key: "profile/secret".into(),
        session_token: None,
    };
    let sim = sim::start(
        SimConfig {
            credentials: Some(creds),
            region: "eu-north-1".into(),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    let profile = if via_env {
        None
    } else {
        Some("gateway".to_string())
    };
    let cfg = SigningConfig {
        profile,
        ..signing_on()
    };
    let signer = Signer::from_config(&cfg, &sim.url().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    // Neither config nor host name a region: it comes from the profile.
    assert_eq!(signer.region(), "eu-north-1");
    assert_eq!(list_tools(&signer, &sim.url()).await, 200);
    assert_eq!(sim.signature_failures(), 0);
}

#[tokio::test]
async fn profile_files_supply_credentials_and_region() {
    profile_case(
        "credentials::profile_files_supply_credentials_and_region",
        false,
    )
    .await;
}

#[tokio::test]
async fn aws_profile_env_selects_the_profile() {
    profile_case("credentials::aws_profile_env_selects_the_profile", true).await;
}

#[tokio::test]
async fn irsa_web_identity_is_exchanged_at_the_local_sts() {
    const NAME: &str = "credentials::irsa_web_identity_is_exchanged_at_the_local_sts";
    if !is_child(NAME) {
        let moto = Moto::start().await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(
            &token,
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2ln",
        )
        .unwrap();
        return run_in_child(
            NAME,
            &[
                ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
                (
                    "AWS_ROLE_ARN",
                    "arn:aws:iam::123456789012:role/eks-mcp-gateway-irsa".into(),
                ),
                ("AWS_ROLE_SESSION_NAME", "gateway-irsa".into()),
                ("AWS_ENDPOINT_URL_STS", moto.url()),
                ("AWS_REGION", "us-west-2".into()),
            ],
        )
        .await;
    }
    let upstream: http::Uri = "https://eks-mcp.us-west-2.api.aws/mcp".parse().unwrap();
    let signer = Signer::from_config(&SigningConfig::default(), &upstream)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (signer.service(), signer.region()),
        ("eks-mcp", "us-west-2")
    );
    let (mut parts, ()) = http::Request::post(upstream).body(()).unwrap().into_parts();
    signer
        .sign(&mut parts, b"{}", &principal("p", &[]), None)
        .await
        .unwrap();
    let auth = parts.headers["authorization"].to_str().unwrap();
    // STS hands out temporary keys (ASIA…) with a session token.
    assert!(auth.contains("Credential=ASIA"), "{auth}");
    assert!(parts.headers.contains_key("x-amz-security-token"));
    assert_eq!(signer.credential_stats().refreshes, 1);
}

#[tokio::test]
async fn pod_identity_container_endpoint_with_token_file() {
    const NAME: &str = "credentials::pod_identity_container_endpoint_with_token_file";
    if !is_child(NAME) {
        let endpoint =
            ContainerEndpoint::start("pod-identity-token", Duration::from_secs(3600)).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("eks-pod-identity-token");
        std::fs::write(&token, "pod-identity-token").unwrap();
        run_in_child(
            NAME,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token.display().to_string(),
                ),
                ("AWS_REGION", "us-west-2".into()),
            ],
        )
        .await;
        assert_eq!(endpoint.authorized.load(Ordering::SeqCst), 1);
        assert_eq!(endpoint.refused.load(Ordering::SeqCst), 0);
        return;
    }
    let (k, s, t) = container_key(0);
    let sim = start_sim(&k, &s, Some(&t)).await;
    let signer = Signer::from_config(&signing_on(), &sim.url().parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(list_tools(&signer, &sim.url()).await, 200);
    assert_eq!(sim.signature_failures(), 0);
}

#[tokio::test]
async fn container_endpoint_refusing_the_token_fails_startup_clearly() {
    const NAME: &str = "credentials::container_endpoint_refusing_the_token_fails_startup_clearly";
    if !is_child(NAME) {
        let endpoint = ContainerEndpoint::start("right-token", Duration::from_secs(3600)).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "wrong-token").unwrap();
        run_in_child(
            NAME,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token.display().to_string(),
                ),
                ("AWS_REGION", "us-west-2".into()),
            ],
        )
        .await;
        assert!(endpoint.refused.load(Ordering::SeqCst) >= 1);
        assert_eq!(endpoint.authorized.load(Ordering::SeqCst), 0);
        return;
    }
    let upstream: http::Uri = "https://eks-mcp.us-west-2.api.aws/mcp".parse().unwrap();
    let err = Signer::from_config(&SigningConfig::default(), &upstream)
        .await
        .unwrap_err();
    assert!(matches!(err, SignError::NoCredentials(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("no AWS credentials") && msg.contains("Fix"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-token"),
        "the token file content leaked: {msg}"
    );
}

#[tokio::test]
async fn startup_fails_clearly_when_nothing_resolves() {
    const NAME: &str = "credentials::startup_fails_clearly_when_nothing_resolves";
    if !is_child(NAME) {
        return run_in_child(NAME, &[]).await;
    }
    let upstream: http::Uri = "https://eks-mcp.us-west-2.api.aws/mcp".parse().unwrap();
    let err = Signer::from_config(&SigningConfig::default(), &upstream)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no AWS credentials could be resolved"),
        "{msg}"
    );
    assert!(msg.contains("signing.enabled: false"), "{msg}");
    // Signing off: no credentials needed at all.
    let off = SigningConfig {
        enabled: Some(false),
        ..Default::default()
    };
    assert!(
        Signer::from_config(&off, &upstream)
            .await
            .unwrap()
            .is_none()
    );
    let local: http::Uri = "http://127.0.0.1:9/mcp".parse().unwrap();
    assert!(
        Signer::from_config(&SigningConfig::default(), &local)
            .await
            .unwrap()
            .is_none()
    );
}

/// Requests per caller in `short_lived_credentials_refresh_while_requests_flow`.
const CALLS: u64 = 80;

#[tokio::test]
async fn short_lived_credentials_refresh_while_requests_flow() {
    const NAME: &str = "credentials::short_lived_credentials_refresh_while_requests_flow";
    if !is_child(NAME) {
        // Credentials live 20 s: refreshed in the background at half-life (10 s), usable
        // until 5 s before expiry, so the background refresh has a 5 s window before any
        // request would have to wait (with 8 s it was 2 s, tight on a loaded machine). The
        // botocore upstream knows every key the endpoint hands out.
        let endpoint = ContainerEndpoint::start("tok", Duration::from_secs(20)).await;
        let keys: Vec<(String, String)> = (0..64)
            .map(|n| {
                let (k, s, _) = container_key(n);
                (k, s)
            })
            .collect();
        let upstream = BotocoreUpstream::start(&keys).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok").unwrap();
        run_in_child(
            NAME,
            &[
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", endpoint.url()),
                (
                    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                    token.display().to_string(),
                ),
                ("AWS_REGION", "us-west-2".into()),
                ("TEST_UPSTREAM_URL", upstream.url()),
            ],
        )
        .await;
        let stats = upstream.stats().await;
        assert_eq!(stats["mismatched"], 0, "{stats}");
        assert_eq!(stats["verified"], 4 * CALLS, "{stats}");
        // The first fetch and at least two background refreshes (at ~10 s and ~20 s).
        assert!(endpoint.authorized.load(Ordering::SeqCst) >= 3);
        return;
    }
    let url = std::env::var("TEST_UPSTREAM_URL").unwrap();
    let signer = Arc::new(
        Signer::from_config(&signing_on(), &url.parse().unwrap())
            .await
            .unwrap()
            .unwrap(),
    );
    // Four concurrent callers for ~32 s (over one and a half credential lifetimes); every
    // request must be accepted, and none may have had to wait for a refresh.
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (signer, url) = (signer.clone(), url.clone());
        callers.push(tokio::spawn(async move {
            for _ in 0..CALLS {
                let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}).to_string();
                let a = send(
                    &signer,
                    &principal("flow", &[]),
                    "POST",
                    &url,
                    &HEADERS,
                    body.as_bytes(),
                    true,
                )
                .await;
                assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        }));
    }
    for c in callers {
        c.await.expect("caller finished without a failed request");
    }
    let stats = signer.credential_stats();
    assert!(stats.refreshes >= 3, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(stats.waited, 0, "a request waited for a refresh: {stats:?}");
}

// ---------------------------------------------------------------------------------------
// Per-caller role sessions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn each_caller_gets_its_own_role_session_from_sts() {
    let moto = Moto::start().await;
    let read = "arn:aws:iam::123456789012:role/eks-mcp-read";
    let write = "arn:aws:iam::123456789012:role/eks-mcp-write";
    let cfg = SigningConfig {
        assume_role: Some(AssumeRoleConfig {
            role_arn: read.into(),
            roles: [("privileged".to_string(), write.to_string())].into(),
            session_duration: Duration::from_secs(900),
            session_tags: true,
            sts_endpoint: Some(moto.url()),
        }),
        ..Default::default()
    };
    let upstream: http::Uri = "https://eks-mcp.us-west-2.api.aws/mcp".parse().unwrap();
    let signer = Signer::from_provider(
        &cfg,
        &upstream,
        static_provider("AKIAGATEWAYBASE00001", "base-secret", None),
    )
    .await
    .unwrap();

    let alice = principal("alice@example.com", &["sre", "payments"]);
    let bob = principal("Bob Smith/ops", &["dev"]);
    let a = signer.role_session(&alice, None).await.unwrap().unwrap();
    let b = signer.role_session(&bob, None).await.unwrap().unwrap();
    // STS echoes the RoleSessionName in the assumed-role ARN: CloudTrail names the person.
    assert_eq!(
        a.assumed_role_arn,
        "arn:aws:sts::123456789012:assumed-role/eks-mcp-read/alice@example.com"
    );
    assert!(
        b.assumed_role_arn
            .starts_with("arn:aws:sts::123456789012:assumed-role/eks-mcp-read/Bob_Smith_ops-"),
        "{}",
        b.assumed_role_arn
    );
    assert_ne!(a.credentials.access_key_id(), b.credentials.access_key_id());
    let s = signer.role_session_stats().unwrap();
    assert_eq!((s.hits, s.misses, s.failures), (0, 2, 0));

    // Signing for alice uses alice's session, from the cache.
    let (mut parts, ()) = http::Request::post(upstream.clone())
        .body(())
        .unwrap()
        .into_parts();
    signer.sign(&mut parts, b"{}", &alice, None).await.unwrap();
    let auth = parts.headers["authorization"].to_str().unwrap();
    assert!(
        auth.contains(&format!("Credential={}/", a.credentials.access_key_id())),
        "{auth}"
    );
    assert_eq!(
        parts.headers["x-amz-security-token"],
        a.credentials.session_token().unwrap()
    );
    let again = signer.role_session(&alice, None).await.unwrap().unwrap();
    assert_eq!(
        again.credentials.access_key_id(),
        a.credentials.access_key_id()
    );
    let s = signer.role_session_stats().unwrap();
    assert_eq!((s.hits, s.misses), (2, 2));

    // The decision may pick the privileged role: a separate session of a different role.
    let w = signer
        .role_session(&alice, Some("privileged"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        w.assumed_role_arn,
        "arn:aws:sts::123456789012:assumed-role/eks-mcp-write/alice@example.com"
    );
    let err = signer
        .role_session(&alice, Some("admin"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"admin\"") && err.to_string().contains("assume_role.roles"),
        "{err}"
    );
}
