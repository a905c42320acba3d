//! The life of one MCP request, top to bottom.
//!
//! This is the one file that calls the stages in order:
//!
//! ```text
//! authenticate → parse → classify → decide → (rewrite) → sign → forward
//!             → relay: per message redact / filter → audit
//! ```
//!
//! Each stage lives in its own module with typed input and output; this file only composes
//! them and decides what the client sees when one of them says no. It is also the one place
//! that maps internal errors to HTTP statuses and JSON-RPC errors.
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::forward::UpstreamBody;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::admission::{Admission, Slot};
use crate::approval::{self, Approvals, Refusal};
use crate::audit::{AuditApproval, AuditSink};
use crate::classify::TargetFacts;
use crate::config::{Config, PolicyMode};
use crate::forward::{Upstream, UpstreamError};
use crate::identity::{Authenticator, Principal};
use crate::jsonrpc::{self, Kind, Message};
use crate::limits::{CallClass, CallerPermit, Callers};
use crate::mcp;
use crate::metrics;
use crate::policy::{
    ClientInfo, Confirmation, Decision, Era, GatewayFacts, McpFacts, PolicyHandle, PolicyInput,
};
use crate::redact::{Redaction, Redactor};
use crate::sign::Signer;
use crate::sse::{self, SseItem, SseParser};
use crate::telemetry;
use tracing::Instrument as _;

/// The body type of every response the gateway produces.
pub type GatewayBody = UnsyncBoxBody<Bytes, Infallible>;

/// Pseudo-methods the policy sees for requests that carry no JSON-RPC method.
pub const METHOD_GET_STREAM: &str = "stream/get";
pub const METHOD_DELETE_SESSION: &str = "session/delete";
pub const METHOD_CLIENT_RESPONSE: &str = "client/response";

/// Everything a request needs, built once at startup and shared by all requests.
pub struct Gateway {
    pub config: Config,
    pub upstream: Upstream,
    pub policy: Arc<PolicyHandle>,
    pub redactor: Redactor,
    pub signer: Option<Signer>,
    pub auth: Authenticator,
    pub audit: AuditSink,
    /// Sealing keys and replay cache of human confirmations.
    pub approvals: Approvals,
    /// `params._meta.AWS_REGION` pinned on every request (None: stripped).
    pub operating_region: Option<String>,
    /// The global request slots (`limits.max_concurrent_requests`), served fairly.
    pub admission: Arc<Admission>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    draining: std::sync::atomic::AtomicBool,
    /// Per-caller limit state (`gateway.limits` of the policy data), bounded.
    pub callers: Arc<Callers>,
    /// Slots for large inspections on the blocking pool (`limits.max_concurrent_inspections`).
    inspections: Arc<Semaphore>,
    /// The upstream's shared throttle and circuit breaker.
    pub upstream_guard: crate::forward::protection::UpstreamGuard,
}

/// A large inspection did not finish within `limits.inspect_timeout`.
#[derive(Debug)]
struct InspectTimeout;

/// Parts supplied by the embedder instead of being built from the configuration.
#[derive(Default)]
pub struct BuildOptions {
    /// A signer with its own credential provider (demo, tests).
    pub signer: Option<Signer>,
}

impl Gateway {
    /// Build every stage from the configuration. Fails with a message naming what is wrong.
    pub async fn build(config: Config) -> anyhow::Result<Arc<Gateway>> {
        Self::build_with(config, BuildOptions::default()).await
    }

    pub async fn build_with(config: Config, options: BuildOptions) -> anyhow::Result<Arc<Gateway>> {
        use anyhow::Context as _;
        let upstream = Upstream::new(&config.upstream).context("upstream client")?;
        let policy =
            Arc::new(PolicyHandle::load(&config.policy).with_context(|| {
                format!("loading policies from {}", config.policy.dir.display())
            })?);
        let redactor = crate::policy::redactor_for(&config.policy.dir)?;
        let signer = match options.signer {
            Some(s) => Some(s),
            // A local child process is not an AWS endpoint: nothing to sign.
            None if upstream.is_stdio() => None,
            None => Signer::from_config(&config.signing, upstream.uri())
                .await
                .context("upstream request signing")?,
        };
        let auth = Authenticator::from_config(&config.auth)
            .await
            .context("caller authentication")?;
        let audit = AuditSink::start(&config.audit).context("audit sink")?;
        let approvals = Approvals::from_config(&config.approval)?;
        if approvals.ephemeral {
            tracing::warn!(
                "no approval key configured (approval.key_file or {}): confirmations are sealed with a random key of this process, so a retry that reaches another replica or a restarted gateway is refused",
                approval::KEYS_ENV
            );
        }
        let operating_region = config
            .upstream
            .aws_region
            .clone()
            .or_else(|| signer.as_ref().map(|s| s.region().to_owned()));
        if config.policy.hot_reload {
            policy.spawn_watcher(Duration::from_secs(1));
        }
        crate::drift::spawn_monitor(upstream.tools().clone(), policy.clone());
        let gateway = Arc::new(Gateway {
            admission: Admission::new(
                config.limits.max_concurrent_requests,
                config.limits.max_queued_per_caller,
                config.limits.max_queued_requests,
                config.limits.queue_timeout,
            ),
            upstream_guard: crate::forward::protection::UpstreamGuard::new(&config.upstream),
            callers: Callers::new(config.limits.max_callers, config.limits.caller_idle_timeout),
            inspections: Arc::new(Semaphore::new(
                match config.limits.max_concurrent_inspections {
                    0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                    n => n,
                },
            )),
            config,
            upstream,
            policy,
            redactor,
            signer,
            auth,
            audit,
            approvals,
            operating_region,
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        // A stdio child is read at each start and after its own notice (forward::stdio).
        if gateway.config.upstream.watch_tools && !gateway.upstream.is_stdio() {
            crate::drift::spawn_watcher(Arc::downgrade(&gateway));
        }
        Ok(gateway)
    }

    /// Mark this replica as shutting down: `/readyz` answers 503 from now on, so a load
    /// balancer stops sending new requests while in-flight ones finish.
    pub fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Run `work` on the blocking pool when `size` is at least `limits.inspect_offload_bytes`
    /// (else inline): classify, decide and redact are CPU-bound, and a large input must not
    /// hold an async worker that other callers' calls need. At most
    /// `limits.max_concurrent_inspections` run at once; waiting for a slot and running count
    /// against `limits.inspect_timeout`. A timed-out inspection still runs to its end on its
    /// thread (its inputs are bounded by the manifest and body limits), holding its slot.
    async fn inspect<T: Send + 'static>(
        &self,
        size: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, InspectTimeout> {
        if size < self.config.limits.inspect_offload_bytes {
            return Ok(work());
        }
        let m = metrics::global();
        m.inspections_in_flight.inc();
        let deadline = tokio::time::Instant::now() + self.config.limits.inspect_timeout;
        let slots = self.inspections.clone();
        let run = async move {
            let permit = slots.acquire_owned().await.expect("never closed");
            // The wait for a slot used the whole deadline: do not start.
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            Some(
                tokio::task::spawn_blocking(move || {
                    let out = work();
                    drop(permit);
                    out
                })
                .await,
            )
        };
        let out = tokio::time::timeout_at(deadline, run).await.ok().flatten();
        m.inspections_in_flight.dec();
        match out {
            Some(Ok(v)) => {
                m.inspections_offloaded_total
                    .with_label_values(&["done"])
                    .inc();
                Ok(v)
            }
            // A panic in the work: re-raise it where it would have happened inline.
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            None => {
                m.inspections_offloaded_total
                    .with_label_values(&["timeout"])
                    .inc();
                Err(InspectTimeout)
            }
        }
    }

    /// Entry point for requests on the MCP path: the front (`front/stack.rs`) has checked
    /// Host and Origin and the limits, authenticated the caller and taken its request slot.
    pub async fn handle_mcp(
        self: Arc<Self>,
        req: Request<Incoming>,
        principal: Principal,
        permit: Slot,
        started: Instant,
    ) -> Response<GatewayBody> {
        match *req.method() {
            Method::POST => self.handle_post(req, principal, permit, started).await,
            Method::GET => self.handle_get(req, principal, permit, started).await,
            Method::DELETE => self.handle_delete(req, principal, permit, started).await,
            _ => plain_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST, GET or DELETE on the MCP endpoint",
            ),
        }
    }

    async fn handle_post(
        self: Arc<Self>,
        req: Request<Incoming>,
        principal: Principal,
        permit: Slot,
        started: Instant,
    ) -> Response<GatewayBody> {
        let (parts, body) = req.into_parts();
        if !is_json_content_type(&parts.headers) {
            return json_error_status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                jsonrpc::INVALID_REQUEST,
                "Content-Type must be application/json",
            );
        }
        // parse: bounded body, strict JSON-RPC.
        let max = self.config.limits.max_body_bytes;
        if content_length(&parts.headers).is_some_and(|n| n > max as u64) {
            return too_large(max);
        }
        let bytes = match read_body(body, max, &self.config.limits).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => return too_large(max),
            Err(BodyError::TooSlow { received }) => {
                tracing::warn!(received, "request body arrived too slowly; closing");
                let mut resp = json_error_status(
                    StatusCode::REQUEST_TIMEOUT,
                    None,
                    jsonrpc::INVALID_REQUEST,
                    &format!(
                        "the request body arrived too slowly ({received} bytes before the \
                         deadline of limits.body_read_timeout plus one second per \
                         limits.body_min_rate bytes)"
                    ),
                );
                resp.headers_mut()
                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
            Err(BodyError::Read(e)) => {
                return json_error_status(
                    StatusCode::BAD_REQUEST,
                    None,
                    jsonrpc::PARSE_ERROR,
                    &format!("could not read the request body: {e}"),
                );
            }
        };
        let msg = match jsonrpc::parse_message(&bytes) {
            Ok(m) => m,
            Err(e) => return json_error_status(StatusCode::BAD_REQUEST, None, e.code, &e.message),
        };
        // The client's answer to one of the gateway's own confirmation questions stays here.
        if let Kind::Response { id } = &msg.kind
            && approval::is_gateway_elicitation(id)
        {
            return self.deliver_answer(&msg, &principal);
        }
        let (era, protocol_version) = mcp::era_of(&parts.headers, &msg);
        if let Err(mcp::HeaderMismatch(why)) = mcp::check_headers(&parts.headers, &msg, era) {
            return json_error_status(
                StatusCode::BAD_REQUEST,
                msg.id(),
                jsonrpc::HEADER_MISMATCH,
                &why,
            );
        }
        // Mcp-Param-* headers the upstream's schema declares must say what the body says:
        // the policy decides on the body, the upstream may read the header.
        if let (Kind::Request { .. }, Some("tools/call")) = (&msg.kind, msg.method())
            && let Some(mirrored) = msg
                .target_name()
                .and_then(|name| self.upstream.tools().mirrored(name))
        {
            let args = msg.params().and_then(|p| p.get("arguments"));
            if let Err(mcp::HeaderMismatch(why)) =
                mcp::check_param_headers(&parts.headers, &mirrored, args, era)
            {
                return json_error_status(
                    StatusCode::BAD_REQUEST,
                    msg.id(),
                    jsonrpc::HEADER_MISMATCH,
                    &why,
                );
            }
        }
        let method = msg.method().unwrap_or(METHOD_CLIENT_RESPONSE).to_owned();
        let span = telemetry::request_span(
            &method,
            msg.target_name().filter(|_| method == "tools/call"),
            parts.headers.contains_key(mcp::H_SESSION_ID),
            msg.id()
                .map(|id| id.to_string().trim_matches('"').to_owned())
                .as_deref(),
        );
        telemetry::set_parent_from(
            &span,
            &parts.headers,
            msg.params().and_then(|p| p.get("_meta")),
        );
        if let Some(v) = &protocol_version {
            telemetry::record_protocol_version(&span, v);
        }
        self.decide_and_forward(
            parts.headers,
            msg,
            bytes.len(),
            method,
            era,
            protocol_version,
            principal,
            permit,
            started,
            span.clone(),
        )
        .instrument(span)
        .await
    }

