//! Caller authentication: JWT against a JWKS served locally (keys generated here), API keys
//! from a reloading file, and the static principal.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use eks_mcp_gateway::config::{AuthConfig, JwtAuthConfig};
use eks_mcp_gateway::identity::{AuthError, AuthKind, Authenticator, api_key_hash};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Value, json};

/// Serve `handler` over HTTP/1 on 127.0.0.1 until the test's runtime ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_with(handler, None).await
}

/// [`serve`], over TLS with `tls` when given.
async fn serve_with<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    None => {
                        http.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await
                    }
                    Some(tls) => {
                        // A client that does not trust the certificate ends the handshake.
                        let Ok(stream) = tls.accept(tcp).await else {
                            return;
                        };
                        http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await
                    }
                };
            });
        }
    });
    addr
}

/// A TLS acceptor with the test certificate for 127.0.0.1 and localhost, issued by the
/// private test CA in tests/fixtures/tls (no public root trusts it).
fn test_tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RSA signing key with its public JWK.
pub(crate) struct RsaKey {
    kid: String,
    pair: aws_lc_rs::rsa::KeyPair,
}

impl RsaKey {
    pub(crate) fn new(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        RsaKey {
            kid: kid.into(),
            pair,
        }
    }
    pub(crate) fn jwk(&self) -> Value {
        let pk = self.pair.public_key();
        json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": B64.encode(pk.modulus().big_endian_without_leading_zero()),
            "e": B64.encode(pk.exponent().big_endian_without_leading_zero()),
        })
    }
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .unwrap();
        format!("{input}.{}", B64.encode(sig))
    }
    fn token(&self, claims: &Value) -> String {
        self.sign(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

struct EcKey {
    kid: String,
    pair: EcdsaKeyPair,
}

impl EcKey {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        EcKey {
            kid: kid.into(),
            pair,
        }
    }
    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref().to_vec(); // 0x04 || x || y
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        })
    }
    fn token(&self, claims: &Value) -> String {
        let input = signing_input(&json!({"alg": "ES256", "kid": self.kid}), claims);
        let sig = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(header).unwrap()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    )
}

/// A local OIDC issuer: discovery document and a JWKS that tests can swap.
pub(crate) struct Issuer {
    pub(crate) url: String,
    jwks: Arc<Mutex<Value>>,
    jwks_fetches: Arc<AtomicUsize>,
}

impl Issuer {
    pub(crate) async fn start(keys: Vec<Value>) -> Issuer {
        Self::start_with(keys, None).await
    }

    async fn start_with(keys: Vec<Value>, tls: Option<tokio_rustls::TlsAcceptor>) -> Issuer {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let jwks = Arc::new(Mutex::new(json!({ "keys": keys })));
        let fetches = Arc::new(AtomicUsize::new(0));
        let issuer_url = Arc::new(Mutex::new(String::new()));
        let (j, f, u) = (jwks.clone(), fetches.clone(), issuer_url.clone());
        let addr = serve_with(
            move |req: Request<Incoming>| {
                let (j, f, u) = (j.clone(), f.clone(), u.clone());
                async move {
                    let body = match req.uri().path() {
                        "/.well-known/openid-configuration" => {
                            let iss = u.lock().unwrap().clone();
                            json!({"issuer": iss, "jwks_uri": format!("{iss}/keys")})
                        }
                        "/keys" => {
                            f.fetch_add(1, Ordering::SeqCst);
                            j.lock().unwrap().clone()
                        }
                        _ => {
                            return Response::builder()
                                .status(404)
                                .body(Full::default())
                                .unwrap();
                        }
                    };
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap()
                }
            },
            tls,
        )
        .await;
        let url = format!("{scheme}://{addr}");
        *issuer_url.lock().unwrap() = url.clone();
        Issuer {
            url,
            jwks,
            jwks_fetches: fetches,
        }
    }

    fn config(&self) -> JwtAuthConfig {
        let yaml = format!(
            "mode: jwt\nissuer: {}\naudience: eks-mcp-gateway\ngroups_claim: groups\n\
             jwks_min_refresh_interval: 0s\nleeway: 5s\n",
            self.url
        );
        match serde_yaml::from_str::<AuthConfig>(&yaml).unwrap() {
            AuthConfig::Jwt(j) => j,
            other => panic!("expected jwt config, got {other:?}"),
        }
    }

