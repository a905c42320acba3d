//! The one YAML configuration file and its loader.
//!
//! Every section is a typed struct with `deny_unknown_fields`, so a typo is an error that
//! names the key. Values are validated after parsing (`Config::validate`) with messages that
//! say which key is wrong and how to fix it. This module never touches the network or
//! credentials; it only describes what the other stages should do.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Top-level configuration (`serve --config FILE`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the MCP listener, e.g. `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Path of the MCP endpoint on the listener.
    #[serde(default = "default_mcp_path")]
    pub mcp_path: String,
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub signing: SigningConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    #[serde(default)]
    pub approval: ApprovalConfig,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal address")
}
fn default_mcp_path() -> String {
    "/mcp".to_string()
}

/// Where allowed calls go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://eks-mcp.<region>.api.aws/mcp` for the hosted server. Leave it out when
    /// `command` starts a stdio server; the loader then sets it to `stdio://<program>` (the
    /// value policies see as `input.gateway.upstream`).
    #[serde(default)]
    pub url: String,
    /// A local MCP server the gateway starts and supervises, speaking MCP over its
    /// stdin/stdout (the open-source `awslabs.eks-mcp-server`), instead of `url`.
    #[serde(default)]
    pub command: Option<CommandConfig>,
    /// Plain `http://` is refused unless the host is loopback or this is true.
    #[serde(default)]
    pub allow_plain_http: bool,
    #[serde(default = "d_connect", with = "duration_str")]
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response headers arrive.
    #[serde(default = "d_response", with = "duration_str")]
    pub response_timeout: Duration,
    /// Longest silence allowed inside a streamed response body (between SSE events). A
    /// streamed answer silent this long fails (`upstream_timeout`); a quiet GET (server)
    /// stream ends cleanly and the client reopens it.
    #[serde(default = "d_idle", with = "duration_str")]
    pub idle_timeout: Duration,
    /// Largest upstream message (one JSON body or one SSE event) the gateway will process.
    #[serde(default = "d_max_response")]
    pub max_message_bytes: usize,
    /// The AWS region the EKS MCP server operates in (`params._meta.AWS_REGION`).
    /// Defaults to the signing region. A client-supplied value is always replaced.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// Extra attempts for a call the catalogue marks as a read when the upstream is
    /// unreachable or answers 502/503/504, before anything went to the client. Writes, and
    /// every other call, are sent once.
    #[serde(default = "d_retries")]
    pub retries: u32,
    /// Wait before the first retry, doubled for each further one (with jitter).
    #[serde(default = "d_retry_backoff", with = "duration_str")]
    pub retry_backoff: Duration,
    /// Failures in a row (unreachable, timeout, 5xx) that open the circuit breaker.
    #[serde(default = "d_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker fails calls fast before one probe goes through.
    #[serde(default = "d_breaker_open_for", with = "duration_str")]
    pub breaker_open_for: Duration,
    /// Longest upstream `Retry-After` the gateway holds every caller's calls for.
    #[serde(default = "d_max_retry_after", with = "duration_str")]
    pub max_retry_after: Duration,
    /// Read the upstream's `tools/list` at start (retrying until it answers) and again after
    /// each `notifications/tools/list_changed`, so catalogue drift shows on `/readyz` and in
    /// `mcp_gateway_catalogue_drift` before any client lists tools.
    #[serde(default = "d_true")]
    pub watch_tools: bool,
}

fn d_retries() -> u32 {
    2
}
fn d_retry_backoff() -> Duration {
    Duration::from_millis(100)
}
fn d_breaker_failures() -> u32 {
    5
}
fn d_breaker_open_for() -> Duration {
    Duration::from_secs(10)
}
fn d_max_retry_after() -> Duration {
    Duration::from_secs(60)
}

// --- stdio upstream (`upstream.command`) -------------------------------------------------