    /// classify → decide → rewrite → sign → forward, inside the request's span.
    #[allow(clippy::too_many_arguments)]
    async fn decide_and_forward(
        self: Arc<Self>,
        client_headers: HeaderMap,
        msg: Message,
        body_len: usize,
        method: String,
        era: Era,
        protocol_version: Option<String>,
        principal: Principal,
        permit: Slot,
        started: Instant,
        span: tracing::Span,
    ) -> Response<GatewayBody> {
        // classify + decide, off the async workers when the body is large.
        let policy = self.policy.current();
        let msg = Arc::new(msg);
        let gateway_facts = self.gateway_facts();
        let mcp_facts = McpFacts {
            method: method.clone(),
            protocol_version,
            era,
        };
        let inspected = {
            let (gw, policy, msg) = (self.clone(), policy.clone(), msg.clone());
            let principal = principal.clone();
            let mcp_facts = mcp_facts.clone();
            let gateway_facts = gateway_facts.clone();
            self.inspect(body_len, move || {
                let (tool, target) = gw.classify(&policy, &msg);
                let input = Arc::new(PolicyInput {
                    principal,
                    client: client_info(&msg),
                    mcp: mcp_facts,
                    tool,
                    target,
                    gateway: gateway_facts,
                });
                let decision = gw.decide(&policy, &input);
                // The audit copy of the arguments is redacted here too: as large as the body.
                let arguments = gw.redacted_arguments(&input);
                (input, decision, arguments)
            })
            .await
        };
        let (input, decision, arguments) = match inspected {
            Ok(v) => v,
            Err(InspectTimeout) => {
                // Fail closed in every mode, like any limit: the call is never forwarded.
                let why = format!(
                    "the gateway could not inspect this {} call within limits.inspect_timeout \
                     ({:?}); send a smaller input",
                    method, self.config.limits.inspect_timeout
                );
                let tool = msg
                    .target_name()
                    .filter(|_| method == "tools/call")
                    .map(|name| {
                        let no_args = Value::Object(Map::new());
                        let limits = self.config.limits.manifest();
                        policy
                            .catalogue()
                            .classify_within(name, &no_args, &limits)
                            .0
                    });
                let input = Arc::new(PolicyInput {
                    principal,
                    client: client_info(&msg),
                    mcp: mcp_facts,
                    tool,
                    target: TargetFacts {
                        parse_error: Some(why.clone()),
                        ..TargetFacts::default()
                    },
                    gateway: gateway_facts,
                });
                let decision = Decision {
                    allow: false,
                    reasons: vec![why.clone()],
                    redact: vec!["baseline".to_owned()],
                    rules: vec!["limits.inspect_timeout".to_owned()],
                    role: None,
                    confirm: None,
                };
                telemetry::record_error(
                    &span,
                    "inspect_timeout",
                    Some(jsonrpc::POLICY_DENIED),
                    &why,
                );
                let mut log = RequestLog::new(
                    input,
                    &decision,
                    PolicyMode::Enforce,
                    started,
                    policy.revision(),
                );
                log.error = Some("inspect_timeout".into());
                log.session_id =
                    mcp::header_str(&client_headers, mcp::H_SESSION_ID).map(str::to_owned);
                let resp = deny_response(&msg, &decision, era);
                log.emit(&self).await;
                return resp;
            }
        };
        // The inspection's own reference to the message is gone once it returned.
        let mut msg = Arc::try_unwrap(msg).unwrap_or_else(|shared| (*shared).clone());
        let mut log = RequestLog::new(
            input.clone(),
            &decision,
            self.config.policy.mode,
            started,
            policy.revision(),
        );
        log.arguments = arguments;
        log.session_id = mcp::header_str(&client_headers, mcp::H_SESSION_ID).map(str::to_owned);
        // confirm: the person at the keyboard approves before anything goes upstream.
        let mut ask_in_session = None;
        if let (true, Some(confirm), Kind::Request { .. }) =
            (decision.allow, &decision.confirm, &msg.kind)
        {
            match self.confirmation(&mut msg, &input, confirm, policy.revision(), era) {
                ConfirmStep::Forward(approval) => log.approval = Some(approval),
                ConfirmStep::AskInSession => ask_in_session = Some(confirm.clone()),
                ConfirmStep::Answer(resp, approval) => {
                    log.approval = Some(approval);
                    log.emit(&self).await;
                    return resp;
                }
                ConfirmStep::Refuse(refusal, approval) => {
                    let (denial, resp) = refusal_response(&msg, era, &decision, &span, &refusal);
                    log.decision = denial;
                    log.approval = Some(approval);
                    log.emit(&self).await;
                    return resp;
                }
            }
        }
        let call = DecidedCall {
            client_headers,
            msg,
            method,
            era,
            input,
            decision,
            log,
            span,
            policy,
        };
        if let Some(confirm) = ask_in_session {
            // The person may take minutes to answer: the request slot is freed meanwhile and
            // taken again, in the caller's turn, once they accept.
            drop(permit);
            return self.confirm_in_session(call, confirm);
        }
        self.forward_decided(call, permit).await
    }

    /// The decided request from here on: deny, admit against the caller's limits, rewrite,
    /// sign, forward and relay.
    async fn forward_decided(
        self: Arc<Self>,
        call: DecidedCall,
        permit: Slot,
    ) -> Response<GatewayBody> {
        let DecidedCall {
            client_headers,
            mut msg,
            method,
            era,
            input,
            decision,
            mut log,
            span,
            policy,
        } = call;
        telemetry::record_decision(
            &span,
            log.decision_label(),
            &decision.rules,
            policy.revision(),
        );
        if !decision.allow && self.config.policy.mode == PolicyMode::Enforce {
            telemetry::record_error(
                &span,
                "policy_denied",
                Some(jsonrpc::POLICY_DENIED),
                &denial_text(&decision),
            );
            let resp = deny_response(&msg, &decision, era);
            log.emit(&self).await;
            return resp;
        }
        // limits: the caller's own rate, concurrency and byte budget, before anything is sent.
        let caller = match self.admit_caller(&policy, &input) {
            Ok(permit) => permit,
            Err(limited) => {
                telemetry::record_error(
                    &span,
                    "rate_limited",
                    Some(jsonrpc::RATE_LIMITED),
                    &limited.message(),
                );
                log.error = Some("rate_limited".into());
                log.emit(&self).await;
                return rate_limited(msg.id(), &limited);
            }
        };
        if let Err(resp) = self.audit_gate(msg.id()).await {
            return resp;
        }

        let initialize_can_elicit = (msg.method() == Some("initialize"))
            .then(|| approval::client_can_elicit(msg.params().and_then(|p| p.get("capabilities"))));
        // rewrite: pin the operating region; the bytes below are what the policy evaluated
        // plus this one gateway-owned field.
        self.pin_region(&mut msg);
        propagate_trace_in_meta(&mut msg, &span);
        let body = msg.to_bytes();
        let mut headers = crate::forward::upstream_headers(&client_headers);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !headers.contains_key(http::header::ACCEPT) {
            headers.insert(
                http::header::ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            );
        }
        let relay = Relay {
            gateway: self.clone(),
            request_id: msg.id().cloned(),
            method,
            profiles: decision.redact.clone(),
            // dry_run decides and records but never blocks, so it hides nothing either.
            filter_tools: matches!(msg.kind, Kind::Request { .. })
                && msg.method() == Some("tools/list")
                && self.config.policy.mode == PolicyMode::Enforce,
            // The first page of a tools/list: when it is also the last, it is the whole list.
            observe_tools: matches!(msg.kind, Kind::Request { .. })
                && msg.method() == Some("tools/list")
                && msg.params().and_then(|p| p.get("cursor")).is_none(),
            stateless: era == Era::Stateless,
            input,
            log: LogSlot::new(self.clone(), log),
            caller: Some(Arc::new(caller)),
        };
        let resp = self
            .clone()
            .forward_and_relay(
                Method::POST,
                headers,
                body,
                relay,
                decision.role.as_deref(),
                permit,
            )
            .await;
        // Session era: remember whether the client can be asked for a confirmation.
        if let Some(can_elicit) = initialize_can_elicit
            && resp.status().is_success()
            && let Some(session) = mcp::header_str(resp.headers(), mcp::H_SESSION_ID)
        {
            self.approvals.note_session(session, can_elicit);
        }
        resp
    }