    fn claims(&self, sub: &str) -> Value {
        json!({
            "iss": self.url, "aud": "eks-mcp-gateway", "sub": sub,
            "iat": now(), "nbf": now() - 5, "exp": now() + 600,
            "groups": ["dev", "payments-oncall"],
        })
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

const METADATA: &str = "http://127.0.0.1/.well-known/oauth-protected-resource/mcp";

/// The rejection a client sees: 401 with a challenge pointing at the metadata and naming
/// `invalid_token`.
fn assert_invalid_token(err: &AuthError, what: &str) {
    assert_eq!(err.status(), 401, "{what}: {err}");
    let challenge = err.www_authenticate(METADATA);
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{METADATA}\"")),
        "{what}: {challenge}"
    );
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn jwt_rs256_and_es256_tokens_name_the_caller_and_groups() {
    let rsa = RsaKey::new("rsa-1");
    let ec = EcKey::new("ec-1");
    let issuer = Issuer::start(vec![rsa.jwk(), ec.jwk()]).await;
    let auth = Authenticator::from_config(&AuthConfig::Jwt(issuer.config()))
        .await
        .unwrap();

    let p = auth
        .authenticate(&bearer(&rsa.token(&issuer.claims("alice"))))
        .await
        .unwrap();
    assert_eq!(p.id, "alice");
    assert_eq!(p.groups, vec!["dev", "payments-oncall"]);
    assert_eq!(p.auth, AuthKind::Jwt);
    assert_eq!(p.claims["iss"], issuer.url.as_str());

    // Groups as a space-separated string (the `scope` style) work too.
    let mut claims = issuer.claims("bob");
    claims["groups"] = json!("readers sre");
    let p = auth
        .authenticate(&bearer(&ec.token(&claims)))
        .await
        .unwrap();
    assert_eq!(p.id, "bob");
    assert_eq!(p.groups, vec!["readers", "sre"]);
    assert!(auth.readiness().0, "{}", auth.readiness().1);

    let doc = auth
        .protected_resource_metadata("https://gw.example/mcp")
        .unwrap();
    assert_eq!(doc["resource"], "https://gw.example/mcp");
    assert_eq!(doc["authorization_servers"], json!([issuer.url]));
}

#[tokio::test]
async fn jwt_issuer_behind_a_private_ca_needs_ca_file() {
    let key = RsaKey::new("k1");
    let issuer = Issuer::start_with(vec![key.jwk()], Some(test_tls_acceptor())).await;
    assert!(issuer.url.starts_with("https://127.0.0.1:"));
    let token = key.token(&issuer.claims("alice"));

    // The public web roots do not trust the private CA: the keys cannot be fetched, and the
    // caller is refused rather than let through.
    let auth = Authenticator::from_config(&AuthConfig::Jwt(issuer.config()))
        .await
        .unwrap();
    let err = auth.authenticate(&bearer(&token)).await.unwrap_err();
    assert!(
        matches!(err, AuthError::JwksUnavailable(_)),
        "untrusted issuer: {err:?}"
    );
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 0);

    // With the CA in auth.ca_file the same token names the caller.
    let mut cfg = issuer.config();
    cfg.ca_file =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem"));
    let auth = Authenticator::from_config(&AuthConfig::Jwt(cfg.clone()))
        .await
        .unwrap();
    let p = auth.authenticate(&bearer(&token)).await.unwrap();
    assert_eq!(p.id, "alice");
    assert_eq!(p.groups, vec!["dev", "payments-oncall"]);

    // A ca_file that holds no certificate is a configuration error naming the key.
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    cfg.ca_file = Some(not_pem);
    let Err(err) = Authenticator::from_config(&AuthConfig::Jwt(cfg)).await else {
        panic!("a ca_file without certificates is refused");
    };
    let m = err.to_string();
    assert!(
        m.contains("auth.ca_file") && m.contains("holds no certificate") && m.contains("Fix"),
        "{m}"
    );
}