/// How to start a stdio MCP server as the upstream. The child gets a small environment
/// (`PATH`, `HOME`, `LANG`, `TZ`, `TMPDIR` from the gateway), the variables listed in
/// `inherit_env`, and `env`: the gateway's own credentials do not reach it unless named.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// The program (an absolute path, or a name looked up on `PATH`).
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables set for the child (e.g. `AWS_REGION`, `AWS_PROFILE`, `FASTMCP_LOG_LEVEL`).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Names of the gateway's own environment variables passed on when set (e.g.
    /// `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE` to share an IRSA role).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Working directory of the child (default: the gateway's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Longest wait for the child's `initialize` answer before it counts as failed to start.
    #[serde(default = "d_init_timeout", with = "duration_str")]
    pub init_timeout: Duration,
    /// First restart delay after the child exits; doubled per failed start up to
    /// `restart_max_backoff`, and reset once a child has run for a minute.
    #[serde(default = "d_restart_backoff", with = "duration_str")]
    pub restart_backoff: Duration,
    #[serde(default = "d_restart_max_backoff", with = "duration_str")]
    pub restart_max_backoff: Duration,
    /// On shutdown: time the child gets after its stdin closes, and again after SIGTERM,
    /// before it is killed.
    #[serde(default = "d_stop_timeout", with = "duration_str")]
    pub stop_timeout: Duration,
    /// Lines of the child's stderr logged per second; the rest are counted and summarised.
    #[serde(default = "d_stderr_lines")]
    pub stderr_lines_per_second: u32,
}

fn d_init_timeout() -> Duration {
    Duration::from_secs(30)
}
fn d_restart_backoff() -> Duration {
    Duration::from_millis(250)
}
fn d_restart_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn d_stop_timeout() -> Duration {
    Duration::from_secs(5)
}
fn d_stderr_lines() -> u32 {
    200
}

impl UpstreamConfig {
    /// True when the upstream is a supervised stdio child (`upstream.command`).
    pub fn is_stdio(&self) -> bool {
        self.command.is_some()
    }
}

fn d_connect() -> Duration {
    Duration::from_secs(5)
}
fn d_response() -> Duration {
    Duration::from_secs(120)
}
fn d_idle() -> Duration {
    Duration::from_secs(300)
}
fn d_max_response() -> usize {
    32 * 1024 * 1024
}

/// Protection of the front listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body; larger gets HTTP 413.
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    #[serde(default = "d_header_timeout", with = "duration_str")]
    pub header_read_timeout: Duration,
    /// Time allowed for a request body once its headers are in, before `body_min_rate`
    /// extends it; counted separately from `header_read_timeout`.
    #[serde(default = "d_body_timeout", with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Bytes per second a body must keep up: each byte received extends the body deadline by
    /// `1 / body_min_rate` seconds. A body that falls behind gets HTTP 408.
    #[serde(default = "d_body_min_rate")]
    pub body_min_rate: u64,
    /// Requests in flight at once from one client address; beyond this it gets HTTP 503,
    /// so that one source cannot hold every slot of `max_concurrent_requests`.
    #[serde(default = "d_per_source")]
    pub max_requests_per_source: usize,
    /// Requests in flight at once (each holds its slot until its response or the streamed
    /// answer to a POST ends; an established GET stream counts against `max_sse_streams`
    /// instead);
    /// beyond this a request waits its caller's turn (`max_queued_per_caller`), and the
    /// front sheds at once (HTTP 503) anything beyond `max_concurrent_requests +
    /// max_queued_requests` not yet answered.
    #[serde(default = "d_concurrent")]
    pub max_concurrent_requests: usize,
    /// Open GET streams at once; beyond it a GET gets HTTP 503 before authentication.
    #[serde(default = "d_streams")]
    pub max_sse_streams: usize,
    /// How long SIGTERM waits for in-flight work before closing connections.
    #[serde(default = "d_grace", with = "duration_str")]
    pub shutdown_grace: Duration,
    /// Deepest nesting of flow collections (`[…]`, `{…}`) in a manifest argument.
    #[serde(default = "d_manifest_depth")]
    pub max_manifest_depth: usize,
    /// Most YAML documents in one manifest argument.
    #[serde(default = "d_manifest_documents")]
    pub max_manifest_documents: usize,
    /// Most YAML values in one manifest argument, aliases expanded.
    #[serde(default = "d_manifest_values")]
    pub max_manifest_values: usize,
    /// Most Kubernetes objects one call may name (documents and `List` items).
    #[serde(default = "d_manifest_objects")]
    pub max_manifest_objects: usize,
    /// After SIGTERM, how long new requests are still accepted and served while `/readyz`
    /// already answers 503, so load balancers (a Kubernetes Service's endpoints) stop sending
    /// traffic before the listener closes. Then `shutdown_grace` applies.
    #[serde(default, with = "duration_str")]
    pub shutdown_delay: Duration,
    /// Requests of one caller that may wait for a slot when `max_concurrent_requests` are in
    /// flight (callers are served in turn); beyond it the caller gets HTTP 503 at once.
    #[serde(default = "d_queued_per_caller")]
    pub max_queued_per_caller: usize,
    /// Requests of all callers that may wait for a slot; beyond it HTTP 503 at once.
    #[serde(default = "d_queued")]
    pub max_queued_requests: usize,
    /// Longest wait for a slot; then HTTP 503.
    #[serde(default = "d_queue_timeout", with = "duration_str")]
    pub queue_timeout: Duration,
    /// Most callers (principals) whose per-caller limits this replica remembers at once;
    /// beyond it the least recently seen callers with nothing in flight are forgotten.
    #[serde(default = "d_max_callers")]
    pub max_callers: usize,
    /// A caller with nothing in flight for this long is forgotten (its buckets start full
    /// again); keep it above the longest `burst / rate` of the policy data's limits.
    #[serde(default = "d_caller_idle", with = "duration_str")]
    pub caller_idle_timeout: Duration,
    /// Request bodies, response payloads and SSE event data at least this large are
    /// classified, decided and redacted on the blocking thread pool, not on an async worker,
    /// so one caller's large input cannot stall another caller's call.
    #[serde(default = "d_offload_bytes")]
    pub inspect_offload_bytes: usize,
    /// Deadline for that work, waiting for a slot included. Past it the call is denied
    /// (`facts.unparseable`, the reason names this key) or the response withheld: fail closed.
    #[serde(default = "d_inspect_timeout", with = "duration_str")]
    pub inspect_timeout: Duration,
    /// Large inspections running at once; 0 means one per CPU.
    #[serde(default)]
    pub max_concurrent_inspections: usize,
}