    async fn handle_get(
        self: Arc<Self>,
        req: Request<Incoming>,
        principal: Principal,
        permit: Slot,
        started: Instant,
    ) -> Response<GatewayBody> {
        // The front has taken one of `limits.max_sse_streams` for it (front/streams.rs).
        self.handle_bodyless(req, principal, permit, METHOD_GET_STREAM, started)
            .await
    }

    async fn handle_delete(
        self: Arc<Self>,
        req: Request<Incoming>,
        principal: Principal,
        permit: Slot,
        started: Instant,
    ) -> Response<GatewayBody> {
        self.handle_bodyless(req, principal, permit, METHOD_DELETE_SESSION, started)
            .await
    }

    /// GET (server stream) and DELETE (end session): no body, decided as pseudo-methods.
    async fn handle_bodyless(
        self: Arc<Self>,
        req: Request<Incoming>,
        principal: Principal,
        permit: Slot,
        method: &str,
        started: Instant,
    ) -> Response<GatewayBody> {
        let headers = req.headers();
        let version = mcp::header_str(headers, mcp::H_PROTOCOL_VERSION).map(str::to_owned);
        let input = Arc::new(PolicyInput {
            principal,
            client: ClientInfo::default(),
            mcp: McpFacts {
                method: method.to_owned(),
                protocol_version: version,
                era: Era::Session,
            },
            tool: None,
            target: TargetFacts::default(),
            gateway: self.gateway_facts(),
        });
        let policy = self.policy.current();
        let decision = self.decide(&policy, &input);
        let mut log = RequestLog::new(
            input.clone(),
            &decision,
            self.config.policy.mode,
            started,
            policy.revision(),
        );
        log.session_id = mcp::header_str(headers, mcp::H_SESSION_ID).map(str::to_owned);
        if !decision.allow && self.config.policy.mode == PolicyMode::Enforce {
            log.emit(&self).await;
            let body = jsonrpc::error_response(
                None,
                jsonrpc::POLICY_DENIED,
                &denial_text(&decision),
                Some(denial_data(&decision)),
            );
            return json_response(StatusCode::FORBIDDEN, &body);
        }
        if let Err(resp) = self.audit_gate(None).await {
            return resp;
        }
        let up_headers = crate::forward::upstream_headers(headers);
        let http_method = req.method().clone();
        let relay = Relay {
            gateway: self.clone(),
            request_id: None,
            method: method.to_owned(),
            profiles: decision.redact.clone(),
            filter_tools: false,
            observe_tools: false,
            stateless: false,
            input,
            log: LogSlot::new(self.clone(), log),
            caller: None,
        };
        self.forward_and_relay(
            http_method,
            up_headers,
            Bytes::new(),
            relay,
            decision.role.as_deref(),
            permit,
        )
        .await
    }

    /// sign → forward → relay the response message by message.
    #[allow(clippy::too_many_arguments)]
    async fn forward_and_relay(
        self: Arc<Self>,
        method: Method,
        headers: HeaderMap,
        body: Bytes,
        relay: Relay,
        role: Option<&str>,
        permit: Slot,
    ) -> Response<GatewayBody> {
        let uri = self.upstream.uri().clone();
        let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = headers;
            if let Some(authority) = uri.authority() {
                let host = host_header_value(authority, uri.scheme_str());
                if let Ok(v) = HeaderValue::from_str(&host) {
                    h.insert(http::header::HOST, v);
                }
            }
        }
        let upstream_span = telemetry::upstream_span(
            &relay.method,
            relay.input.tool.as_ref().map(|t| t.name.as_str()),
        );
        let (mut unsigned, ()) = builder
            .body(())
            .expect("request parts are valid")
            .into_parts();
        telemetry::inject_headers(&upstream_span, &mut unsigned.headers);
        // Only a call the catalogue marks as a read is ever sent twice, and only while no
        // byte has gone to the client (nothing has: the retry decision is made on the status).
        let retryable = relay
            .input
            .tool
            .as_ref()
            .is_some_and(|t| t.known && t.access == crate::classify::Access::Read);
        let mut retried = 0;
        let resp = loop {
            // The upstream's state first: a running Retry-After or an open breaker holds the
            // call here, unsent.
            let attempt = match self.upstream_guard.admit() {
                Ok(a) => a,
                Err(hold) => return relay.fail(held(hold)).await,
            };
            let mut parts = clone_parts(&unsigned);
            // sign: the very last change to the request (again for each attempt).
            if let Some(signer) = &self.signer {
                let principal = relay.input.principal.clone();
                let signed = signer
                    .sign(&mut parts, &body, &principal, role)
                    .instrument(tracing::info_span!("sign", otel.kind = "internal"))
                    .await;
                if let Err(e) = signed {
                    let err = jsonrpc::error_response(
                        relay.request_id.as_ref(),
                        jsonrpc::SIGNING_FAILED,
                        &format!("the gateway could not sign the upstream request: {e}"),
                        Some(serde_json::json!({"source": "gateway", "kind": "signing_failed"})),
                    );
                    relay.set_error("signing_failed");
                    relay.clone().complete(None).await;
                    return request_scoped_error(
                        relay.request_id.is_some(),
                        StatusCode::BAD_GATEWAY,
                        &err,
                    );
                }
            }
            let upstream_req = Request::from_parts(parts, Full::new(body.clone()));
            let sent_at = Instant::now();
            let result = self
                .upstream
                .send(upstream_req)
                .instrument(upstream_span.clone())
                .await;
            let latency = sent_at.elapsed();
            metrics::global()
                .upstream_request_seconds
                .with_label_values(&[relay.method.as_str()])
                .observe(latency.as_secs_f64());
            relay.with_log(|l| l.upstream_latency = Some(latency));
            let class = match &result {
                Ok(r) => {
                    upstream_span.record("http.response.status_code", r.status().as_u16());
                    Some(metrics::status_class(r.status().as_u16()))
                }
                Err(UpstreamError::Timeout(_)) => Some("timeout"),
                Err(UpstreamError::Unavailable(_)) => Some("unavailable"),
                Err(_) => None,
            };
            if let Some(class) = class {
                metrics::global()
                    .upstream_responses_total
                    .with_label_values(&[class])
                    .inc();
            }
            self.upstream_guard
                .record(attempt, breaker_outcome(&result));
            // Unreachable over HTTP means the connection never opened, so the call was not
            // delivered. A stdio child that died mid-call took its session with it: a retry
            // would only meet "session not found", so the client hears of the exit instead.
            let transient = match &result {
                Ok(r) => matches!(r.status().as_u16(), 502..=504),
                Err(e) => matches!(e, UpstreamError::Unavailable(_)) && !self.upstream.is_stdio(),
            };
            if retryable && transient && retried < self.config.upstream.retries {
                retried += 1;
                metrics::global().upstream_retries_total.inc();
                drop(result);
                tokio::time::sleep(retry_backoff(self.config.upstream.retry_backoff, retried))
                    .await;
                continue;
            }
            break result;
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return relay.fail(e).await,
        };
        let status = resp.status();
        if status == http::StatusCode::TOO_MANY_REQUESTS {
            metrics::global().upstream_throttled_total.inc();
        }
        relay.with_log(|l| l.upstream_status = Some(status.as_u16()));
        if status.is_success() {
            // Best effort: sessions that expire upstream without a DELETE stay counted.
            match relay.method.as_str() {
                "initialize" if resp.headers().contains_key(mcp::H_SESSION_ID) => {
                    metrics::global().open_sessions.inc()
                }
                METHOD_DELETE_SESSION => metrics::global().open_sessions.dec(),
                _ => {}
            }
        }
        if is_error_status(status.as_u16()) {
            let (up_parts, up_body) = resp.into_parts();
            // Error bodies are small; read a bounded prefix for the hint, never relay it raw.
            let body = match tokio::time::timeout(
                Duration::from_secs(5),
                Limited::new(up_body, 64 * 1024).collect(),
            )
            .await
            {
                Ok(Ok(c)) => c.to_bytes(),
                _ => Bytes::new(),
            };
            return relay
                .fail(upstream_status_error(
                    status.as_u16(),
                    &up_parts.headers,
                    &body,
                ))
                .await;
        }
        let (up_parts, up_body) = resp.into_parts();
        let mut out = Response::builder().status(status);
        for (name, value) in &up_parts.headers {
            if crate::forward::forwardable_response_header(name) {
                out = out.header(name, value);
            }
        }
        let content_type = mcp::header_str(&up_parts.headers, "content-type").unwrap_or_default();
        if content_type.starts_with("text/event-stream") {
            out = out.header("x-accel-buffering", "no");
            if !up_parts.headers.contains_key("cache-control") {
                out = out.header("cache-control", "no-cache");
            }
            let stream = relay.sse_stream(up_body, permit);
            return out.body(stream).expect("valid response");
        }
        // A JSON body (or an empty 202/204): read it whole (bounded), process, answer.
        let max = self.config.upstream.max_message_bytes;
        let collected = tokio::time::timeout(
            self.config.upstream.idle_timeout,
            Limited::new(up_body, max).collect(),
        )
        .await;
        let bytes = match collected {
            Err(_) => {
                return relay
                    .fail(UpstreamError::Timeout(self.config.upstream.idle_timeout))
                    .await;
            }
            Ok(Err(e)) => {
                let err = if e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    UpstreamError::BadResponse(format!("response larger than {max} bytes"))
                } else {
                    UpstreamError::Interrupted(e.to_string())
                };
                return relay.fail(err).await;
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        drop(permit);
        relay.charge_bytes(bytes.len());
        if bytes.is_empty() {
            relay.clone().complete(Some(status.as_u16())).await;
            return out.body(empty()).expect("valid response");
        }
        if !content_type.starts_with("application/json") {
            return relay
                .fail(UpstreamError::BadResponse(format!(
                    "unexpected content type {content_type:?} with a body"
                )))
                .await;
        }
        let processed = {
            let (r, b) = (relay.clone(), bytes.clone());
            self.inspect(bytes.len(), move || r.process_payload(&b))
                .await
        };
        let body = match processed {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return relay.fail(e).await,
            // Never relay what was not redacted: the response is withheld.
            Err(InspectTimeout) => {
                return relay
                    .fail(UpstreamError::BadResponse(format!(
                        "the gateway could not redact a {} byte response within \
                         limits.inspect_timeout ({:?}); it was withheld",
                        bytes.len(),
                        self.config.limits.inspect_timeout
                    )))
                    .await;
            }
        };
        relay.clone().complete(Some(status.as_u16())).await;
        out.body(full(body)).expect("valid response")
    }

