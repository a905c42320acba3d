//! authenticate: who is calling. Turns the inbound HTTP request into a `Principal`.
//!
//! Three modes, chosen in `auth.mode`:
//! - `jwt`: OAuth/OIDC bearer tokens (also Kubernetes service-account tokens through the
//!   cluster's OIDC issuer), verified against the issuer's JWKS. Only RS256 and ES256 are
//!   accepted; `iss`, `aud`, `exp` and `nbf` are checked. The JWKS is fetched from the OIDC
//!   discovery document (or `jwks_url`), cached, refetched periodically and when a token names
//!   an unknown `kid` (rate limited).
//! - `api_key`: keys stored as SHA-256 hashes in a file that reloads when it changes.
//! - `static`: one fixed principal, for a sidecar that only listens on localhost.
//!
//! Owns caller credentials (bearer tokens, API keys). It must never let a caller token
//! leave this module: nothing here is logged, audited or forwarded upstream, and no type here
//! prints a token through `Debug` or `Display`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, JwtAuthConfig, is_loopback_host};

/// How the principal was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    Jwt,
    ApiKey,
    Static,
}

/// The caller, as the policy sees it (`input.principal`).
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    pub id: String,
    pub groups: Vec<String>,
    pub auth: AuthKind,
    /// Non-secret claims (JWT claims minus anything token-like).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Why a caller was not authenticated. Messages are safe to show the caller and to log:
/// they never contain the credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the bearer token is not valid: {0}")]
    InvalidToken(String),
    #[error("the bearer token has expired")]
    Expired,
    #[error("the API key is not known to this gateway")]
    UnknownKey,
    #[error("the token issuer's signing keys (JWKS) are unavailable: {0}")]
    JwksUnavailable(String),
    #[error("authentication configuration: {0}")]
    Config(String),
}

impl AuthError {
    /// HTTP status for this failure: 401, or 503 when the gateway cannot check tokens at all.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::JwksUnavailable(_) | AuthError::Config(_) => 503,
            _ => 401,
        }
    }

    /// Low-cardinality label for `auth_failures_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::InvalidToken(_) => "invalid",
            AuthError::Expired => "expired",
            AuthError::UnknownKey => "unknown_key",
            AuthError::JwksUnavailable(_) => "jwks_unavailable",
            AuthError::Config(_) => "config",
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 §3, RFC 9728 §5.1) pointing at the
    /// protected-resource metadata at `metadata_url`.
    pub fn www_authenticate(&self, metadata_url: &str) -> String {
        self.challenge(Some(metadata_url))
    }

    /// The `WWW-Authenticate` value, with `resource_metadata` only when there is metadata
    /// to point at (JWT mode; see [`Authenticator::challenge`]).
    fn challenge(&self, metadata_url: Option<&str>) -> String {
        let mut v = match metadata_url {
            Some(url) => format!("Bearer resource_metadata=\"{}\"", quote_escape(url)),
            None => "Bearer realm=\"eks-mcp-gateway\"".to_owned(),
        };
        match self {
            AuthError::Missing | AuthError::JwksUnavailable(_) | AuthError::Config(_) => {}
            _ => {
                v.push_str(", error=\"invalid_token\", error_description=\"");
                v.push_str(&quote_escape(&self.to_string()));
                v.push('"');
            }
        }
        v
    }
}

/// Make `s` safe inside a quoted-string of an auth header (RFC 9110 §5.6.4): no quotes,
/// backslashes or control characters.
fn quote_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' || c == '\\' { '\'' } else { c })
        .collect()
}