impl LimitsConfig {
    /// The bounds a manifest argument must fit before it is parsed.
    pub fn manifest(&self) -> crate::manifest::ManifestLimits {
        crate::manifest::ManifestLimits {
            max_depth: self.max_manifest_depth,
            max_documents: self.max_manifest_documents,
            max_values: self.max_manifest_values,
            max_objects: self.max_manifest_objects,
        }
    }
}

fn d_body() -> usize {
    4 * 1024 * 1024
}
fn d_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_body_min_rate() -> u64 {
    16 * 1024
}
fn d_per_source() -> usize {
    128
}
fn d_concurrent() -> usize {
    1024
}
fn d_streams() -> usize {
    256
}
fn d_queued_per_caller() -> usize {
    16
}
fn d_queued() -> usize {
    1024
}
fn d_queue_timeout() -> Duration {
    Duration::from_secs(30)
}
fn d_max_callers() -> usize {
    10_000
}
fn d_caller_idle() -> Duration {
    Duration::from_secs(600)
}
fn d_offload_bytes() -> usize {
    64 * 1024
}
fn d_inspect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_grace() -> Duration {
    Duration::from_secs(20)
}
fn d_manifest_depth() -> usize {
    crate::manifest::ManifestLimits::default().max_depth
}
fn d_manifest_documents() -> usize {
    crate::manifest::ManifestLimits::default().max_documents
}
fn d_manifest_values() -> usize {
    crate::manifest::ManifestLimits::default().max_values
}
fn d_manifest_objects() -> usize {
    crate::manifest::ManifestLimits::default().max_objects
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: d_body(),
            header_read_timeout: d_header_timeout(),
            body_read_timeout: d_body_timeout(),
            body_min_rate: d_body_min_rate(),
            max_requests_per_source: d_per_source(),
            max_concurrent_requests: d_concurrent(),
            max_sse_streams: d_streams(),
            shutdown_grace: d_grace(),
            max_manifest_depth: d_manifest_depth(),
            max_manifest_documents: d_manifest_documents(),
            max_manifest_values: d_manifest_values(),
            max_manifest_objects: d_manifest_objects(),
            shutdown_delay: Duration::ZERO,
            max_queued_per_caller: d_queued_per_caller(),
            max_queued_requests: d_queued(),
            queue_timeout: d_queue_timeout(),
            max_callers: d_max_callers(),
            caller_idle_timeout: d_caller_idle(),
            inspect_offload_bytes: d_offload_bytes(),
            inspect_timeout: d_inspect_timeout(),
            max_concurrent_inspections: 0,
        }
    }
}

