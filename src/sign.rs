//! sign: AWS SigV4 on every upstream request, as the very last change to it.
//!
//! The pipeline hands over the final request head (URI and end-to-end headers) and the exact
//! body bytes; this module removes what must never go upstream (the caller's `Authorization`,
//! hop-by-hop headers, stale `X-Amz-*` signing headers), signs everything else with the
//! gateway's credentials (or a per-caller STS role session), and adds `Authorization`,
//! `X-Amz-Date` and `X-Amz-Security-Token`. Nothing may change the request after this.
//!
//! Credentials come from `credentials` (the only other module that sees AWS secrets). Error
//! texts here are safe to show to a client: they never contain a secret or a signature.
use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{self, HeaderName, HeaderValue};

use crate::config::SigningConfig;
pub use crate::credentials::CredentialHealth;
use crate::credentials::{
    CredentialCache, CredentialStats, RoleSession, RoleSessionError, RoleSessionStats, RoleSessions,
};
use crate::identity::Principal;

/// SigV4 service name of the hosted EKS MCP server.
pub const DEFAULT_SERVICE: &str = "eks-mcp";

/// Why a request could not be signed, or why signing could not start.
/// The Display text is safe to show to a client: it never includes secrets.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Startup: configuration cannot work (names the key and the fix).
    #[error("signing configuration: {0}")]
    Config(String),
    /// Startup: signing is on and no credentials resolve.
    #[error(
        "signing is enabled but no AWS credentials could be resolved ({0}). Fix: provide \
         credentials the standard way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or \
         signing.profile, IRSA web identity, EKS Pod Identity, or an instance role), or set \
         signing.enabled: false for an upstream that does not need SigV4"
    )]
    NoCredentials(String),
    /// Request time: the held credentials expired and could not be refreshed.
    #[error(
        "the gateway has no valid AWS credentials to sign the upstream request; \
         the operator should check the gateway's credential source (see /readyz)"
    )]
    CredentialsUnavailable,
    /// Request time: a per-caller role session could not be had.
    #[error(transparent)]
    RoleSession(#[from] RoleSessionError),
    /// Request time: the request head cannot be signed as it is.
    #[error("the upstream request cannot be signed: {0}")]
    Request(String),
}

/// Headers that are never signed and never forwarded by the signer: hop-by-hop headers
/// (`proxy-*` is matched by prefix) and the signer's own outputs, which it replaces.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const SIGNER_OWNED: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

/// Derive `(service, region)` from an AWS host of the form `<service>.<region>.api.aws`,
/// e.g. `eks-mcp.us-west-2.api.aws` → `("eks-mcp", "us-west-2")`. Any port is ignored.
pub fn service_and_region_from_host(host: &str) -> Option<(String, String)> {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [service, region, "api", "aws"] if !service.is_empty() && is_region(region) => {
            Some((service.to_string(), region.to_string()))
        }
        _ => None,
    }
}

fn is_region(s: &str) -> bool {
    s.len() >= 4
        && s.contains('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The signer shared by all requests (`Arc<Signer>`).
pub struct Signer {
    service: String,
    region: String,
    credentials: Arc<CredentialCache>,
    role_sessions: Option<Arc<RoleSessions>>,
    settings: SigningSettings,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("service", &self.service)
            .field("region", &self.region)
            .field("role_sessions", &self.role_sessions.is_some())
            .finish_non_exhaustive()
    }
}

/// Is signing on for this upstream? Explicit config wins; otherwise everything except a
/// plain-http loopback upstream (a local test server or sidecar) is signed.
fn signing_enabled(cfg: &SigningConfig, upstream: &http::Uri) -> bool {
    cfg.enabled.unwrap_or_else(|| {
        let loopback_http = upstream.scheme_str() == Some("http")
            && upstream.host().is_some_and(crate::config::is_loopback_host);
        !loopback_http
    })
}

fn env_region() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
}