    /// Admit one allowed call against its caller's limits (`gateway.limits`), counting a
    /// refusal by group, class and limit.
    fn admit_caller(
        &self,
        policy: &crate::policy::PolicyEngine,
        input: &PolicyInput,
    ) -> Result<CallerPermit, crate::limits::Limited> {
        let tool = input.tool.as_ref();
        let class = CallClass::of(tool.map(|t| t.access));
        let tool_name = tool.filter(|t| t.known).map(|t| t.name.as_str());
        let principal = &input.principal;
        let limits = policy
            .limits()
            .resolve(&principal.id, &principal.groups, class, tool_name);
        let admitted = self.callers.admit(&principal.id, class, limits);
        let m = metrics::global();
        m.callers_tracked.set(self.callers.len() as i64);
        if let Err(limited) = &admitted {
            tracing::info!(principal = %principal.id, class = class.label(), limit = limited.kind.label(), "call refused by a per-caller limit");
            for group in group_labels(policy, principal) {
                m.caller_limited_total
                    .with_label_values(&[group, class.label(), limited.kind.label()])
                    .inc();
            }
        }
        admitted
    }

    /// classify: the facts of a `tools/call` (none for other methods).
    fn classify(
        &self,
        policy: &crate::policy::PolicyEngine,
        msg: &Message,
    ) -> (Option<crate::classify::ToolFacts>, TargetFacts) {
        match (&msg.kind, msg.method()) {
            (Kind::Request { .. }, Some("tools/call")) => {
                let p = msg
                    .params()
                    .expect("tools/call params were checked by the parser");
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                let no_args = Value::Object(Map::new());
                let args = p.get("arguments").unwrap_or(&no_args);
                let limits = self.config.limits.manifest();
                let (tool, target) = policy.catalogue().classify_within(name, args, &limits);
                (Some(tool), target)
            }
            _ => (None, TargetFacts::default()),
        }
    }

    /// The policy allowed this tools/call once the person confirms it. In `dry_run` nothing
    /// is asked ("would have asked" is recorded). In the stateless era the first call is
    /// answered with an `InputRequiredResult` and a sealed `requestState`, and the retry
    /// carrying the answer is verified here; on success the gateway's own fields are removed
    /// from the request, which then goes upstream as the person confirmed it.
    fn confirmation(
        &self,
        msg: &mut Message,
        input: &PolicyInput,
        confirm: &Confirmation,
        revision: &str,
        era: Era,
    ) -> ConfirmStep {
        if self.config.policy.mode == PolicyMode::DryRun {
            return ConfirmStep::Forward(AuditApproval::outcome("would_ask"));
        }
        if era == Era::Session {
            return ConfirmStep::AskInSession;
        }
        let Some(tool) = input.tool.as_ref() else {
            return refuse(Refusal::Unavailable("the call names no tool".into()));
        };
        let Some(params) = msg.params() else {
            return refuse(Refusal::Unavailable("the call has no params".into()));
        };
        let digest = approval::call_digest("tools/call", &tool.name, params.get("arguments"));
        let state = params
            .get("requestState")
            .and_then(Value::as_str)
            .filter(|s| approval::is_gateway_state(s));
        let answer = params
            .get("inputResponses")
            .and_then(|r| r.get(approval::INPUT_KEY));
        let principal = &input.principal.id;
        let (state, answer) = match (state, answer) {
            (None, None) => {
                let caps = msg
                    .meta()
                    .and_then(|m| m.get(mcp::META_CLIENT_CAPABILITIES));
                if !approval::client_can_elicit(caps) {
                    return refuse(Refusal::UnsupportedClient);
                }
                let Some(id) = msg.id() else {
                    return refuse(Refusal::Unavailable("the call has no id".into()));
                };
                let token = self.approvals.seal(principal, &digest, revision);
                let mut requests = Map::new();
                requests.insert(
                    approval::INPUT_KEY.into(),
                    serde_json::json!({"method": "elicitation/create", "params": approval::elicitation_params(confirm)}),
                );
                let result = serde_json::json!({
                    "resultType": "input_required",
                    "inputRequests": requests,
                    "requestState": token,
                });
                return ConfirmStep::Answer(
                    json_response(StatusCode::OK, &jsonrpc::result_response(id, result)),
                    AuditApproval::outcome("asked"),
                );
            }
            (None, Some(_)) => return refuse(Refusal::Tampered),
            (Some(_), None) => {
                return refuse(Refusal::InvalidAnswer(
                    "an answer to the gateway's confirmation in inputResponses".into(),
                ));
            }
            (Some(s), Some(a)) => (s.to_owned(), a.clone()),
        };
        let verified = match self.approvals.verify(&state, principal, &digest, revision) {
            Ok(v) => v,
            Err(r) => return refuse(r),
        };
        let round_trip_ms = Some(approval::since_ms(verified.asked_at_ms));
        let answered = approval::check_answer(confirm, &answer)
            .and_then(|a| self.approvals.consume(&verified).map(|()| a));
        let answered = match answered {
            Ok(a) => a,
            Err(r) => {
                let mut record = AuditApproval::outcome(r.outcome());
                record.round_trip_ms = round_trip_ms;
                record.at = Some(crate::audit::rfc3339_now());
                return ConfirmStep::Refuse(r, record);
            }
        };
        strip_gateway_input(msg);
        ConfirmStep::Forward(self.accepted(answered, round_trip_ms))
    }