/// DNS-rebinding protection: which `Origin` and `Host` values are accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct SecurityConfig {
    /// Exact origins (`scheme://host[:port]`). A request with an `Origin` not listed gets 403.
    /// Requests without `Origin` (non-browser clients) are accepted.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Accepted `Host` header values (host or host:port). Empty means loopback names only
    /// when listening on loopback, and any host otherwise.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// Policy mode: block denied calls, or only record what would have been denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Enforce,
    DryRun,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Directory with `*.rego`, data (`*.yaml`/`*.json`) and the tool catalogue.
    #[serde(default = "d_policy_dir")]
    pub dir: PathBuf,
    #[serde(default)]
    pub mode: PolicyMode,
    /// The rule that yields the decision object.
    #[serde(default = "d_entrypoint")]
    pub entrypoint: String,
    /// Watch `dir` and swap in changed policies atomically.
    #[serde(default = "d_true")]
    pub hot_reload: bool,
    /// Longest a single evaluation may run before it fails closed.
    #[serde(default = "d_eval_limit", with = "duration_str")]
    pub eval_timeout: Duration,
}

fn d_policy_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn d_entrypoint() -> String {
    "data.eks_mcp.gateway.decision".to_string()
}
fn d_true() -> bool {
    true
}
fn d_eval_limit() -> Duration {
    Duration::from_millis(250)
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: d_policy_dir(),
            mode: PolicyMode::Enforce,
            entrypoint: d_entrypoint(),
            hot_reload: true,
            eval_timeout: d_eval_limit(),
        }
    }
}

/// SigV4 signing of upstream requests.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Sign upstream requests. Defaults to true for `https://` upstreams.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// SigV4 service name; derived from `eks-mcp.<region>.api.aws` when omitted.
    #[serde(default)]
    pub service: Option<String>,
    /// SigV4 region; derived from the upstream host when omitted, else `AWS_REGION`.
    #[serde(default)]
    pub region: Option<String>,
    /// Shared-config profile to take credentials from (else `AWS_PROFILE`, else default chain).
    #[serde(default)]
    pub profile: Option<String>,
    /// Per-caller role sessions through STS AssumeRole.
    #[serde(default)]
    pub assume_role: Option<AssumeRoleConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRoleConfig {
    /// Role assumed for every caller unless the decision names another.
    pub role_arn: String,
    /// Roles the decision may pick by name (e.g. `read_only`, `privileged`).
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, String>,
    #[serde(default = "d_session", with = "duration_str")]
    pub session_duration: Duration,
    /// Add `principal` and `groups` session tags.
    #[serde(default = "d_true")]
    pub session_tags: bool,
    /// STS endpoint override (tests, VPC endpoints).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
}

fn d_session() -> Duration {
    Duration::from_secs(3600)
}

/// How callers authenticate to the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "mode", rename_all = "snake_case")]
pub enum AuthConfig {
    /// Every caller is this principal (a localhost sidecar next to one agent).
    Static {
        #[serde(default = "d_static_id")]
        principal: String,
        #[serde(default)]
        groups: Vec<String>,
    },
    /// OIDC JWT bearer tokens.
    Jwt(JwtAuthConfig),
    /// API keys from a file of hashed keys.
    ApiKey { file: PathBuf },
}

fn d_static_id() -> String {
    "local-agent".to_string()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig::Static {
            principal: d_static_id(),
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    pub issuer: String,
    pub audience: String,
    /// JWKS URL; defaults to the issuer's OIDC discovery document.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Claim holding group names.
    #[serde(default = "d_groups_claim")]
    pub groups_claim: String,
    /// Claim naming the principal.
    #[serde(default = "d_sub")]
    pub principal_claim: String,
    /// Authorization servers advertised in protected-resource metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Public URL of this gateway's MCP endpoint (the RFC 9728 `resource`).
    #[serde(default)]
    pub resource: Option<String>,
    /// How often the JWKS is refetched even when every `kid` is known.
    #[serde(default = "d_jwks_refresh", with = "duration_str")]
    pub jwks_refresh_interval: Duration,
    /// Least time between refetches triggered by a token with an unknown `kid` (a caller
    /// cannot make the gateway hammer the issuer).
    #[serde(default = "d_jwks_min_refresh", with = "duration_str")]
    pub jwks_min_refresh_interval: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "d_jwt_leeway", with = "duration_str")]
    pub leeway: Duration,
    /// PEM file of CA certificates trusted, on top of the public web roots, for fetching
    /// the issuer's discovery document and JWKS: an identity provider behind a private CA
    /// (an internal Keycloak or Dex, or a cluster's own service-account issuer with the CA at
    /// /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Kubernetes ServiceAccount tokens: when a token carries the `kubernetes.io` claim
    /// (namespace and service account), add the groups the Kubernetes API server gives such
    /// a token, `system:serviceaccounts` and `system:serviceaccounts:<namespace>`, after
    /// checking that `sub` is `system:serviceaccount:<namespace>:<name>`.
    #[serde(default)]
    pub service_account_groups: bool,
}