/// Authenticates callers according to `auth` in the config. Cheap to share behind an `Arc`.
pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    Static(Principal),
    Jwt(Arc<JwtVerifier>),
    ApiKey(Arc<ApiKeys>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Static(_) => "static",
            Mode::Jwt(_) => "jwt",
            Mode::ApiKey(_) => "api_key",
        };
        f.debug_struct("Authenticator")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Build the authenticator. For `jwt` this fetches the JWKS once; if the issuer is not
    /// reachable yet, the gateway still starts, refuses tokens with 503 and fetches again on
    /// the next token ([`Authenticator::readiness`] says so). For `api_key` the key file must load.
    pub async fn from_config(cfg: &AuthConfig) -> Result<Authenticator, AuthError> {
        let mode = match cfg {
            AuthConfig::Static { principal, groups } => Mode::Static(Principal {
                id: principal.clone(),
                groups: groups.clone(),
                auth: AuthKind::Static,
                claims: Map::new(),
            }),
            AuthConfig::Jwt(jwt) => {
                let verifier = Arc::new(JwtVerifier::new(jwt)?);
                if let Err(e) = verifier.refresh(true).await {
                    tracing::warn!(issuer = %jwt.issuer, error = %e, "cannot fetch the JWKS yet; will retry");
                }
                JwtVerifier::spawn_refresher(&verifier);
                Mode::Jwt(verifier)
            }
            AuthConfig::ApiKey { file } => {
                let keys = Arc::new(ApiKeys::load(file)?);
                ApiKeys::spawn_watcher(&keys, Duration::from_secs(1));
                Mode::ApiKey(keys)
            }
        };
        Ok(Authenticator { mode })
    }

    /// Who is calling, from the request headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        match &self.mode {
            Mode::Static(p) => Ok(p.clone()),
            Mode::Jwt(v) => {
                let token = bearer_token(headers)?.ok_or(AuthError::Missing)?;
                v.verify(token).await
            }
            Mode::ApiKey(keys) => {
                let key = match headers.get("x-api-key") {
                    Some(v) => Some(v.to_str().map_err(|_| AuthError::UnknownKey)?.trim()),
                    None => bearer_token(headers)?,
                };
                let key = key.filter(|k| !k.is_empty()).ok_or(AuthError::Missing)?;
                keys.lookup(key)
            }
        }
    }

    /// The `WWW-Authenticate` value for `err`: in JWT mode it points at the RFC 9728
    /// metadata at `metadata_url`; API-key mode has no authorization server, so it names a
    /// realm instead of pointing at a document that does not exist.
    pub fn challenge(&self, err: &AuthError, metadata_url: &str) -> String {
        match self.mode {
            Mode::Jwt(_) => err.challenge(Some(metadata_url)),
            _ => err.challenge(None),
        }
    }

    /// Whether callers can be authenticated now, with a one-line detail for `/readyz`. JWT
    /// mode is ready once the issuer's signing keys are loaded.
    pub fn readiness(&self) -> (bool, String) {
        match &self.mode {
            Mode::Static(p) => (true, format!("static principal {}", p.id)),
            Mode::ApiKey(k) => (
                true,
                format!("{} API keys from {}", k.keys.load().len(), k.path.display()),
            ),
            Mode::Jwt(v) => {
                let keys = v.keys.load();
                if keys.is_empty() {
                    let why = v.last_error.lock().ok().and_then(|e| e.clone());
                    (
                        false,
                        why.unwrap_or_else(|| "the issuer's JWKS is not loaded yet".into()),
                    )
                } else {
                    let n = keys.by_kid.len() + keys.anonymous.len();
                    (true, format!("{n} signing keys from {}", v.cfg.issuer))
                }
            }
        }
    }

    /// The RFC 9728 protected-resource metadata document, for JWT mode (the only mode with an
    /// authorization server). `resource_url` is the public URL of the MCP endpoint as the
    /// client reached it; `auth.resource` overrides it.
    pub fn protected_resource_metadata(&self, resource_url: &str) -> Option<Value> {
        let Mode::Jwt(v) = &self.mode else {
            return None;
        };
        let cfg = &v.cfg;
        let servers = if cfg.authorization_servers.is_empty() {
            vec![cfg.issuer.clone()]
        } else {
            cfg.authorization_servers.clone()
        };
        Some(serde_json::json!({
            "resource": cfg.resource.clone().unwrap_or_else(|| resource_url.to_owned()),
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
            "resource_signing_alg_values_supported": ["RS256", "ES256"],
            "resource_name": "eks-mcp-gateway",
        }))
    }
}

/// The token of an `Authorization: Bearer` header, if there is one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| AuthError::InvalidToken("the Authorization header is not ASCII".into()))?;
    let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::InvalidToken(
            "only the Bearer scheme is accepted in the Authorization header".into(),
        ));
    }
    Ok(Some(rest.trim()))
}

// ---------------------------------------------------------------------------------------
// JWT

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