    /// Session era: the answer to the tools/call POST becomes an SSE stream that first carries
    /// the gateway's `elicitation/create` request; the client answers with a POST of its
    /// response (routed here by [`Approvals::deliver`]), and the stream then carries the
    /// denial, or the upstream's answer to the confirmed call. Bounded by
    /// `approval.answer_timeout`; nothing goes upstream before an accepted answer.
    fn confirm_in_session(
        self: Arc<Self>,
        call: DecidedCall,
        confirm: Confirmation,
    ) -> Response<GatewayBody> {
        let session = call.log.session_id.clone();
        let known = session
            .as_deref()
            .and_then(|s| self.approvals.session_can_elicit(s));
        if known == Some(false) {
            return self.refused_now(call, Refusal::UnsupportedClient, None);
        }
        let (id, answer) = self.approvals.ask(&call.input.principal.id);
        let asked_question = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "elicitation/create",
            "params": approval::elicitation_params(&confirm),
        });
        let question = Question {
            gateway: self.clone(),
            id,
        };
        let held = HeldCall {
            gateway: self.clone(),
            call: Some(call),
        };
        let gateway = self;
        // Dropping the stream (the client went away) drops the wait: nothing is forwarded,
        // the question is forgotten and the record says client_disconnected.
        let rest = async move {
            let mut held = held;
            let _question = question;
            let asked = Instant::now();
            let timeout = gateway.approvals.answer_timeout;
            let outcome = match tokio::time::timeout(timeout, answer).await {
                Err(_) => Err(Refusal::Timeout),
                Ok(Err(_)) => Err(Refusal::Unavailable("the answer was lost".into())),
                Ok(Ok(response)) => approval::elicit_result(&response)
                    .and_then(|result| approval::check_answer(&confirm, result)),
            };
            let round_trip_ms = Some(crate::audit::millis(asked.elapsed()));
            let resp = match outcome {
                Ok(answer) => {
                    let approval = gateway.accepted(answer, round_trip_ms);
                    let caller = {
                        let call = held.call.as_mut().expect("held until answered");
                        call.log.approval = Some(approval);
                        call.input.principal.id.clone()
                    };
                    // Still held while it waits its turn: a client that goes away meanwhile
                    // leaves its record.
                    let permit = gateway.admission.acquire(&caller).await;
                    let call = held.call.take().expect("held until answered");
                    match permit {
                        Ok(permit) => gateway.clone().forward_decided(call, permit).await,
                        Err(refused) => {
                            gateway
                                .clone()
                                .overloaded_after_confirmation(call, refused)
                                .await
                        }
                    }
                }
                Err(refusal) => {
                    let call = held.call.take().expect("held until answered");
                    gateway.clone().refused_now(call, refusal, round_trip_ms)
                }
            };
            as_sse_frames(resp).await
        };
        let first = futures_util::stream::once(futures_util::future::ready(Ok::<_, Infallible>(
            Frame::data(sse::encode_event(&sse::message_event(
                asked_question.to_string(),
                None,
            ))),
        )));
        let tail = futures_util::stream::once(rest).flatten();
        let body = StreamBody::new(first.chain(tail)).boxed_unsync();
        Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/event-stream")
            .header("cache-control", "no-cache")
            .header("x-accel-buffering", "no")
            .body(body)
            .expect("valid response")
    }

    /// An accepted confirmation found every request slot busy and its caller's queue full (or
    /// waited `limits.queue_timeout`): the call is not sent; the client may send it again.
    async fn overloaded_after_confirmation(
        self: Arc<Self>,
        call: DecidedCall,
        refused: crate::admission::Refused,
    ) -> Response<GatewayBody> {
        let limit = match refused {
            crate::admission::Refused::QueueFull => "queue_full",
            crate::admission::Refused::TimedOut => "queue_timeout",
        };
        metrics::global()
            .requests_refused_total
            .with_label_values(&[limit])
            .inc();
        let DecidedCall { msg, mut log, .. } = call;
        log.error = Some("overloaded".into());
        log.emit(&self).await;
        let err = jsonrpc::error_response(
            msg.id(),
            jsonrpc::INTERNAL_ERROR,
            "gateway overloaded: too many requests in flight after the confirmation; the call \
             was not sent, retry shortly",
            Some(serde_json::json!({"source": "gateway", "kind": "overloaded"})),
        );
        request_scoped_error(msg.id().is_some(), StatusCode::SERVICE_UNAVAILABLE, &err)
    }

    /// Session era: hand the client's answer to the tools/call waiting for it on this replica.
    fn deliver_answer(&self, msg: &Message, principal: &Principal) -> Response<GatewayBody> {
        let id = msg.id().and_then(Value::as_str).unwrap_or_default();
        let response = Value::Object(msg.value.clone());
        match self.approvals.deliver(id, &principal.id, response) {
            approval::Delivery::Delivered => Response::builder()
                .status(StatusCode::ACCEPTED)
                .body(empty())
                .expect("valid response"),
            approval::Delivery::OtherPrincipal => json_error_status(
                StatusCode::FORBIDDEN,
                None,
                jsonrpc::INVALID_REQUEST,
                "this answer is for a confirmation asked of another caller",
            ),
            approval::Delivery::NotWaiting => json_error_status(
                StatusCode::CONFLICT,
                None,
                jsonrpc::INVALID_REQUEST,
                "no confirmation with this id is waiting on this gateway replica: it was answered \
                 already, it timed out, or another replica asked it (several replicas need \
                 session affinity on Mcp-Session-Id)",
            ),
        }
    }

    /// A refused confirmation: the denial as a tool error, recorded.
    fn refused_now(
        self: Arc<Self>,
        call: DecidedCall,
        refusal: Refusal,
        round_trip_ms: Option<f64>,
    ) -> Response<GatewayBody> {
        let DecidedCall {
            msg,
            era,
            decision,
            mut log,
            span,
            ..
        } = call;
        let (denial, resp) = refusal_response(&msg, era, &decision, &span, &refusal);
        let mut record = AuditApproval::outcome(refusal.outcome());
        if round_trip_ms.is_some() {
            record.round_trip_ms = round_trip_ms;
            record.at = Some(crate::audit::rfc3339_now());
        }
        log.decision = denial;
        log.approval = Some(record);
        let gateway = self;
        tokio::spawn(async move { log.emit(&gateway).await });
        resp
    }

    /// The audit record of an accepted confirmation; the person's words pass the baseline
    /// redaction like arguments do.
    fn accepted(&self, answer: approval::Answer, round_trip_ms: Option<f64>) -> AuditApproval {
        let baseline = [crate::redact::BASELINE.to_owned()];
        let reason = self
            .redactor
            .redact_text(&answer.reason, &baseline)
            .0
            .into_owned();
        let mut fields = Value::Object(answer.fields);
        self.redactor
            .redact_value(&mut fields, &baseline, "$.approval.fields");
        AuditApproval {
            outcome: "accepted".into(),
            reason: Some(reason),
            fields: match fields {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            at: Some(crate::audit::rfc3339_now()),
            round_trip_ms,
        }
    }

    fn decide(&self, policy: &crate::policy::PolicyEngine, input: &PolicyInput) -> Decision {
        let _span = tracing::info_span!("decide", otel.kind = "internal").entered();
        let t = Instant::now();
        let mut d = policy.decide(input);
        metrics::global()
            .policy_eval_seconds
            .observe(t.elapsed().as_secs_f64());
        d.redact_reasons(&self.redactor);
        d
    }

    fn gateway_facts(&self) -> GatewayFacts {
        GatewayFacts {
            mode: self.config.policy.mode,
            upstream: self.config.upstream.url.clone(),
        }
    }

    /// Tool arguments with secrets removed, for the audit record.
    fn redacted_arguments(&self, input: &PolicyInput) -> Option<(Value, Vec<Redaction>)> {
        let tool = input.tool.as_ref()?;
        let mut args = tool.arguments.clone();
        let found =
            self.redactor
                .redact_value(&mut args, &["baseline".to_owned()], "$.params.arguments");
        Some((args, found))
    }

    /// With `audit.on_failure: fail_closed`, refuse work the audit trail cannot record.
    async fn audit_gate(&self, id: Option<&jsonrpc::Id>) -> Result<(), Response<GatewayBody>> {
        if self.audit.accepting() {
            return Ok(());
        }
        let body = jsonrpc::error_response(
            id,
            jsonrpc::AUDIT_UNAVAILABLE,
            "the audit trail is unavailable and this gateway is configured to fail closed",
            Some(serde_json::json!({"source": "gateway", "kind": "audit_unavailable"})),
        );
        Err(request_scoped_error(
            id.is_some(),
            StatusCode::SERVICE_UNAVAILABLE,
            &body,
        ))
    }

    fn pin_region(&self, msg: &mut Message) {
        if matches!(msg.kind, Kind::Response { .. }) {
            return;
        }
        match &self.operating_region {
            Some(region) => {
                let params = msg
                    .value
                    .entry("params")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(p) = params {
                    let meta = p
                        .entry("_meta")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(m) = meta {
                        m.insert("AWS_REGION".into(), Value::String(region.clone()));
                    }
                }
            }
            None => {
                if let Some(Value::Object(m)) =
                    msg.value.get_mut("params").and_then(|p| p.get_mut("_meta"))
                {
                    m.remove("AWS_REGION");
                }
            }
        }
    }

    /// What a caller without valid credentials gets: 401/403 with `WWW-Authenticate` naming
    /// the protected-resource metadata, counted by reason.
    pub(crate) fn unauthenticated(
        &self,
        headers: &HeaderMap,
        e: &crate::identity::AuthError,
    ) -> Response<GatewayBody> {
        metrics::global()
            .auth_failures_total
            .with_label_values(&[e.reason()])
            .inc();
        let meta = self.resource_metadata_url(headers);
        auth_challenge(&self.auth.challenge(e, &meta), e.status(), &e.to_string())
    }

    fn resource_metadata_url(&self, headers: &HeaderMap) -> String {
        let host = mcp::header_str(headers, "host").unwrap_or("localhost");
        format!(
            "http://{host}/.well-known/oauth-protected-resource{}",
            self.config.mcp_path
        )
    }
}

/// What happened to one request, accumulated along the way and emitted once as an audit
/// record when the response (or its stream) is finished.
pub struct RequestLog {
    /// Shared with the relay: the document the policy evaluated, never copied per stage.
    pub input: Arc<PolicyInput>,
    pub decision: Decision,
    pub mode: PolicyMode,
    /// The revision of the policy that decided (a hot reload may swap it before the record
    /// is written).
    pub policy_revision: String,
    pub started: Instant,
    pub arguments: Option<(Value, Vec<Redaction>)>,
    pub redactions: Vec<Redaction>,
    pub upstream_status: Option<u16>,
    pub upstream_latency: Option<Duration>,
    pub error: Option<String>,
    /// The raw session id; only its hash reaches the audit record.
    pub session_id: Option<String>,
    /// When the policy asked for the person's confirmation: what came of it.
    pub approval: Option<AuditApproval>,
}

impl RequestLog {
    fn new(
        input: Arc<PolicyInput>,
        decision: &Decision,
        mode: PolicyMode,
        started: Instant,
        policy_revision: &str,
    ) -> Self {
        RequestLog {
            input,
            decision: decision.clone(),
            mode,
            policy_revision: policy_revision.to_owned(),
            started,
            arguments: None,
            redactions: Vec::new(),
            upstream_status: None,
            upstream_latency: None,
            error: None,
            session_id: None,
            approval: None,
        }
    }

    /// The decision label used in metrics: allow, deny, dry_run_deny, confirm (the question
    /// went to the person), error.
    pub fn decision_label(&self) -> &'static str {
        if self.approval.as_ref().is_some_and(|a| a.outcome == "asked") {
            return "confirm";
        }
        match (self.decision.allow, self.mode) {
            (true, _) => "allow",
            (false, PolicyMode::Enforce) => "deny",
            (false, PolicyMode::DryRun) => "dry_run_deny",
        }
    }

    async fn emit(self, gw: &Gateway) {
        let m = metrics::global();
        let tool = self.input.tool.as_ref();
        let tool_label = tool
            .map(|t| metrics::tool_label(&t.name, t.known))
            .unwrap_or("");
        let decision = if self.error.is_some() && self.decision.allow {
            "error"
        } else {
            self.decision_label()
        };
        m.requests_total
            .with_label_values(&[self.input.mcp.method.as_str(), tool_label, decision])
            .inc();
        let policy = gw.policy.current();
        for group in group_labels(&policy, &self.input.principal) {
            m.group_requests_total
                .with_label_values(&[group, decision])
                .inc();
        }
        if !self.decision.allow {
            for rule in &self.decision.rules {
                m.denials_total.with_label_values(&[rule.as_str()]).inc();
            }
        }
        for r in &self.redactions {
            m.redactions_total.with_label_values(&[r.detector]).inc();
        }
        if let Some(a) = &self.approval {
            m.approvals_total
                .with_label_values(&[a.outcome.as_str()])
                .inc();
        }
        m.mcp_server_operation_duration_seconds
            .with_label_values(&[
                self.input.mcp.method.as_str(),
                self.error.as_deref().unwrap_or(""),
            ])
            .observe(self.started.elapsed().as_secs_f64());
        let outcome = crate::audit::RequestOutcome {
            input: &self.input,
            decision: &self.decision,
            mode: self.mode,
            started: self.started,
            arguments: self.arguments.as_ref(),
            redactions: &self.redactions,
            upstream_status: self.upstream_status,
            upstream_latency: self.upstream_latency,
            error: self.error.as_deref(),
            session_id: self.session_id.as_deref(),
            approval: self.approval.as_ref(),
        };
        if let Err(e) = gw
            .audit
            .record_outcome(&outcome, &self.policy_revision)
            .await
        {
            tracing::error!(error = %e, "audit record could not be written");
        }
    }
}