#[tokio::test]
async fn jwt_bad_tokens_get_401_with_a_challenge() {
    let rsa = RsaKey::new("rsa-1");
    let issuer = Issuer::start(vec![rsa.jwk()]).await;
    let auth = Authenticator::from_config(&AuthConfig::Jwt(issuer.config()))
        .await
        .unwrap();
    let good = issuer.claims("alice");

    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    let err = auth
        .authenticate(&bearer(&rsa.token(&expired)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Expired), "{err}");
    assert_invalid_token(&err, "expired");

    let mut not_yet = good.clone();
    not_yet["nbf"] = json!(now() + 3600);
    let err = auth
        .authenticate(&bearer(&rsa.token(&not_yet)))
        .await
        .unwrap_err();
    assert_invalid_token(&err, "nbf in the future");

    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("some-other-api");
    let err = auth
        .authenticate(&bearer(&rsa.token(&wrong_aud)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("audience"), "{err}");
    assert_invalid_token(&err, "wrong audience");

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let err = auth
        .authenticate(&bearer(&rsa.token(&wrong_iss)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issuer"), "{err}");
    assert_invalid_token(&err, "wrong issuer");

    // alg: none, unsigned.
    let none = format!(
        "{}.",
        signing_input(&json!({"alg": "none", "typ": "JWT"}), &good)
    );
    let err = auth.authenticate(&bearer(&none)).await.unwrap_err();
    assert_invalid_token(&err, "alg none");

    // HS256 "signed" with the RSA public key as the HMAC secret (key confusion).
    let hs_input = signing_input(&json!({"alg": "HS256", "kid": "rsa-1"}), &good);
    let public_der = rsa.pair.public_key().as_ref().to_vec();
    let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &public_der);
    let mac = aws_lc_rs::hmac::sign(&mac_key, hs_input.as_bytes());
    let confused = format!("{hs_input}.{}", B64.encode(mac.as_ref()));
    let err = auth.authenticate(&bearer(&confused)).await.unwrap_err();
    assert!(err.to_string().contains("HS256"), "{err}");
    assert_invalid_token(&err, "HS256 with the public key");

    // Tampered: a validly signed token whose payload was changed to add a group.
    let token = rsa.token(&good);
    let parts: Vec<&str> = token.split('.').collect();
    let mut escalated = good.clone();
    escalated["groups"] = json!(["platform-admins"]);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(escalated.to_string()),
        parts[2]
    );
    let err = auth.authenticate(&bearer(&tampered)).await.unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
    assert_invalid_token(&err, "tampered payload");

    // Signed by a key the issuer never published.
    let stranger = RsaKey::new("rsa-1");
    let err = auth
        .authenticate(&bearer(&stranger.token(&good)))
        .await
        .unwrap_err();
    assert_invalid_token(&err, "foreign key with a known kid");

    // Garbage and a missing header.
    let err = auth.authenticate(&bearer("not-a-jwt")).await.unwrap_err();
    assert_invalid_token(&err, "garbage");
    let err = auth.authenticate(&HeaderMap::new()).await.unwrap_err();
    assert!(matches!(err, AuthError::Missing));
    assert_eq!(err.status(), 401);
    assert_eq!(
        err.www_authenticate(METADATA),
        format!("Bearer resource_metadata=\"{METADATA}\"")
    );

    // No error message ever echoes the token.
    let token = rsa.token(&expired);
    let err = auth.authenticate(&bearer(&token)).await.unwrap_err();
    let sig = token.rsplit('.').next().unwrap();
    assert!(!err.to_string().contains(sig));
    assert!(!format!("{err:?}").contains(sig));
    assert!(!format!("{auth:?}").contains("BEGIN"));
}

#[tokio::test]
async fn jwt_key_rotation_is_picked_up_on_an_unknown_kid() {
    let old = RsaKey::new("2026-01");
    let issuer = Issuer::start(vec![old.jwk()]).await;
    let auth = Authenticator::from_config(&AuthConfig::Jwt(issuer.config()))
        .await
        .unwrap();
    assert!(
        auth.authenticate(&bearer(&old.token(&issuer.claims("alice"))))
            .await
            .is_ok()
    );
    let fetched = issuer.jwks_fetches.load(Ordering::SeqCst);

    // The issuer rotates: only the new key is published now.
    let new = EcKey::new("2026-02");
    *issuer.jwks.lock().unwrap() = json!({"keys": [new.jwk()]});
    let p = auth
        .authenticate(&bearer(&new.token(&issuer.claims("carol"))))
        .await
        .unwrap();
    assert_eq!(p.id, "carol");
    assert!(
        issuer.jwks_fetches.load(Ordering::SeqCst) > fetched,
        "rotation needs a refetch"
    );
    // The retired key no longer verifies once the set was refetched.
    let err = auth
        .authenticate(&bearer(&old.token(&issuer.claims("alice"))))
        .await
        .unwrap_err();
    assert_invalid_token(&err, "retired key");
}

#[tokio::test]
async fn jwt_unknown_kids_cannot_make_the_gateway_hammer_the_issuer() {
    let key = RsaKey::new("k1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let mut cfg = issuer.config();
    cfg.jwks_min_refresh_interval = Duration::from_secs(3600);
    let auth = Authenticator::from_config(&AuthConfig::Jwt(cfg))
        .await
        .unwrap();
    let fetched = issuer.jwks_fetches.load(Ordering::SeqCst);
    assert_eq!(fetched, 1, "one fetch at start-up");
    for i in 0..20 {
        let stranger = RsaKey::new(&format!("unknown-{i}"));
        let err = auth
            .authenticate(&bearer(&stranger.token(&issuer.claims("x"))))
            .await;
        assert!(err.is_err());
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), fetched);
}

#[tokio::test]
async fn jwt_issuer_unreachable_fails_closed_with_503() {
    // Reserve a port, then close it: nothing listens there yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let yaml =
        format!("mode: jwt\nissuer: http://{addr}\njwks_url: http://{addr}/keys\naudience: a\n");
    // (The default refetch rate limit applies: the token below does not trigger a fetch, the
    // failure of the start-up fetch is reported.)
    let cfg: AuthConfig = serde_yaml::from_str(&yaml).unwrap();
    let auth = Authenticator::from_config(&cfg).await.unwrap();
    let (ready, detail) = auth.readiness();
    assert!(!ready, "not ready without signing keys");
    assert!(detail.contains(&addr.to_string()), "{detail}");
    let key = RsaKey::new("k");
    let claims =
        json!({"iss": format!("http://{addr}"), "aud": "a", "sub": "s", "exp": now() + 60});
    let err = auth
        .authenticate(&bearer(&key.token(&claims)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::JwksUnavailable(_)), "{err}");
    assert_eq!(err.status(), 503);
    assert!(
        err.to_string().contains(&addr.to_string()),
        "the cause is named: {err}"
    );
}

fn write_keys(path: &std::path::Path, entries: &[(&str, &str, &[&str])]) {
    let mut y = String::from("keys:\n");
    for (key, principal, groups) in entries {
        y.push_str(&format!(
            "  - sha256: {}\n    principal: {principal}\n    groups: {groups:?}\n",
            api_key_hash(key)
        ));
    }
    // Write then rename, as a config-management tool would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, y).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn api_keys_authenticate_and_the_file_reloads() {
    let logs = crate::harness::LogCapture::default();
    let _logging = logs.install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.yaml");
    write_keys(&path, &[("key-alice-0001", "alice", &["dev"])]);
    let cfg: AuthConfig =
        serde_yaml::from_str(&format!("mode: api_key\nfile: {}\n", path.display())).unwrap();
    let auth = Authenticator::from_config(&cfg).await.unwrap();
    assert!(
        auth.protected_resource_metadata("https://gw.example/mcp")
            .is_none()
    );

    let p = auth.authenticate(&bearer("key-alice-0001")).await.unwrap();
    assert_eq!((p.id.as_str(), p.auth), ("alice", AuthKind::ApiKey));
    assert_eq!(p.groups, vec!["dev"]);
    let mut h = HeaderMap::new();
    h.insert("x-api-key", "key-alice-0001".parse().unwrap());
    assert_eq!(auth.authenticate(&h).await.unwrap().id, "alice");

    let err = auth.authenticate(&bearer("key-mallory")).await.unwrap_err();
    assert!(matches!(err, AuthError::UnknownKey));
    assert_invalid_token(&err, "unknown key");
    // No OAuth metadata exists in this mode, so the challenge does not point at any.
    let challenge = auth.challenge(&err, METADATA);
    assert!(!challenge.contains("resource_metadata"), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(matches!(
        auth.authenticate(&HeaderMap::new()).await,
        Err(AuthError::Missing)
    ));

    // Rotate: alice's key is revoked, bob's is added.
    write_keys(&path, &[("key-bob-0002", "bob", &["sre", "readers"])]);
    eventually("the new key file to load", || async {
        auth.authenticate(&bearer("key-bob-0002")).await.is_ok()
    })
    .await;
    assert!(
        auth.authenticate(&bearer("key-alice-0001")).await.is_err(),
        "revoked key"
    );

    // A broken file keeps the previous keys. The watcher logs its refusal: wait for that
    // event, so the check below runs after the reload was attempted, not merely after a pause.
    std::fs::write(&path, "keys: [ {sha256: nothex, principal: x} ]\n").unwrap();
    eventually("the watcher to refuse the broken key file", || async {
        logs.text().contains("API key file not reloaded")
    })
    .await;
    assert_eq!(
        auth.authenticate(&bearer("key-bob-0002")).await.unwrap().id,
        "bob"
    );
}

#[tokio::test]
async fn api_key_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.yaml");
    std::fs::write(&path, "keys:\n  - sha256: abc\n    principal: x\n").unwrap();
    let cfg: AuthConfig =
        serde_yaml::from_str(&format!("mode: api_key\nfile: {}\n", path.display())).unwrap();
    let err = Authenticator::from_config(&cfg)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("keys.yaml") && err.contains("sha256"), "{err}");
}