const JWKS_MAX_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Claims that are session-binding values rather than facts about the caller.
const WITHHELD_CLAIMS: &[&str] = &["at_hash", "c_hash", "nonce", "sid"];

struct VerificationKey {
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerificationKey>>,
    /// Keys published without a `kid`.
    anonymous: Vec<Arc<VerificationKey>>,
}

struct JwtVerifier {
    cfg: JwtAuthConfig,
    client: HttpsClient,
    keys: ArcSwap<KeySet>,
    /// Serialises refetches and remembers when the last one happened.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Why the last fetch failed, for readiness.
    last_error: std::sync::Mutex<Option<String>>,
}

impl JwtVerifier {
    fn new(cfg: &JwtAuthConfig) -> Result<Self, AuthError> {
        check_fetch_url("auth.issuer", &cfg.issuer)?;
        if let Some(url) = &cfg.jwks_url {
            check_fetch_url("auth.jwks_url", url)?;
        }
        if cfg.audience.trim().is_empty() {
            return Err(AuthError::Config(
                "auth.audience is empty. Fix: set it to the audience your tokens carry (this \
                 gateway's resource URL or client id)"
                    .into(),
            ));
        }
        Ok(JwtVerifier {
            cfg: cfg.clone(),
            client: https_client(cfg.ca_file.as_deref())?,
            keys: ArcSwap::from_pointee(KeySet::default()),
            refresh: tokio::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// Refetch the JWKS every `jwks_refresh_interval` while the authenticator lives.
    fn spawn_refresher(this: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(this);
        let every = this.cfg.jwks_refresh_interval.max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(v) = weak.upgrade() else { return };
                if let Err(e) = v.refresh(true).await {
                    tracing::warn!(issuer = %v.cfg.issuer, error = %e, "JWKS refresh failed; keeping the previous keys");
                }
            }
        });
    }