/// Per-request state of the response relay: what to redact, whether to filter tools/list,
/// and the audit log that is emitted when the last message has gone to the client.
#[derive(Clone)]
struct Relay {
    gateway: Arc<Gateway>,
    request_id: Option<jsonrpc::Id>,
    method: String,
    profiles: Vec<String>,
    filter_tools: bool,
    /// The answer is a whole `tools/list` (first page) to compare with the catalogue.
    observe_tools: bool,
    stateless: bool,
    input: Arc<PolicyInput>,
    /// Taken exactly once, when the request is finished (or abandoned by the client).
    log: Arc<LogSlot>,
    /// The caller's admission (`limits`): counted in flight until the last clone drops.
    caller: Option<Arc<CallerPermit>>,
}

/// Holds a request's log until it is emitted. If the request is abandoned (the client went
/// away and hyper dropped the future or the stream), the last drop still emits it, so every
/// request leaves exactly one audit record.
struct LogSlot {
    gateway: Arc<Gateway>,
    log: Mutex<Option<RequestLog>>,
}

impl LogSlot {
    fn new(gateway: Arc<Gateway>, log: RequestLog) -> Arc<Self> {
        Arc::new(LogSlot {
            gateway,
            log: Mutex::new(Some(log)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RequestLog>> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for LogSlot {
    fn drop(&mut self) {
        if let Some(mut log) = self.lock().take() {
            if log.error.is_none() {
                log.error = Some("client_disconnected".into());
            }
            let gateway = self.gateway.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { log.emit(&gateway).await });
            }
        }
    }
}

impl Relay {
    fn with_log(&self, f: impl FnOnce(&mut RequestLog)) {
        if let Some(log) = self.log.lock().as_mut() {
            f(log);
        }
    }

    /// Charge result bytes to the caller's byte budget (tools in `gateway.limits.byte_tools`).
    fn charge_bytes(&self, n: usize) {
        if let Some(c) = &self.caller {
            c.charge_bytes(n);
        }
    }

    fn set_error(&self, kind: &str) {
        self.with_log(|l| l.error = Some(kind.to_owned()));
    }

    /// Emit the audit record and metrics for this request, once.
    async fn complete(self, status: Option<u16>) {
        let taken = self.log.lock().take();
        if let Some(mut log) = taken {
            if status.is_some() {
                log.upstream_status = status;
            }
            log.emit(&self.gateway).await;
        }
    }

    /// An upstream failure becomes a JSON-RPC error for the client.
    async fn fail(self, err: UpstreamError) -> Response<GatewayBody> {
        tracing::warn!(method = %self.method, error = %err, "upstream request failed");
        telemetry::record_error(
            &tracing::Span::current(),
            err.kind(),
            Some(err.code()),
            &err.to_string(),
        );
        self.set_error(err.kind());
        let body = err.to_jsonrpc(self.request_id.as_ref());
        let has_id = self.request_id.is_some();
        let status = match err {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Status { status: 429, .. } | UpstreamError::Throttled { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            UpstreamError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        self.complete(None).await;
        request_scoped_error(has_id, status, &body)
    }

    /// Redact and filter one upstream JSON payload (a single message).
    ///
    /// When nothing was redacted or filtered and the bytes are a faithful spelling of the
    /// value the gateway inspected (no repeated keys, integers only: see
    /// `jsonrpc::parse_value_faithful`), the client gets the upstream's bytes as they came:
    /// every JSON parser reads them as the value that was inspected. Otherwise the value is
    /// written out again, so a repeated key reaches the client once, as the gateway read it.
    fn process_payload(&self, bytes: &Bytes) -> Result<Bytes, UpstreamError> {
        relay_payload(bytes, |value| self.process_message(value))
    }

    /// redact / filter: one JSON-RPC message on its way to the client. Returns whether the
    /// message may have changed (`false` means it is exactly as it came). The redactor
    /// reports every change it makes, so no redaction means no change.
    fn process_message(&self, msg: &mut Value) -> bool {
        if msg.get("method").and_then(Value::as_str) == Some("notifications/tools/list_changed") {
            self.gateway.upstream.tools().request_refresh();
        }
        let is_our_response = self.request_id.is_some()
            && msg.get("id") == self.request_id.as_ref()
            && msg.get("method").is_none();
        if is_our_response && self.observe_tools {
            self.observe_tools_list(msg);
        }
        let filtered = is_our_response && self.filter_tools;
        if filtered {
            self.filter_tools_list(msg);
        }
        let found = self.gateway.redactor.redact_message(msg, &self.profiles);
        let redacted = !found.is_empty();
        if redacted {
            self.with_log(|l| l.redactions.extend(found));
        }
        filtered || redacted
    }

    /// A whole `tools/list` answer, before any filtering, goes to drift detection.
    fn observe_tools_list(&self, msg: &Value) {
        let Some(result) = msg.get("result") else {
            return;
        };
        if result.get("nextCursor").is_some_and(|c| !c.is_null()) {
            return;
        }
        if let Some(Value::Array(tools)) = result.get("tools") {
            self.gateway.upstream.tools().observe(tools.clone());
        }
    }

    /// Remove the tools this principal may never call; mark a stateless result private.
    fn filter_tools_list(&self, msg: &mut Value) {
        let policy = self.gateway.policy.current();
        let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(Value::Array(tools)) = result.get_mut("tools") {
            let names: Vec<String> = tools
                .iter()
                .map(|t| {
                    t.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            // One input document and one engine for the whole list; a tool without a plain
            // string name is never shown.
            let visible = policy.visible_tools(&self.input, names.iter().map(String::as_str));
            let mut keep = names.iter().zip(visible).map(|(n, v)| v && !n.is_empty());
            tools.retain(|_| keep.next().unwrap_or(false));
        }
        if self.stateless {
            result.insert("cacheScope".into(), Value::String("private".into()));
        }
    }

    /// Relay an SSE response: one event in, one (redacted) event out, never the whole stream
    /// in memory. Dropping the returned body (client gone) drops the upstream body, which
    /// closes the upstream connection and so cancels the upstream request.
    fn sse_stream(self, upstream: UpstreamBody, permit: Slot) -> GatewayBody {
        let max = self.gateway.config.upstream.max_message_bytes;
        let idle = self.gateway.config.upstream.idle_timeout;
        let stream_guard = StreamGuard::new();
        // A GET stream may stay open for hours with nothing to relay; it is bounded by
        // limits.max_sse_streams (front/streams.rs), so once established it gives its request
        // slot back: open streams never starve calls of slots. A streamed answer to a POST
        // keeps its slot until the answer ends.
        let slot = (self.method != METHOD_GET_STREAM).then_some(permit);
        let state = SseState {
            relay: self,
            upstream,
            parser: SseParser::new(max),
            done: false,
            answered: false,
            _permits: (slot, stream_guard),
        };
        let stream = futures_util::stream::unfold(state, move |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                let frame = match tokio::time::timeout(idle, st.upstream.frame()).await {
                    Err(_) => Err(UpstreamError::Timeout(idle)),
                    Ok(None) => {
                        st.done = true;
                        st.parser.finish();
                        let tail = st.end_of_stream();
                        st.relay.clone().complete(None).await;
                        return tail.map(|b| (Ok::<_, Infallible>(Frame::data(b)), st));
                    }
                    Ok(Some(Err(e))) => Err(UpstreamError::Interrupted(e.to_string())),
                    Ok(Some(Ok(f))) => Ok(f),
                };
                let chunk = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    // A server stream (GET) with nothing to relay is normal, not a failure:
                    // after upstream.idle_timeout it ends quietly and the client reopens it.
                    Err(UpstreamError::Timeout(_)) if st.relay.method == METHOD_GET_STREAM => {
                        st.done = true;
                        tracing::debug!("ended a GET stream quiet for upstream.idle_timeout");
                        st.relay.clone().complete(None).await;
                        return None;
                    }
                    Err(e) => {
                        st.done = true;
                        st.relay.set_error(e.kind());
                        let tail = st.error_event(&e);
                        st.relay.clone().complete(None).await;
                        return tail.map(|b| (Ok(Frame::data(b)), st));
                    }
                };
                st.relay.charge_bytes(chunk.len());
                let items = match st.parser.push(&chunk) {
                    Ok(items) => items,
                    Err(e) => {
                        st.done = true;
                        let err = UpstreamError::BadResponse(e.to_string());
                        st.relay.set_error(err.kind());
                        let tail = st.error_event(&err);
                        st.relay.clone().complete(None).await;
                        return tail.map(|b| (Ok(Frame::data(b)), st));
                    }
                };
                if items.is_empty() {
                    continue;
                }
                let mut out = Vec::new();
                for item in items {
                    let size = match &item {
                        SseItem::Event(ev) => ev.data.len(),
                        SseItem::Comment(c) => c.len(),
                    };
                    if size < st.relay.gateway.config.limits.inspect_offload_bytes {
                        let mut answered = false;
                        out.extend_from_slice(&relay_sse_item(&st.relay, &mut answered, item));
                        st.answered |= answered;
                        continue;
                    }
                    let relay = st.relay.clone();
                    let inspected = st
                        .relay
                        .gateway
                        .inspect(size, move || {
                            let mut answered = false;
                            let bytes = relay_sse_item(&relay, &mut answered, item);
                            (bytes, answered)
                        })
                        .await;
                    match inspected {
                        Ok((bytes, answered)) => {
                            st.answered |= answered;
                            out.extend_from_slice(&bytes);
                        }
                        // Never relay what was not redacted: the stream ends here.
                        Err(InspectTimeout) => {
                            st.done = true;
                            let err = UpstreamError::BadResponse(format!(
                                "the gateway could not redact a {size} byte event within \
                                 limits.inspect_timeout; the stream was ended"
                            ));
                            st.relay.set_error(err.kind());
                            if let Some(tail) = st.error_event(&err) {
                                out.extend_from_slice(&tail);
                            }
                            st.relay.clone().complete(None).await;
                            return Some((Ok(Frame::data(Bytes::from(out))), st));
                        }
                    }
                }
                return Some((Ok(Frame::data(Bytes::from(out))), st));
            }
        });
        StreamBody::new(stream).boxed_unsync()
    }
}

struct SseState {
    relay: Relay,
    upstream: UpstreamBody,
    parser: SseParser,
    done: bool,
    /// The final response to our request has been relayed.
    answered: bool,
    _permits: (Option<Slot>, StreamGuard),
}

impl SseState {
    fn end_of_stream(&mut self) -> Option<Bytes> {
        if self.relay.request_id.is_some() && !self.answered {
            let err = UpstreamError::Interrupted("the stream ended without a response".into());
            self.relay.set_error(err.kind());
            return self.error_event(&err);
        }
        None
    }

    fn error_event(&mut self, err: &UpstreamError) -> Option<Bytes> {
        tracing::warn!(method = %self.relay.method, error = %err, "upstream stream failed");
        if self.relay.request_id.is_none() || self.answered {
            return None;
        }
        self.answered = true;
        let body = err.to_jsonrpc(self.relay.request_id.as_ref());
        let ev = sse::message_event(body.to_string(), None);
        Some(sse::encode_event(&ev))
    }
}

/// redact / filter one SSE item on its way to the client; `answered` is set when it carries
/// the final response to the request.
fn relay_sse_item(relay: &Relay, answered: &mut bool, item: SseItem) -> Bytes {
    match item {
        SseItem::Comment(c) => sse::encode_comment(&c),
        SseItem::Event(mut ev) => {
            if ev.has_data && !ev.data.is_empty() {
                let is_json = relay_event_data(&mut ev.data, |msg| {
                    if relay.request_id.is_some()
                        && msg.get("id") == relay.request_id.as_ref()
                        && msg.get("method").is_none()
                    {
                        *answered = true;
                    }
                    relay.process_message(msg)
                });
                if !is_json {
                    // Not JSON: still never let a secret through as plain text.
                    let (text, found) = relay
                        .gateway
                        .redactor
                        .redact_text(&ev.data, &relay.profiles);
                    let text = text.into_owned();
                    if !found.is_empty() {
                        relay.with_log(|l| l.redactions.extend(found));
                    }
                    ev.data = text;
                }
            }
            sse::encode_event(&ev)
        }
    }
}

/// The response path for one upstream JSON message, without the request around it: parse
/// it faithfully, let `inspect` filter and redact the value (returning whether it changed),
/// and answer the upstream's own bytes when nothing changed and they read back as the value
/// that was inspected (no repeated keys, integers only: see `jsonrpc::parse_value_faithful`);
/// otherwise the value is written out again, so a repeated key reaches the client once, as
/// the gateway read it. `Relay::process_payload` is this with the request's filter and
/// redaction; the relay bench calls it directly, so its figure is this code's.
pub fn relay_payload(
    bytes: &Bytes,
    inspect: impl FnOnce(&mut Value) -> bool,
) -> Result<Bytes, UpstreamError> {
    let (mut value, faithful) = jsonrpc::parse_value_faithful(bytes)
        .map_err(|e| UpstreamError::BadResponse(format!("body is not JSON: {e}")))?;
    let changed = inspect(&mut value);
    if faithful && !changed {
        return Ok(bytes.clone());
    }
    // Sized for the usual case (about what came in) so the output is not regrown and copied
    // at every doubling.
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 64);
    serde_json::to_writer(&mut out, &value).expect("JSON value serialises");
    Ok(Bytes::from(out))
}

/// The same for the data of one SSE event, in place. Returns `false` (data untouched) when
/// the data is not JSON, for the caller to treat as text.
pub fn relay_event_data(data: &mut String, inspect: impl FnOnce(&mut Value) -> bool) -> bool {
    let Ok((mut msg, faithful)) = jsonrpc::parse_value_str_faithful(data) else {
        return false;
    };
    let changed = inspect(&mut msg);
    if changed || !faithful {
        *data = serde_json::to_string(&msg).expect("JSON value serialises");
    }
    true
}

/// Keeps the open-SSE-stream gauge right however a stream ends (GET streams and streamed
/// POST responses alike).
struct StreamGuard;

impl StreamGuard {
    fn new() -> Self {
        metrics::global().open_sse_streams.inc();
        StreamGuard
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::global().open_sse_streams.dec();
    }
}

/// When the client carried trace context in `params._meta`, the upstream gets the gateway's
/// own span there instead (a gateway-owned field, like `AWS_REGION`), so the trace stays one
/// chain. Headers carry it in every case.
fn propagate_trace_in_meta(msg: &mut Message, span: &tracing::Span) {
    if let Some(Value::Object(meta)) = msg.value.get_mut("params").and_then(|p| p.get_mut("_meta"))
        && meta.contains_key("traceparent")
    {
        meta.remove("tracestate");
        telemetry::inject_meta(span, meta);
    }
}

/// A call held at the gateway by the upstream's state, as the error the client gets.
fn held(hold: crate::forward::protection::Hold) -> UpstreamError {
    use crate::forward::protection::Hold;
    let (reason, err) = match hold {
        Hold::Throttled(retry_after) => ("throttled", UpstreamError::Throttled { retry_after }),
        Hold::Open {
            failures,
            retry_after,
        } => (
            "circuit_open",
            UpstreamError::CircuitOpen {
                failures,
                retry_after,
            },
        ),
    };
    metrics::global()
        .upstream_held_total
        .with_label_values(&[reason])
        .inc();
    err
}

/// What an exchange tells the circuit breaker and the shared throttle.
fn breaker_outcome(
    result: &Result<Response<crate::forward::UpstreamBody>, UpstreamError>,
) -> crate::forward::protection::Outcome {
    use crate::forward::protection::Outcome;
    match result {
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => Outcome::Throttled(
            mcp::header_str(r.headers(), "retry-after").and_then(|v| v.trim().parse().ok()),
        ),
        Ok(r) if r.status().is_server_error() => Outcome::Failed,
        Ok(_) => Outcome::Answered,
        Err(_) => Outcome::Failed,
    }
}

/// The wait before retry number `n` (1-based): `base` doubled per retry, with jitter
/// (between half and the full figure) so callers retrying together spread out.
fn retry_backoff(base: Duration, n: u32) -> Duration {
    let full = base.saturating_mul(1 << n.saturating_sub(1).min(10));
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// A copy of the unsigned request head, for one attempt.
fn clone_parts(p: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::builder()
        .method(p.method.clone())
        .uri(p.uri.clone())
        .version(p.version)
        .body(())
        .expect("request parts are valid");
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// Upstream statuses that become gateway errors rather than being relayed. Other 4xx
/// answers (400 header mismatch, 404 unknown session, 405 no GET stream) are protocol
/// answers the client must see as they are.
fn is_error_status(status: u16) -> bool {
    matches!(status, 401 | 403 | 429 | 500..=599)
}

fn upstream_status_error(status: u16, headers: &HeaderMap, body: &[u8]) -> UpstreamError {
    let retry_after = mcp::header_str(headers, "retry-after").map(str::to_owned);
    match status {
        401 | 403 => {
            metrics::global().upstream_auth_failures_total.inc();
            let hint = crate::sign::classify_upstream_auth_failure(status, headers, body).unwrap_or_else(|| {
                "the upstream refused the gateway's identity; check the gateway's AWS credentials and IAM permissions (eks-mcp:InvokeMcp, eks-mcp:CallReadOnlyTool, eks-mcp:CallPrivilegedTool)".to_owned()
            });
            UpstreamError::Auth { status, hint }
        }
        429 => UpstreamError::Status {
            status,
            detail: ": rate limited, retry later".into(),
            retry_after,
        },
        _ => UpstreamError::Status {
            status,
            detail: String::new(),
            retry_after,
        },
    }
}

/// `input.client` from `initialize` or from the stateless `_meta`.
fn client_info(msg: &Message) -> ClientInfo {
    let info = msg
        .params()
        .and_then(|p| p.get("clientInfo"))
        .or_else(|| msg.meta().and_then(|m| m.get(mcp::META_CLIENT_INFO)));
    let field = |k: &str| {
        info.and_then(|i| i.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ClientInfo {
        name: field("name"),
        version: field("version"),
    }
}

/// A request the policy has decided, with everything needed to carry it out.
struct DecidedCall {
    client_headers: HeaderMap,
    msg: Message,
    method: String,
    era: Era,
    input: Arc<PolicyInput>,
    decision: Decision,
    log: RequestLog,
    span: tracing::Span,
    policy: Arc<crate::policy::PolicyEngine>,
}

/// A question the gateway waits for; forgotten however the wait ends.
struct Question {
    gateway: Arc<Gateway>,
    id: String,
}

impl Drop for Question {
    fn drop(&mut self) {
        self.gateway.approvals.forget(&self.id);
    }
}

/// A call waiting for the person's answer. If the client goes away meanwhile, its audit
/// record is still written (error `client_disconnected`).
struct HeldCall {
    gateway: Arc<Gateway>,
    call: Option<DecidedCall>,
}

impl Drop for HeldCall {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let mut log = call.log;
            log.error = Some("client_disconnected".into());
            let gateway = self.gateway.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { log.emit(&gateway).await });
            }
        }
    }
}

/// One response of the gateway as frames of an SSE stream: an SSE body as it is, a JSON
/// body as one `message` event, an empty body as nothing.
async fn as_sse_frames(resp: Response<GatewayBody>) -> SseFrames {
    let is_sse = mcp::header_str(resp.headers(), "content-type")
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = resp.into_body();
    if is_sse {
        return Box::pin(http_body_util::BodyStream::new(body));
    }
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    if bytes.is_empty() {
        return Box::pin(futures_util::stream::empty());
    }
    let event = sse::message_event(String::from_utf8_lossy(&bytes).into_owned(), None);
    Box::pin(futures_util::stream::iter([Ok(Frame::data(
        sse::encode_event(&event),
    ))]))
}

type SseFrames =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// What the confirmation step decided for one tools/call.
enum ConfirmStep {
    /// Go on upstream with this record of the approval.
    Forward(AuditApproval),
    /// Answer the client now (the question itself) without forwarding.
    Answer(Response<GatewayBody>, AuditApproval),
    /// Session era: ask with `elicitation/create` on the response stream and wait.
    AskInSession,
    /// Deny with this refusal's rule.
    Refuse(Refusal, AuditApproval),
}

fn refuse(r: Refusal) -> ConfirmStep {
    let record = AuditApproval::outcome(r.outcome());
    ConfirmStep::Refuse(r, record)
}

/// A refused confirmation: the decision recorded (a deny by the refusal's rule) and the tool
/// error the client gets.
fn refusal_response(
    msg: &Message,
    era: Era,
    allowed: &Decision,
    span: &tracing::Span,
    r: &Refusal,
) -> (Decision, Response<GatewayBody>) {
    let denial = Decision {
        allow: false,
        reasons: vec![r.reason()],
        redact: allowed.redact.clone(),
        rules: vec![r.rule().to_owned()],
        role: None,
        confirm: None,
    };
    telemetry::record_error(
        span,
        "confirmation_refused",
        Some(jsonrpc::POLICY_DENIED),
        &denial_text(&denial),
    );
    let resp = deny_response(msg, &denial, era);
    (denial, resp)
}

/// Remove the gateway's own answer and state from a confirmed retry: the upstream gets the
/// call as the person confirmed it, and never the gateway's sealed state.
fn strip_gateway_input(msg: &mut Message) {
    let Some(Value::Object(params)) = msg.value.get_mut("params") else {
        return;
    };
    params.remove("requestState");
    let empty = match params.get_mut("inputResponses") {
        Some(Value::Object(r)) => {
            r.remove(approval::INPUT_KEY);
            r.is_empty()
        }
        _ => false,
    };
    if empty {
        params.remove("inputResponses");
    }
}

/// What a denied request gets: a tool error the model can read for tools/call, a JSON-RPC
/// error with an application code otherwise. In the stateless era a result names its
/// `resultType` (clients of 2026-07-28 refuse a `CallToolResult` without it).
fn deny_response(msg: &Message, decision: &Decision, era: Era) -> Response<GatewayBody> {
    let text = denial_text(decision);
    match (&msg.kind, msg.method()) {
        (Kind::Request { id, .. }, Some("tools/call")) => {
            let mut result = serde_json::json!({
                "content": [{"type": "text", "text": text}],
                "isError": true,
                "_meta": {"io.github.eks-mcp-gateway/denial": denial_data(decision)},
            });
            if era == Era::Stateless {
                result["resultType"] = serde_json::json!("complete");
            }
            json_response(StatusCode::OK, &jsonrpc::result_response(id, result))
        }
        (Kind::Request { id, .. }, _) => json_response(
            StatusCode::OK,
            &jsonrpc::error_response(
                Some(id),
                jsonrpc::POLICY_DENIED,
                &text,
                Some(denial_data(decision)),
            ),
        ),
        _ => json_response(
            StatusCode::FORBIDDEN,
            &jsonrpc::error_response(
                None,
                jsonrpc::POLICY_DENIED,
                &text,
                Some(denial_data(decision)),
            ),
        ),
    }
}

fn denial_text(decision: &Decision) -> String {
    if decision.reasons.is_empty() {
        "Denied by the gateway policy.".to_owned()
    } else {
        format!(
            "Denied by the gateway policy: {}",
            decision.reasons.join("; ")
        )
    }
}

fn denial_data(decision: &Decision) -> Value {
    serde_json::json!({"source": "policy", "reasons": decision.reasons, "rules": decision.rules})
}

/// The `group` metric labels of a caller: the groups of the policy data it is in, or
/// `other` when none (so callers cannot create label values).
fn group_labels<'a>(
    policy: &crate::policy::PolicyEngine,
    principal: &'a Principal,
) -> Vec<&'a str> {
    let known: Vec<&str> = principal
        .groups
        .iter()
        .filter(|g| policy.groups().contains(*g))
        .map(String::as_str)
        .collect();
    if known.is_empty() {
        vec![metrics::OTHER_GROUP]
    } else {
        known
    }
}

/// A call refused by the caller's own limits: the gateway's rate-limit error with
/// `retry_after` (seconds), distinct from the upstream's 429 (`UPSTREAM_RATE_LIMITED`).
fn rate_limited(
    id: Option<&jsonrpc::Id>,
    limited: &crate::limits::Limited,
) -> Response<GatewayBody> {
    let secs = limited.retry_after.as_secs_f64();
    let body = jsonrpc::error_response(
        id,
        jsonrpc::RATE_LIMITED,
        &limited.message(),
        Some(serde_json::json!({
            "source": "gateway",
            "kind": "rate_limited",
            "limit": limited.kind.label(),
            "class": limited.class.label(),
            "retry_after": (secs * 1000.0).ceil() / 1000.0,
        })),
    );
    let mut resp = request_scoped_error(id.is_some(), StatusCode::TOO_MANY_REQUESTS, &body);
    let header = (secs.ceil() as u64).max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&header) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

/// A gateway error for a request with an id travels as a JSON-RPC error in a 200 response,
/// so MCP clients hand it to the caller; without an id, the HTTP status carries it.
fn request_scoped_error(has_id: bool, status: StatusCode, body: &Value) -> Response<GatewayBody> {
    let mut resp = json_response(if has_id { StatusCode::OK } else { status }, body);
    if let Some(kind) = body.pointer("/error/data/kind").and_then(Value::as_str)
        && let Ok(v) = HeaderValue::from_str(kind)
    {
        resp.headers_mut().insert("x-mcp-gateway-error", v);
    }
    resp
}

fn is_json_content_type(h: &HeaderMap) -> bool {
    mcp::header_str(h, "content-type")
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    mcp::header_str(h, "content-length").and_then(|v| v.parse().ok())
}

fn host_header_value(authority: &http::uri::Authority, scheme: Option<&str>) -> String {
    match (authority.port_u16(), scheme) {
        (Some(443), Some("https")) | (Some(80), Some("http")) => authority.host().to_owned(),
        _ => authority.as_str().to_owned(),
    }
}

enum BodyError {
    TooLarge,
    TooSlow { received: usize },
    Read(hyper::Error),
}

/// Read a request body of at most `max` bytes that keeps up with the body deadline: it must
/// be complete within `limits.body_read_timeout`, extended by one second per
/// `limits.body_min_rate` bytes received. A body trickled a byte at a time is cut off.
async fn read_body(
    mut body: Incoming,
    max: usize,
    limits: &crate::config::LimitsConfig,
) -> Result<Bytes, BodyError> {
    let started = tokio::time::Instant::now();
    let mut buf = bytes::BytesMut::new();
    loop {
        let earned = Duration::from_secs_f64(buf.len() as f64 / limits.body_min_rate as f64);
        let deadline = started + limits.body_read_timeout + earned;
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(BodyError::TooSlow {
                    received: buf.len(),
                });
            }
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Read(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
}

fn too_large(max: usize) -> Response<GatewayBody> {
    json_error_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
        jsonrpc::INVALID_REQUEST,
        &format!(
            "request body larger than the gateway's limit of {max} bytes (limits.max_body_bytes)"
        ),
    )
}

/// 503 with `Retry-After: 1` from one of the front's limits (`limit` as in
/// `mcp_gateway_requests_refused_total`), counted.
pub(crate) fn overloaded(limit: &'static str, why: &str) -> Response<GatewayBody> {
    debug_assert!(metrics::REFUSAL_LIMITS.contains(&limit), "{limit}");
    metrics::global()
        .requests_refused_total
        .with_label_values(&[limit])
        .inc();
    let mut r = json_error_status(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        jsonrpc::INTERNAL_ERROR,
        &format!("gateway overloaded: {why}; retry shortly"),
    );
    r.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    r
}

fn auth_challenge(www_authenticate: &str, status: u16, message: &str) -> Response<GatewayBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = json_error_status(status, None, jsonrpc::INVALID_REQUEST, message);
    if let Ok(v) = HeaderValue::from_str(www_authenticate) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
    }
    r
}

pub fn json_error_status(
    status: StatusCode,
    id: Option<&jsonrpc::Id>,
    code: i64,
    message: &str,
) -> Response<GatewayBody> {
    json_response(status, &jsonrpc::error_response(id, code, message, None))
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(full(Bytes::from(
            serde_json::to_vec(body).expect("JSON value serialises"),
        )))
        .expect("valid response")
}

pub fn plain_status(status: StatusCode, text: &str) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(format!("{text}\n"))))
        .expect("valid response")
}

pub fn full(b: Bytes) -> GatewayBody {
    Full::new(b).boxed_unsync()
}

pub fn empty() -> GatewayBody {
    http_body_util::Empty::new().boxed_unsync()
}