impl Signer {
    /// `None` when signing is disabled (`signing.enabled: false`, or an `http://` loopback
    /// upstream with `enabled` unset). Fails with a clear message when signing is on and no
    /// credentials resolve, so startup fails.
    pub async fn from_config(
        cfg: &SigningConfig,
        upstream: &http::Uri,
    ) -> Result<Option<Signer>, SignError> {
        if !signing_enabled(cfg, upstream) {
            return Ok(None);
        }
        let (service, region) = Self::names(cfg, upstream)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(profile) = &cfg.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = &region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let region = match region.or_else(|| sdk.region().map(|r| r.to_string())) {
            Some(r) => r,
            None => {
                return Err(SignError::Config(
                    "no signing region: the upstream host is not <service>.<region>.api.aws and \
                     neither signing.region nor AWS_REGION is set. Fix: set signing.region, \
                     e.g. us-west-2"
                        .into(),
                ));
            }
        };
        let provider = sdk.credentials_provider().ok_or_else(|| {
            SignError::NoCredentials("the AWS SDK configured no credential provider".into())
        })?;
        Self::build(cfg, service, region, provider, &sdk)
            .await
            .map(Some)
    }

    /// Like [`Signer::from_config`] (signing always on) but with credentials from `provider`
    /// instead of the standard chain: for tests, the demo and embedding. Region and service
    /// follow the same rules; STS for `assume_role` uses `provider`'s credentials.
    pub async fn from_provider(
        cfg: &SigningConfig,
        upstream: &http::Uri,
        provider: SharedCredentialsProvider,
    ) -> Result<Signer, SignError> {
        let (service, region) = Self::names(cfg, upstream)?;
        let region = region.ok_or_else(|| {
            SignError::Config("no signing region. Fix: set signing.region, e.g. us-west-2".into())
        })?;
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.clone()))
            .credentials_provider(provider.clone())
            .load()
            .await;
        Self::build(cfg, service, region, provider, &sdk).await
    }

    /// Service and (if known without the SDK) region, per the documented precedence.
    fn names(
        cfg: &SigningConfig,
        upstream: &http::Uri,
    ) -> Result<(String, Option<String>), SignError> {
        let derived = upstream.host().and_then(service_and_region_from_host);
        let service = cfg
            .service
            .clone()
            .or_else(|| derived.as_ref().map(|(s, _)| s.clone()))
            .unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        if service.is_empty() || !service.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
            return Err(SignError::Config(format!(
                "signing.service {service:?} is not a SigV4 service name. Fix: e.g. eks-mcp"
            )));
        }
        let region = cfg
            .region
            .clone()
            .or_else(|| derived.map(|(_, r)| r))
            .or_else(env_region);
        Ok((service, region))
    }

    async fn build(
        cfg: &SigningConfig,
        service: String,
        region: String,
        provider: SharedCredentialsProvider,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Signer, SignError> {
        let credentials = CredentialCache::start(provider)
            .await
            .map_err(|e| SignError::NoCredentials(e.message))?;
        let role_sessions = match &cfg.assume_role {
            None => None,
            Some(ar) => {
                let mut sts = aws_sdk_sts::config::Builder::from(sdk)
                    .credentials_provider(credentials.as_provider())
                    .identity_cache(aws_sdk_sts::config::IdentityCache::no_cache());
                if let Some(endpoint) = &ar.sts_endpoint {
                    sts = sts.endpoint_url(endpoint);
                }
                let client = aws_sdk_sts::Client::from_conf(sts.build());
                Some(Arc::new(
                    RoleSessions::new(client, ar).map_err(SignError::Config)?,
                ))
            }
        };
        tracing::info!(%service, %region, role_sessions = role_sessions.is_some(),
            "SigV4 signing enabled");
        Ok(Signer {
            service,
            region,
            credentials,
            role_sessions,
            settings: SigningSettings::default(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Credential health for `/readyz`.
    pub fn health(&self) -> CredentialHealth {
        self.credentials.health()
    }

    pub fn credential_stats(&self) -> CredentialStats {
        self.credentials.stats()
    }

    /// Role-session cache counters, when `assume_role` is configured.
    pub fn role_session_stats(&self) -> Option<RoleSessionStats> {
        self.role_sessions.as_ref().map(|r| r.stats())
    }

    /// The role session a request from `principal` (with the decision's `role`) is signed
    /// with, or `None` without `assume_role`. For audit records (the assumed-role ARN).
    pub async fn role_session(
        &self,
        principal: &Principal,
        role: Option<&str>,
    ) -> Result<Option<Arc<RoleSession>>, SignError> {
        match &self.role_sessions {
            None => Ok(None),
            Some(rs) => Ok(Some(rs.get(principal, role).await?)),
        }
    }

    /// Sign as the very last change. `parts` carries the final URI and end-to-end headers;
    /// `body` is the exact bytes to send. Removes the caller's `Authorization`, hop-by-hop
    /// headers and stale signing headers, then adds `Authorization`, `X-Amz-Date` and (for
    /// temporary credentials) `X-Amz-Security-Token`. All remaining headers are signed except
    /// `user-agent`. `principal` and `role` select a per-caller role session when
    /// `assume_role` is configured.
    pub async fn sign(
        &self,
        parts: &mut http::request::Parts,
        body: &[u8],
        principal: &Principal,
        role: Option<&str>,
    ) -> Result<(), SignError> {
        let credentials = match &self.role_sessions {
            Some(rs) => rs.get(principal, role).await?.credentials.clone(),
            None => self.credentials.get().await.map_err(|e| {
                tracing::warn!(error = %e, "cannot sign: no valid AWS credentials");
                SignError::CredentialsUnavailable
            })?,
        };
        sign_request(
            parts,
            body,
            &credentials,
            &self.service,
            &self.region,
            SystemTime::now(),
            &self.settings,
        )
    }
}

/// The authority hyper will send as `Host` (or `:authority`): the URI's, without a default
/// port. An explicit default port is also removed from the URI itself, so HTTP/1 and HTTP/2
/// send the same value.
fn canonical_host(parts: &mut http::request::Parts) -> Result<String, SignError> {
    let uri = &parts.uri;
    let authority = uri
        .authority()
        .ok_or_else(|| SignError::Request("the upstream URI has no host".into()))?;
    let default_port = match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let host = authority.host().to_string();
    let host_port = match authority.port_u16() {
        Some(p) if Some(p) == default_port => {
            let mut p2 = uri.clone().into_parts();
            p2.authority =
                Some(host.parse().map_err(|_| {
                    SignError::Request("the upstream URI host is not valid".into())
                })?);
            parts.uri = http::Uri::from_parts(p2)
                .map_err(|_| SignError::Request("the upstream URI is not valid".into()))?;
            host
        }
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    Ok(host_port)
}

/// Remove what must not be signed or forwarded: the caller's `Authorization`, hop-by-hop
/// headers (and headers named in `Connection`), stale signer outputs, and `Host` (hyper sets
/// it from the URI, which is what gets signed).
fn strip_unsignable(headers: &mut http::HeaderMap) {
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named_by_connection {
        headers.remove(name);
    }
    for name in HOP_BY_HOP
        .iter()
        .chain(SIGNER_OWNED.iter())
        .chain(["host"].iter())
    {
        headers.remove(*name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Sign `parts` with `credentials` at `time`. Deterministic for a fixed time; the core of
/// [`Signer::sign`], public so tests and benches can check it against known vectors.
pub fn sign_request(
    parts: &mut http::request::Parts,
    body: &[u8],
    credentials: &Credentials,
    service: &str,
    region: &str,
    time: SystemTime,
    settings: &SigningSettings,
) -> Result<(), SignError> {
    strip_unsignable(&mut parts.headers);
    let host = canonical_host(parts)?;
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(parts.headers.len() + 1);
    signed.push(("host", host.as_str()));
    for (name, value) in parts.headers.iter() {
        if name == header::USER_AGENT {
            continue;
        }
        let value = value.to_str().map_err(|_| {
            SignError::Request(format!(
                "header {name} has a value with non-ASCII bytes, which SigV4 cannot sign"
            ))
        })?;
        signed.push((name.as_str(), value));
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings.clone())
        .build()
        .map_err(|e| SignError::Request(format!("signing parameters: {e}")))?
        .into();
    let signable = SignableRequest::new(
        parts.method.as_str(),
        path_and_query,
        signed.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| SignError::Request(e.to_string()))?;
    let (instructions, _signature) = sigv4_sign(signable, &params)
        .map_err(|e| SignError::Request(e.to_string()))?
        .into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for h in new_headers {
        let mut value = HeaderValue::from_str(h.value())
            .map_err(|_| SignError::Request(format!("signer produced an invalid {}", h.name())))?;
        value.set_sensitive(h.sensitive() || h.name() == "authorization");
        parts.headers.insert(h.name(), value);
    }
    Ok(())
}

/// A client-safe hint for an upstream authentication failure (HTTP 401/403 with an AWS error
/// type in `x-amzn-errortype` or a JSON `__type`/`code`), or `None` when the response is not
/// one. The hint names the AWS error type and what the operator should check; it never
/// repeats the upstream message verbatim beyond its first line.
pub fn classify_upstream_auth_failure(
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<String> {
    if status != 401 && status != 403 {
        return None;
    }
    let from_header = headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_body = json.as_ref().and_then(|j| {
        ["__type", "code", "Code"]
            .iter()
            .find_map(|k| j.get(*k).and_then(|v| v.as_str()))
            .map(|t| {
                t.rsplit('#')
                    .next()
                    .unwrap_or(t)
                    .split(':')
                    .next()
                    .unwrap_or(t)
                    .to_string()
            })
    });
    let kind = from_header.or(from_body)?;
    let hint = match kind.as_str() {
        "InvalidSignatureException" | "SignatureDoesNotMatch" => {
            "check the gateway's clock and credentials, and that signing.service and \
             signing.region match the upstream"
        }
        "ExpiredTokenException" | "ExpiredToken" | "RequestExpired" => {
            "the gateway's AWS credentials or clock are stale; check its credential source \
             and time synchronisation"
        }
        "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "IncompleteSignatureException"
        | "MissingAuthenticationTokenException"
        | "MissingAuthenticationToken" => {
            "the gateway's AWS credentials are not valid for this upstream"
        }
        "AccessDeniedException" | "AccessDenied" => {
            "the gateway's IAM principal is not allowed this action (eks-mcp:InvokeMcp, \
             eks-mcp:CallReadOnlyTool or eks-mcp:CallPrivilegedTool)"
        }
        _ => "check the gateway's AWS credentials and IAM permissions",
    };
    let what = if kind.contains("Signature") {
        "upstream rejected the request signature"
    } else {
        "upstream rejected the gateway's AWS authentication"
    };
    let kind: String = kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    Some(format!("{what} ({kind}): {hint}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn vector_time() -> SystemTime {
        // 2015-08-30T12:36:00Z, the time of the AWS SigV4 test suite.
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160)
    }

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn auth(p: &http::request::Parts) -> &str {
        p.headers["authorization"].to_str().unwrap()
    }

    /// The pipeline shares one signer across tasks and awaits `sign` inside spawned tasks.
    #[allow(dead_code)]
    fn signer_and_its_futures_are_send_and_sync(s: &Signer, p: &mut http::request::Parts) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        send_sync(s);
        let who = Principal {
            id: "x".into(),
            groups: vec![],
            auth: crate::identity::AuthKind::Static,
            claims: Default::default(),
        };
        send(&s.sign(p, b"", &who, None));
    }

    #[test]
    fn derives_service_and_region_from_the_hosted_endpoint() {
        assert_eq!(
            service_and_region_from_host("eks-mcp.us-west-2.api.aws"),
            Some(("eks-mcp".into(), "us-west-2".into()))
        );
        assert_eq!(
            service_and_region_from_host("EKS-MCP.eu-central-1.api.aws:443"),
            Some(("eks-mcp".into(), "eu-central-1".into()))
        );
        assert_eq!(service_and_region_from_host("127.0.0.1"), None);
        assert_eq!(service_and_region_from_host("example.com"), None);
        assert_eq!(
            service_and_region_from_host("a.b.eks-mcp.us-west-2.api.aws"),
            None
        );
        assert_eq!(
            service_and_region_from_host("eks-mcp.us-west-2.amazonaws.com"),
            None
        );
    }

    #[test]
    fn config_and_host_decide_names_and_enablement() {
        let up: http::Uri = "https://eks-mcp.ap-south-1.api.aws/mcp".parse().unwrap();
        let (s, r) = Signer::names(&SigningConfig::default(), &up).unwrap();
        assert_eq!((s.as_str(), r.as_deref()), ("eks-mcp", Some("ap-south-1")));
        let cfg = SigningConfig {
            service: Some("other".into()),
            region: Some("us-east-2".into()),
            ..Default::default()
        };
        let (s, r) = Signer::names(&cfg, &up).unwrap();
        assert_eq!((s.as_str(), r.as_deref()), ("other", Some("us-east-2")));
        let local: http::Uri = "http://127.0.0.1:9000/mcp".parse().unwrap();
        assert!(!signing_enabled(&SigningConfig::default(), &local));
        assert!(signing_enabled(&SigningConfig::default(), &up));
        let on = SigningConfig {
            enabled: Some(true),
            ..Default::default()
        };
        assert!(signing_enabled(&on, &local));
        let off = SigningConfig {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(!signing_enabled(&off, &up));
    }

    /// aws-signing-test-suite `get-vanilla`.
    #[test]
    fn matches_the_aws_get_vanilla_vector() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let mut p = parts("GET", "https://example.amazonaws.com/", &[]);
        sign_request(
            &mut p,
            b"",
            &creds,
            "service",
            "us-east-1",
            vector_time(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            auth(&p),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(p.headers["x-amz-date"], "20150830T123600Z");
        assert!(p.headers.get("x-amz-security-token").is_none());
    }

    /// aws-signing-test-suite `get-vanilla-with-session-token`.
    #[test]
    fn matches_the_aws_session_token_vector() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let creds = Credentials::new(AKID, SECRET, Some(token.into()), None, "test");
        let mut p = parts("GET", "https://example.amazonaws.com:443/", &[]);
        sign_request(
            &mut p,
            b"",
            &creds,
            "service",
            "us-east-1",
            vector_time(),
            &Default::default(),
        )
        .unwrap();
        assert!(auth(&p).ends_with(
            "SignedHeaders=host;x-amz-date;x-amz-security-token, \
             Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
        ));
        assert_eq!(p.headers["x-amz-security-token"], token);
        assert!(p.headers["x-amz-security-token"].is_sensitive());
        assert!(p.headers["authorization"].is_sensitive());
        // The explicit default port is dropped, as hyper would drop it from Host.
        assert_eq!(p.uri.to_string(), "https://example.amazonaws.com/");
    }

    /// aws-signing-test-suite `post-vanilla`, with a caller's Authorization, hop-by-hop
    /// headers and a user-agent that must not change the signature.
    #[test]
    fn post_vanilla_ignores_hop_by_hop_user_agent_and_client_authorization() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let mut p = parts(
            "POST",
            "https://example.amazonaws.com/",
            &[
                ("authorization", "Bearer client-token"),
                ("connection", "keep-alive, x-drop-me"),
                ("x-drop-me", "1"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("te", "trailers"),
                ("trailer", "x-t"),
                ("upgrade", "h2c"),
                ("proxy-authorization", "Basic abc"),
                ("host", "gateway.local:8080"),
                ("x-amz-security-token", "stale"),
                ("user-agent", "test-agent/1.0"),
            ],
        );
        sign_request(
            &mut p,
            b"",
            &creds,
            "service",
            "us-east-1",
            vector_time(),
            &Default::default(),
        )
        .unwrap();
        assert!(auth(&p).ends_with(
            "SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ));
        for gone in [
            "connection",
            "x-drop-me",
            "keep-alive",
            "transfer-encoding",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "host",
            "x-amz-security-token",
        ] {
            assert!(p.headers.get(gone).is_none(), "{gone} was kept");
        }
        assert!(!auth(&p).contains("client-token"));
        assert_eq!(p.headers["user-agent"], "test-agent/1.0");
    }

    #[test]
    fn mcp_headers_and_body_are_signed() {
        let creds = Credentials::new(AKID, SECRET, Some("tok".into()), None, "test");
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-session-id", "abc"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "list_k8s_resources"),
            ("mcp-param-cluster_name", "dev"),
        ];
        let sign = |body: &[u8]| {
            let mut p = parts("POST", "https://eks-mcp.us-west-2.api.aws/mcp", &headers);
            sign_request(
                &mut p,
                body,
                &creds,
                "eks-mcp",
                "us-west-2",
                vector_time(),
                &Default::default(),
            )
            .unwrap();
            auth(&p).to_string()
        };
        let a = sign(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(
            a.contains(
                "SignedHeaders=accept;content-type;host;mcp-method;mcp-name;mcp-param-cluster_name;\
             mcp-protocol-version;mcp-session-id;x-amz-date;x-amz-security-token"
            ),
            "{a}"
        );
        assert!(a.contains("Credential=AKIDEXAMPLE/20150830/us-west-2/eks-mcp/aws4_request"));
        // The body is covered: one byte changes the signature; the same input does not.
        assert_ne!(
            a,
            sign(br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#)
        );
        assert_eq!(
            a,
            sign(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        );
    }

    #[test]
    fn non_default_port_is_part_of_the_signed_host() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let mut a = parts("GET", "http://127.0.0.1:8080/mcp", &[]);
        let mut b = parts("GET", "http://127.0.0.1:8081/mcp", &[]);
        for p in [&mut a, &mut b] {
            sign_request(
                p,
                b"",
                &creds,
                "eks-mcp",
                "us-west-2",
                vector_time(),
                &Default::default(),
            )
            .unwrap();
        }
        assert_ne!(auth(&a), auth(&b));
        assert_eq!(a.uri.to_string(), "http://127.0.0.1:8080/mcp");
    }

    #[test]
    fn non_ascii_header_values_are_refused_with_the_header_name() {
        let creds = Credentials::new(AKID, SECRET, None, None, "test");
        let mut p = parts("POST", "https://h.example/mcp", &[]);
        p.headers
            .insert("mcp-name", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let e = sign_request(
            &mut p,
            b"",
            &creds,
            "s",
            "us-east-1",
            vector_time(),
            &Default::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("mcp-name"), "{e}");
    }

    #[test]
    fn classifies_aws_auth_failures_with_a_hint() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-amzn-errortype",
            "InvalidSignatureException:http://internal.amazon.com/"
                .parse()
                .unwrap(),
        );
        let m = classify_upstream_auth_failure(403, &h, b"{}").unwrap();
        assert!(
            m.contains("InvalidSignatureException") && m.contains("clock"),
            "{m}"
        );
        assert!(m.starts_with("upstream rejected the request signature"));
        let body = br#"{"__type":"com.amazon.coral.service#ExpiredTokenException","message":"The security token included in the request is expired"}"#;
        let m = classify_upstream_auth_failure(403, &http::HeaderMap::new(), body).unwrap();
        assert!(m.contains("ExpiredTokenException"), "{m}");
        assert!(classify_upstream_auth_failure(200, &h, b"").is_none());
        assert!(
            classify_upstream_auth_failure(403, &http::HeaderMap::new(), b"forbidden").is_none()
        );
    }
}