    /// Fetch the JWKS and replace the cached keys. Unless `force`, skip when the last fetch
    /// is younger than `jwks_min_refresh_interval` (unknown-`kid` refetches are rate limited).
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let result = self.refresh_inner(force).await;
        if let Ok(mut last) = self.last_error.lock() {
            match &result {
                Ok(true) => *last = None,
                Ok(false) => {}
                Err(e) => *last = Some(e.to_string()),
            }
        }
        result.map(|_| ())
    }

    /// `Ok(false)` when the fetch was skipped by the rate limit.
    async fn refresh_inner(&self, force: bool) -> Result<bool, AuthError> {
        let mut last = self.refresh.lock().await;
        if !force
            && let Some(t) = *last
            && t.elapsed() < self.cfg.jwks_min_refresh_interval
        {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let jwks_url = match &self.cfg.jwks_url {
            Some(u) => u.clone(),
            None => self.discover_jwks_url().await?,
        };
        let doc = self.fetch_json(&jwks_url).await?;
        let set =
            parse_jwks(&doc).map_err(|e| AuthError::JwksUnavailable(format!("{jwks_url}: {e}")))?;
        tracing::debug!(keys = set.by_kid.len() + set.anonymous.len(), "JWKS loaded");
        self.keys.store(Arc::new(set));
        Ok(true)
    }

    async fn discover_jwks_url(&self) -> Result<String, AuthError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.cfg.issuer.trim_end_matches('/')
        );
        let doc = self.fetch_json(&url).await?;
        let issuer = doc
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if issuer.trim_end_matches('/') != self.cfg.issuer.trim_end_matches('/') {
            return Err(AuthError::JwksUnavailable(format!(
                "{url} names issuer {issuer:?}, not the configured auth.issuer {:?}",
                self.cfg.issuer
            )));
        }
        let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| {
            AuthError::JwksUnavailable(format!(
                "{url} has no jwks_uri; set auth.jwks_url explicitly"
            ))
        })?;
        check_fetch_url("jwks_uri in the discovery document", jwks)
            .map_err(|e| AuthError::JwksUnavailable(e.to_string()))?;
        Ok(jwks.to_owned())
    }

    async fn fetch_json(&self, url: &str) -> Result<Value, AuthError> {
        let unavailable = |what: String| AuthError::JwksUnavailable(format!("{url}: {what}"));
        let uri: Uri = url
            .parse()
            .map_err(|e| unavailable(format!("not a URL ({e})")))?;
        let req = Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| unavailable(e.to_string()))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| unavailable(with_causes(&e)))?;
            if !resp.status().is_success() {
                return Err(unavailable(format!("HTTP {}", resp.status())));
            }
            let body = Limited::new(resp.into_body(), JWKS_MAX_BYTES)
                .collect()
                .await
                .map_err(|e| unavailable(format!("reading the body: {e}")))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON ({e})")))
        };
        tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .map_err(|_| unavailable("timed out".into()))?
    }

    async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            AuthError::InvalidToken(format!("malformed JWT or unsupported algorithm ({e})"))
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::InvalidToken(format!(
                "algorithm {:?} is not accepted (RS256 or ES256 only)",
                header.alg
            )));
        }
        let mut key = self.find_key(header.kid.as_deref(), header.alg);
        if key.is_none() {
            // A key we have not seen: the issuer may have rotated. Refetch (rate limited).
            self.refresh(false).await?;
            key = self.find_key(header.kid.as_deref(), header.alg);
        }
        let Some(key) = key else {
            if self.keys.load().is_empty() {
                // Nothing to verify with: the issuer has not been reachable. Not the token's fault.
                let why = self.last_error.lock().ok().and_then(|e| e.clone());
                return Err(AuthError::JwksUnavailable(
                    why.unwrap_or_else(|| "the issuer's JWKS is not loaded yet".into()),
                ));
            }
            return Err(AuthError::InvalidToken(match header.kid {
                Some(kid) => format!(
                    "no signing key with kid {:?} in the issuer's JWKS",
                    clip(&kid)
                ),
                None => "the token names no kid and no key of its algorithm matched".into(),
            }));
        };
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.cfg.leeway.as_secs();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(jwt_error)?;
        self.principal(data.claims)
    }

    fn find_key(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerificationKey>> {
        let keys = self.keys.load();
        match kid {
            Some(kid) => keys.by_kid.get(kid).filter(|k| k.alg == alg).cloned(),
            None => {
                let mut same_alg = keys
                    .by_kid
                    .values()
                    .chain(&keys.anonymous)
                    .filter(|k| k.alg == alg);
                let first = same_alg.next()?;
                // Without a kid, only an unambiguous key is used.
                same_alg.next().is_none().then(|| first.clone())
            }
        }
    }

    fn principal(&self, mut claims: Map<String, Value>) -> Result<Principal, AuthError> {
        let id = match claims.get(&self.cfg.principal_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(AuthError::InvalidToken(format!(
                    "the token has no string claim {:?} to name the caller",
                    self.cfg.principal_claim
                )));
            }
        };
        let mut groups: Vec<String> = match claims.get(&self.cfg.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        if self.cfg.service_account_groups {
            for g in service_account_groups(&claims)? {
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        for c in WITHHELD_CLAIMS {
            claims.remove(*c);
        }
        Ok(Principal {
            id,
            groups,
            auth: AuthKind::Jwt,
            claims,
        })
    }
}

/// The groups the Kubernetes API server puts a ServiceAccount token's holder in, from the
/// token's `kubernetes.io` claim: `system:serviceaccounts` and
/// `system:serviceaccounts:<namespace>`. None for a token without that claim. A token whose
/// claim is malformed, or whose `sub` is not the service account the claim names, is refused:
/// the groups and the principal must describe the same account.
fn service_account_groups(claims: &Map<String, Value>) -> Result<Vec<String>, AuthError> {
    let Some(k8s) = claims.get("kubernetes.io") else {
        return Ok(Vec::new());
    };
    let field = |path: &[&str]| {
        path.iter()
            .try_fold(k8s, |v, key| v.get(*key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(namespace), Some(name)) = (field(&["namespace"]), field(&["serviceaccount", "name"]))
    else {
        return Err(AuthError::InvalidToken(
            "the kubernetes.io claim names no namespace and service account".into(),
        ));
    };
    let expected = format!("system:serviceaccount:{namespace}:{name}");
    if claims.get("sub").and_then(Value::as_str) != Some(expected.as_str()) {
        return Err(AuthError::InvalidToken(format!(
            "the token's sub is not {:?}, the service account its kubernetes.io claim names",
            clip(&expected)
        )));
    }
    Ok(vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
    ])
}

impl KeySet {
    fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.anonymous.is_empty()
    }
}

/// The usable signature keys of a JWKS: RSA keys for RS256 and P-256 keys for ES256. Keys of
/// other types, for encryption, or that do not parse are skipped.
fn parse_jwks(doc: &Value) -> Result<KeySet, String> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut set = KeySet::default();
    for raw in keys {
        if raw
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let kty = raw.get("kty").and_then(Value::as_str).unwrap_or_default();
        let crv = raw.get("crv").and_then(Value::as_str).unwrap_or_default();
        let alg = match (kty, crv) {
            ("RSA", _) => Algorithm::RS256,
            ("EC", "P-256") => Algorithm::ES256,
            _ => continue,
        };
        if let Some(declared) = raw.get("alg").and_then(Value::as_str)
            && declared != format!("{alg:?}")
        {
            continue;
        }
        let key = serde_json::from_value::<Jwk>(raw.clone())
            .ok()
            .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok());
        let Some(key) = key else {
            tracing::debug!(kty, "skipping a JWKS key that does not parse");
            continue;
        };
        let vk = Arc::new(VerificationKey { alg, key });
        match raw.get("kid").and_then(Value::as_str) {
            Some(kid) => {
                set.by_kid.insert(kid.to_owned(), vk);
            }
            None => set.anonymous.push(vk),
        }
    }
    if set.is_empty() {
        return Err("no RS256 or ES256 signing key in the JWKS".into());
    }
    Ok(set)
}