fn d_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}
fn d_jwks_min_refresh() -> Duration {
    Duration::from_secs(10)
}
fn d_jwt_leeway() -> Duration {
    Duration::from_secs(30)
}

fn d_groups_claim() -> String {
    "groups".to_string()
}
fn d_sub() -> String {
    "sub".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, `none`, or a file path.
    #[serde(default = "d_audit_sink")]
    pub sink: String,
    /// Rotate the file when it grows past this size.
    #[serde(default = "d_rotate")]
    pub rotate_bytes: u64,
    /// Rotated files kept.
    #[serde(default = "d_keep")]
    pub keep_files: usize,
    /// Bounded queue between requests and the writer.
    #[serde(default = "d_queue")]
    pub queue_size: usize,
    /// When the sink fails or the queue is full: `block` (wait) or `fail_closed` (deny).
    #[serde(default)]
    pub on_failure: AuditFailure,
}

/// Human confirmation (`decision.confirm`): how approvals are sealed and how long they last.
/// Holds where the keys are, never the keys themselves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// File with the sealing keys, one per line (base64 or hex of 32 bytes): the first seals
    /// and opens, a second one only opens (key rollover). Unset: the environment variable
    /// `EKS_MCP_GATEWAY_APPROVAL_KEYS` (same format, lines or commas), else a random key
    /// for this process only.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How long a stateless-era approval (`requestState`) stays valid.
    #[serde(default = "d_approval_ttl", with = "duration_str")]
    pub ttl: Duration,
    /// Session era: how long the gateway waits for the answer to `elicitation/create`.
    #[serde(default = "d_answer_timeout", with = "duration_str")]
    pub answer_timeout: Duration,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            key_file: None,
            ttl: d_approval_ttl(),
            answer_timeout: d_answer_timeout(),
        }
    }
}

fn d_approval_ttl() -> Duration {
    Duration::from_secs(300)
}
fn d_answer_timeout() -> Duration {
    Duration::from_secs(120)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuditFailure {
    #[default]
    Block,
    FailClosed,
}

fn d_audit_sink() -> String {
    "stdout".to_string()
}
fn d_rotate() -> u64 {
    100 * 1024 * 1024
}
fn d_keep() -> usize {
    5
}
fn d_queue() -> usize {
    4096
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: d_audit_sink(),
            rotate_bytes: d_rotate(),
            keep_files: d_keep(),
            queue_size: d_queue(),
            on_failure: AuditFailure::Block,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Separate listener for `/metrics`, `/healthz`, `/readyz`. Omit to serve them on the
    /// MCP listener.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// OTLP/HTTP endpoint, e.g. `http://127.0.0.1:4318`. Off when omitted.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default = "d_service_name")]
    pub service_name: String,
    /// Log format on stderr: `text` or `json`.
    #[serde(default = "d_log_format")]
    pub log_format: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: d_service_name(),
            log_format: d_log_format(),
        }
    }
}

impl TracingConfig {
    /// Fill what the config file leaves unset from the standard OpenTelemetry environment
    /// variables, the way the OpenTelemetry Operator and most platforms configure a pod's
    /// exporter. The file wins where it sets a value; `OTEL_SDK_DISABLED=true` turns export
    /// off either way.
    ///
    /// - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the traces URL, used as it is;
    /// - `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL, `/v1/traces` appended;
    /// - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: only
    ///   `http/protobuf` is supported, anything else is an error rather than silently
    ///   exporting nowhere (a gRPC endpoint does not speak OTLP/HTTP);
    /// - `OTEL_SERVICE_NAME`: the service name, when the file keeps the default.
    pub fn apply_otel_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.otlp_endpoint = None;
            return Ok(());
        }
        if self.otlp_endpoint.is_none() {
            self.otlp_endpoint = match (
                var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            ) {
                (Some(traces), _) => Some(traces),
                (None, Some(base)) => Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
                (None, None) => None,
            };
            if self.otlp_endpoint.is_some() {
                for name in [
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ] {
                    if let Some(protocol) = var(name)
                        && protocol != "http/protobuf"
                    {
                        return Err(ConfigError::Env {
                            var: name.to_string(),
                            problem: format!(
                                "is {protocol:?}, but the gateway exports traces over OTLP/HTTP with protobuf only"
                            ),
                            fix: format!(
                                "set {name}=http/protobuf and point the endpoint at the collector's OTLP/HTTP port (usually 4318), or set tracing.otlp_endpoint in the config file"
                            ),
                        });
                    }
                    if var(name).is_some() {
                        // The traces-specific setting decides when present.
                        break;
                    }
                }
            }
        }
        if self.service_name == d_service_name()
            && let Some(name) = var("OTEL_SERVICE_NAME")
        {
            self.service_name = name;
        }
        Ok(())
    }
}