#[tokio::test]
async fn static_mode_is_one_fixed_principal() {
    let cfg: AuthConfig =
        serde_yaml::from_str("mode: static\nprincipal: sidecar-agent\ngroups: [dev]\n").unwrap();
    let auth = Authenticator::from_config(&cfg).await.unwrap();
    let p = auth.authenticate(&HeaderMap::new()).await.unwrap();
    assert_eq!((p.id.as_str(), p.auth), ("sidecar-agent", AuthKind::Static));
    assert_eq!(p.groups, vec!["dev"]);
    assert!(
        auth.protected_resource_metadata("http://127.0.0.1/mcp")
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------
// Through the gateway

/// A stateless-era `tools/call` with the given extra headers.
async fn stateless_call(
    c: &crate::harness::McpClient,
    tool: &str,
    args: Value,
    headers: &[(&str, &str)],
) -> crate::harness::Reply {
    let body = json!({
        "jsonrpc": "2.0", "id": c.next_id(), "method": "tools/call",
        "params": {"name": tool, "arguments": args,
                   "_meta": {"io.modelcontextprotocol/protocolVersion": crate::harness::STATELESS}},
    });
    let mut all = vec![
        ("mcp-protocol-version", crate::harness::STATELESS),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
    ];
    all.extend_from_slice(headers);
    c.post_raw(serde_json::to_vec(&body).unwrap(), &all).await
}

#[tokio::test]
async fn gateway_with_jwt_auth_challenges_serves_metadata_and_names_the_caller() {
    use crate::harness::{Harness, Options};

    let key = RsaKey::new("gw-1");
    let issuer = Issuer::start(vec![key.jwk()]).await;
    let jwt = issuer.config();
    let h =
        Harness::start_with(Options::default().tweak(move |cfg| cfg.auth = AuthConfig::Jwt(jwt)))
            .await;
    let c = h.client();
    let args =
        json!({"cluster_name": "dev", "kind": "Pod", "api_version": "v1", "namespace": "payments"});

    // No token: 401 with a challenge that leads to the protected-resource metadata.
    let r = stateless_call(&c, "list_k8s_resources", args.clone(), &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let challenge = r.headers["www-authenticate"].to_str().unwrap().to_owned();
    let metadata_url = challenge
        .strip_prefix("Bearer resource_metadata=\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{challenge}"))
        .to_owned();
    assert!(
        metadata_url.contains("/.well-known/oauth-protected-resource"),
        "{metadata_url}"
    );

    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let path = metadata_url
        .split_once("/.well-known")
        .map(|(_, p)| p)
        .unwrap();
    let resp = http
        .request(
            Request::get(format!("http://{}/.well-known{path}", h.addr))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    let doc: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["authorization_servers"], json!([issuer.url]));
    assert!(
        doc["resource"]
            .as_str()
            .unwrap()
            .starts_with(&format!("http://{}", h.addr)),
        "{doc}"
    );

    // A bad token: 401 invalid_token; nothing reaches the upstream.
    let mut expired = issuer.claims("dana");
    expired["exp"] = json!(now() - 3600);
    let expired = format!("Bearer {}", key.token(&expired));
    let r = stateless_call(
        &c,
        "list_k8s_resources",
        args.clone(),
        &[("authorization", &expired)],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert!(h.sim.tool_calls().is_empty());

    // A good token: the call goes through as the token's subject, and the token itself goes
    // nowhere: not upstream, not into the audit record.
    let mut claims = issuer.claims("dana");
    claims["groups"] = json!(["platform-admins"]);
    let token = key.token(&claims);
    let auth = format!("Bearer {token}");
    let r = stateless_call(&c, "list_k8s_resources", args, &[("authorization", &auth)]).await;
    assert!(!r.is_tool_error(), "{}", r.text());
    let sig = token.rsplit('.').next().unwrap();
    for req in h.sim.received() {
        for (name, value) in &req.headers {
            assert!(
                !value.contains(sig),
                "the caller's token reached the upstream in {name}"
            );
        }
    }
    let records = h.audit_records(1).await;
    let rec = records
        .iter()
        .find(|r| r["method"] == "tools/call")
        .unwrap();
    assert_eq!(rec["principal"]["id"], "dana");
    assert_eq!(rec["principal"]["auth"], "jwt");
    assert_eq!(rec["principal"]["groups"], json!(["platform-admins"]));
    let raw = std::fs::read_to_string(&h.audit_path).unwrap();
    assert!(!raw.contains(sig), "the token reached the audit log");
    h.stop().await;
}