fn jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let what = match e.kind() {
        K::ExpiredSignature => return AuthError::Expired,
        K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        K::InvalidIssuer => "the token was issued by another issuer".to_owned(),
        K::InvalidAudience => "the token is meant for another audience".to_owned(),
        K::InvalidSignature => "the signature does not verify".to_owned(),
        K::InvalidAlgorithm => "the algorithm does not match the signing key".to_owned(),
        K::MissingRequiredClaim(c) => format!("the token lacks the {c:?} claim"),
        K::InvalidClaimFormat(c) => format!("the {c:?} claim has the wrong type"),
        _ => format!("malformed JWT ({e})"),
    };
    AuthError::InvalidToken(what)
}

/// Shorten caller-supplied text before it goes into an error.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Issuer and JWKS URLs must be HTTPS, except to loopback (tests, local issuers).
fn check_fetch_url(field: &str, url: &str) -> Result<(), AuthError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| AuthError::Config(format!("{field} {url:?} is not a URL ({e})")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(()),
        (Some("http"), Some(h)) if is_loopback_host(h) => Ok(()),
        _ => Err(AuthError::Config(format!(
            "{field} {url:?} must be an https:// URL (plain http only to localhost)"
        ))),
    }
}

/// The client that fetches discovery documents and JWKS: rustls with the public web roots,
/// plus the CA certificates of `ca_file` when the issuer uses a private CA.
fn https_client(ca_file: Option<&Path>) -> Result<HttpsClient, AuthError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let added = extra_roots(path, &mut roots)?;
        tracing::info!(ca_file = %path.display(), certificates = added, "trusting extra CA certificates for the JWT issuer");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AuthError::Config(format!("TLS setup for the JWT issuer failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// An error with its chain of causes (hyper's "client error (Connect)" alone does not say
/// that the issuer's certificate was not trusted).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Add the certificates of the PEM file `path` to `roots`; how many were added.
fn extra_roots(path: &Path, roots: &mut rustls::RootCertStore) -> Result<usize, AuthError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let problem = |what: String| {
        AuthError::Config(format!(
            "auth.ca_file {}: {what}. Fix: point it at a PEM file of CA certificates \
             (-----BEGIN CERTIFICATE----- blocks)",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| problem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(e.to_string()))?;
    if certs.is_empty() {
        return Err(problem("holds no certificate".into()));
    }
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(problem("holds no usable CA certificate".into()));
    }
    Ok(added)
}

// ---------------------------------------------------------------------------------------
// API keys

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    /// Hex SHA-256 of the key.
    sha256: String,
    principal: String,
    #[serde(default)]
    groups: Vec<String>,
}

struct StoredKey {
    hash: [u8; 32],
    principal: String,
    groups: Vec<String>,
}

/// The loaded key file, swapped whole on reload.
struct ApiKeys {
    path: PathBuf,
    keys: ArcSwap<Vec<StoredKey>>,
    /// (modified time, length) of the file last loaded or last rejected.
    stamp: std::sync::Mutex<Option<(SystemTime, u64)>>,
}

impl ApiKeys {
    fn load(path: &Path) -> Result<Self, AuthError> {
        let stamp = file_stamp(path);
        let keys = read_key_file(path)?;
        tracing::info!(path = %path.display(), keys = keys.len(), "API keys loaded");
        Ok(ApiKeys {
            path: path.to_owned(),
            keys: ArcSwap::from_pointee(keys),
            stamp: std::sync::Mutex::new(stamp),
        })
    }

    /// Poll the file and reload it when it changes. A broken file keeps the old keys.
    fn spawn_watcher(this: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(this);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(keys) = weak.upgrade() else { return };
                keys.reload_if_changed();
            }
        });
    }

    fn reload_if_changed(&self) {
        let now = file_stamp(&self.path);
        let Ok(mut stamp) = self.stamp.lock() else {
            return;
        };
        if now == *stamp {
            return;
        }
        *stamp = now;
        match read_key_file(&self.path) {
            Ok(keys) => {
                tracing::info!(path = %self.path.display(), keys = keys.len(), "API keys reloaded");
                self.keys.store(Arc::new(keys));
            }
            Err(e) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                "API key file not reloaded; keeping the previous keys"
            ),
        }
    }

    fn lookup(&self, key: &str) -> Result<Principal, AuthError> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let keys = self.keys.load();
        // Compare against every entry in constant time per entry, without an early exit.
        let mut found: Option<&StoredKey> = None;
        for k in keys.iter() {
            let diff = k
                .hash
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(k);
            }
        }
        let k = found.ok_or(AuthError::UnknownKey)?;
        Ok(Principal {
            id: k.principal.clone(),
            groups: k.groups.clone(),
            auth: AuthKind::ApiKey,
            claims: Map::new(),
        })
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn read_key_file(path: &Path) -> Result<Vec<StoredKey>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AuthError::Config(format!(
            "cannot read the API key file {}: {e}",
            path.display()
        ))
    })?;
    let file: KeyFile = serde_yaml::from_str(&text).map_err(|e| {
        AuthError::Config(format!(
            "API key file {} is not valid: {e}. Expected `keys:` with entries {{sha256, \
             principal, groups}}",
            path.display()
        ))
    })?;
    file.keys
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let bytes = hex::decode(e.sha256.trim()).ok().filter(|b| b.len() == 32);
            let Some(bytes) = bytes else {
                return Err(AuthError::Config(format!(
                    "API key file {}: keys[{i}].sha256 is not 64 hex digits. Fix: store the \
                     key's SHA-256, e.g. `printf %s \"$KEY\" | sha256sum`",
                    path.display()
                )));
            };
            if e.principal.trim().is_empty() {
                return Err(AuthError::Config(format!(
                    "API key file {}: keys[{i}].principal is empty",
                    path.display()
                )));
            }
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes);
            Ok(StoredKey {
                hash,
                principal: e.principal,
                groups: e.groups,
            })
        })
        .collect()
}

/// The hex SHA-256 of an API key, as stored in the key file.
pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_names_metadata_and_error() {
        let url = "https://gw.example/.well-known/oauth-protected-resource/mcp";
        let missing = AuthError::Missing.www_authenticate(url);
        assert_eq!(missing, format!("Bearer resource_metadata=\"{url}\""));
        let bad = AuthError::InvalidToken("x \"y\"".into()).www_authenticate(url);
        assert!(bad.contains("error=\"invalid_token\""), "{bad}");
        assert!(!bad.contains("\"y\""), "quotes must be escaped: {bad}");
        assert_eq!(AuthError::Expired.status(), 401);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_others_refused() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap(), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer_token(&h).is_err());
    }

    #[test]
    fn plain_http_issuer_only_on_loopback() {
        assert!(check_fetch_url("auth.issuer", "http://127.0.0.1:9/x").is_ok());
        assert!(check_fetch_url("auth.issuer", "https://issuer.example").is_ok());
        assert!(check_fetch_url("auth.issuer", "http://issuer.example").is_err());
    }
}