fn d_service_name() -> String {
    "eks-mcp-gateway".to_string()
}
fn d_log_format() -> String {
    "text".to_string()
}

/// A configuration problem, phrased for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}` {problem}. Fix: {fix}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
        fix: String,
    },
    #[error("environment variable {var} {problem}. Fix: {fix}")]
    Env {
        var: String,
        problem: String,
        fix: String,
    },
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::from_yaml_str(&text, path)?;
        cfg.tracing
            .apply_otel_env(|name| std::env::var(name).ok())?;
        // Relative policy directories are relative to the config file.
        if cfg.policy.dir.is_relative()
            && let Some(parent) = path.parent()
        {
            let candidate = parent.join(&cfg.policy.dir);
            if candidate.exists() {
                cfg.policy.dir = candidate;
            }
        }
        if let Some(key_file) = &cfg.approval.key_file
            && key_file.is_relative()
            && let Some(parent) = path.parent()
        {
            cfg.approval.key_file = Some(parent.join(key_file));
        }
        Ok(cfg)
    }

    /// Parse and validate YAML text; `path` is only used in messages.
    pub fn from_yaml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: explain_yaml_error(&e.to_string()),
        })?;
        cfg.validate_stdio_upstream(path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: String, fix: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem,
            fix: fix.to_string(),
        };
        let url: http::Uri = self.upstream.url.parse().map_err(|e| {
            invalid(
                "upstream.url",
                format!("is not a valid URL ({e})"),
                "use a full URL such as https://eks-mcp.us-west-2.api.aws/mcp",
            )
        })?;
        match url.scheme_str() {
            Some("https") => {}
            Some("stdio") if self.upstream.is_stdio() => {}
            Some("http") => {
                let host = url.host().unwrap_or_default();
                if !is_loopback_host(host) && !self.upstream.allow_plain_http {
                    return Err(invalid(
                        "upstream.url",
                        format!("uses plain http to non-loopback host {host}"),
                        "use https, or set upstream.allow_plain_http: true for a trusted network",
                    ));
                }
            }
            _ => {
                return Err(invalid(
                    "upstream.url",
                    "has no http or https scheme".into(),
                    "start the URL with https://",
                ));
            }
        }
        if url.host().is_none() {
            return Err(invalid(
                "upstream.url",
                "has no host".into(),
                "include the host name",
            ));
        }
        for (key, value) in [
            ("approval.ttl", self.approval.ttl),
            ("approval.answer_timeout", self.approval.answer_timeout),
        ] {
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&value) {
                return Err(invalid(
                    key,
                    "must be between 1s and 1h".into(),
                    "a few minutes, e.g. 5m",
                ));
            }
        }
        if !self.mcp_path.starts_with('/') {
            return Err(invalid(
                "mcp_path",
                "must start with /".into(),
                "for example: /mcp",
            ));
        }
        if self.limits.max_body_bytes == 0 {
            return Err(invalid(
                "limits.max_body_bytes",
                "must be > 0".into(),
                "e.g. 4194304",
            ));
        }
        if self.limits.max_concurrent_requests == 0 {
            return Err(invalid(
                "limits.max_concurrent_requests",
                "must be > 0".into(),
                "e.g. 1024",
            ));
        }
        if self.limits.max_sse_streams == 0 {
            return Err(invalid(
                "limits.max_sse_streams",
                "must be > 0".into(),
                "e.g. 256",
            ));
        }
        if self.limits.body_read_timeout.is_zero() || self.limits.body_min_rate == 0 {
            return Err(invalid(
                "limits.body_read_timeout",
                "and limits.body_min_rate must be > 0".into(),
                "e.g. body_read_timeout: 10s, body_min_rate: 16384",
            ));
        }
        if self.limits.max_callers == 0 || self.limits.caller_idle_timeout.is_zero() {
            return Err(invalid(
                "limits.max_callers",
                "and limits.caller_idle_timeout must be > 0".into(),
                "e.g. max_callers: 10000, caller_idle_timeout: 10m",
            ));
        }
        if self.limits.max_requests_per_source == 0 {
            return Err(invalid(
                "limits.max_requests_per_source",
                "must be > 0".into(),
                "e.g. 128 (at most limits.max_concurrent_requests)",
            ));
        }
        let max_depth = crate::manifest::MAX_SUPPORTED_DEPTH;
        if !(1..=max_depth).contains(&self.limits.max_manifest_depth) {
            return Err(invalid(
                "limits.max_manifest_depth",
                format!("must be between 1 and {max_depth}"),
                "e.g. 100",
            ));
        }
        for (key, value, example) in [
            (
                "limits.max_manifest_documents",
                self.limits.max_manifest_documents,
                "500",
            ),
            (
                "limits.max_manifest_values",
                self.limits.max_manifest_values,
                "500000",
            ),
            (
                "limits.max_manifest_objects",
                self.limits.max_manifest_objects,
                "1000",
            ),
        ] {
            if value == 0 {
                return Err(invalid(
                    key,
                    "must be > 0".into(),
                    &format!("e.g. {example}"),
                ));
            }
        }
        for origin in &self.security.allowed_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(invalid(
                    "security.allowed_origins",
                    format!("entry {origin:?} is not an origin"),
                    "write scheme://host[:port] without a path, e.g. https://console.example.com",
                ));
            }
        }
        if !matches!(self.tracing.log_format.as_str(), "text" | "json") {
            return Err(invalid(
                "tracing.log_format",
                "must be text or json".into(),
                "text",
            ));
        }
        if self.audit.queue_size == 0 {
            return Err(invalid(
                "audit.queue_size",
                "must be > 0".into(),
                "e.g. 4096",
            ));
        }
        if let Some(region) = &self.signing.region
            && !is_region_like(region)
        {
            return Err(invalid(
                "signing.region",
                format!("{region:?} is not an AWS region name"),
                "use a region such as us-west-2",
            ));
        }
        if let Some(region) = &self.upstream.aws_region
            && !is_region_like(region)
        {
            return Err(invalid(
                "upstream.aws_region",
                format!("{region:?} is not an AWS region name"),
                "use a region such as us-west-2",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// `upstream.command` instead of `upstream.url`: exactly one of them, no signing, and
    /// the synthetic `stdio://<program>` URL the rest of the gateway names the upstream by.
    fn validate_stdio_upstream(&mut self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str, fix: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            problem: problem.to_string(),
            fix: fix.to_string(),
        };
        let Some(cmd) = &self.upstream.command else {
            if self.upstream.url.is_empty() {
                return Err(invalid(
                    "upstream",
                    "names neither `url` nor `command`",
                    "set upstream.url (e.g. https://eks-mcp.us-west-2.api.aws/mcp) or upstream.command.program",
                ));
            }
            return Ok(());
        };
        if !self.upstream.url.is_empty() {
            return Err(invalid(
                "upstream.command",
                "is set together with upstream.url",
                "keep one: url for an HTTP server, command for a stdio server the gateway starts",
            ));
        }
        if cmd.program.trim().is_empty() {
            return Err(invalid(
                "upstream.command.program",
                "is empty",
                "name the server's executable, e.g. awslabs.eks-mcp-server",
            ));
        }
        if self.signing.enabled == Some(true) {
            return Err(invalid(
                "signing.enabled",
                "is true, but a stdio upstream is a local process and is never signed",
                "remove signing.enabled; give the child its AWS credentials through upstream.command.env or inherit_env",
            ));
        }
        if cmd.restart_backoff.is_zero() || cmd.restart_max_backoff < cmd.restart_backoff {
            return Err(invalid(
                "upstream.command.restart_backoff",
                "must be > 0 and not above restart_max_backoff",
                "e.g. restart_backoff: 250ms, restart_max_backoff: 30s",
            ));
        }
        let name = Path::new(&cmd.program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("server")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>();
        self.upstream.url = format!("stdio://{name}");
        Ok(())
    }
}

fn is_region_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// True for `localhost`, `127.0.0.0/8` and `::1` host names.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// serde's message for unknown fields lists the expected ones; keep it, and add a hint.
fn explain_yaml_error(msg: &str) -> String {
    if msg.contains("unknown field") {
        format!(
            "{msg}. Fix: remove or rename the key (see the configuration reference in README.md)"
        )
    } else if msg.contains("unknown variant") {
        format!("{msg}. Fix: use one of the listed values")
    } else {
        msg.to_string()
    }
}

/// Durations written as `250ms`, `5s`, `2m`, `1h` (or a bare number of seconds).
pub mod duration_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(t: &str) -> Result<Duration, String> {
        let t = t.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid duration {t:?}: write e.g. 250ms, 5s, 2m or 1h"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(format!("invalid duration unit in {t:?}: use ms, s, m or h")),
        };
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(y, Path::new("gw.yaml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("upstream:\n  url: https://eks-mcp.us-west-2.api.aws/mcp\n").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.limits.max_body_bytes, 4 * 1024 * 1024);
        assert_eq!(c.policy.mode, PolicyMode::Enforce);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("upstream:\n  url: https://x.example/mcp\n  urll: 1\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("urll") && m.contains("Fix"), "{m}");
    }

    #[test]
    fn plain_http_to_remote_host_is_refused_with_fix() {
        let e = parse("upstream:\n  url: http://10.0.0.1/mcp\n").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("upstream.url") && m.contains("allow_plain_http"),
            "{m}"
        );
        parse("upstream:\n  url: http://127.0.0.1:9/mcp\n").unwrap();
    }

    #[test]
    fn opentelemetry_environment_fills_what_the_file_leaves_unset() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let base = "upstream:\n  url: https://x.example/mcp\n";
        let traced = |extra: &str| parse(&format!("{base}{extra}")).unwrap().tracing;

        // A base endpoint gets the traces path; the service name comes along.
        let mut t = traced("");
        t.apply_otel_env(env(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://otel-collector.observability:4318/",
            ),
            ("OTEL_SERVICE_NAME", "payments-agent-gateway"),
        ]))
        .unwrap();
        assert_eq!(
            t.otlp_endpoint.as_deref(),
            Some("http://otel-collector.observability:4318/v1/traces")
        );
        assert_eq!(t.service_name, "payments-agent-gateway");

        // The traces-specific URL is used as it is and wins over the base.
        let mut t = traced("");
        t.apply_otel_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://b.example/otlp/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap();
        assert_eq!(
            t.otlp_endpoint.as_deref(),
            Some("https://b.example/otlp/traces")
        );

        // The file wins.
        let mut t =
            traced("tracing:\n  otlp_endpoint: http://127.0.0.1:4318\n  service_name: gw-a\n");
        t.apply_otel_env(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_SERVICE_NAME", "other"),
        ]))
        .unwrap();
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(t.service_name, "gw-a");

        // Disabled by the environment, even when the file configures it.
        let mut t = traced("tracing:\n  otlp_endpoint: http://127.0.0.1:4318\n");
        t.apply_otel_env(env(&[("OTEL_SDK_DISABLED", "TRUE")]))
            .unwrap();
        assert_eq!(t.otlp_endpoint, None);

        // gRPC is refused with the fix, not exported nowhere.
        let mut t = traced("");
        let e = t
            .apply_otel_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable OTEL_EXPORTER_OTLP_PROTOCOL is \"grpc\"")
                && e.contains("Fix: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"),
            "{e}"
        );

        // Nothing set: tracing stays off.
        let mut t = traced("");
        t.apply_otel_env(env(&[])).unwrap();
        assert_eq!(t.otlp_endpoint, None);
        assert_eq!(t.service_name, "eks-mcp-gateway");
    }

    #[test]
    fn durations_parse_with_units() {
        let c = parse(
            "upstream:\n  url: https://x.example/mcp\n  connect_timeout: 250ms\nlimits:\n  shutdown_grace: 2m\n",
        )
        .unwrap();
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(120));
        let e = parse("upstream:\n  url: https://x.example/mcp\n  connect_timeout: 5 parsecs\n");
        assert!(e.unwrap_err().to_string().contains("duration"));
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let c = parse(include_str!("../deploy/gateway.example.yaml")).unwrap();
        assert_eq!(c.policy.mode, PolicyMode::Enforce);
        assert!(matches!(c.auth, AuthConfig::Jwt(_)));
        assert!(c.signing.assume_role.is_some());
    }

    #[test]
    fn shipped_stdio_example_config_is_valid() {
        let c = parse(include_str!("../deploy/stdio.example.yaml")).unwrap();
        assert_eq!(c.policy.mode, PolicyMode::Enforce);
        assert!(matches!(c.auth, AuthConfig::Static { .. }));
        assert_eq!(c.signing.profile.as_deref(), Some("default"));
    }
}
