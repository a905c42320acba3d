//! Routes: which requests are for the MCP endpoint at all.
//!
//! The operational endpoints (`/healthz`, `/readyz`, `/metrics`) sit outside every other
//! layer (kubelet probes by pod IP, so no Host check; never limited, so a busy replica still
//! reports). On the MCP listener the OAuth protected-resource metadata is served after the
//! Host check, any other path gets 404 and `OPTIONS` (a browser preflight) 405; only
//! requests for the MCP path go further in.
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response, StatusCode};
use tower::Service;
use tower::layer::{Layer, layer_fn};

use super::stack::{Answer, Next, answer, pass, ready};
use crate::mcp;
use crate::pipeline::{Gateway, GatewayBody, full, json_response, plain_status};

/// Serve the operational endpoints; everything else goes to `inner`.
pub(super) fn ops<S>(gateway: Arc<Gateway>, inner: S) -> OpsEndpoints<S> {
    OpsEndpoints { inner, gateway }
}

#[derive(Clone)]
pub(super) struct OpsEndpoints<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S, B> Service<Request<B>> for OpsEndpoints<S>
where
    S: Next<Request<B>>,
    B: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, req: Request<B>) -> Answer {
        match req.uri().path() {
            "/healthz" => answer(plain_status(StatusCode::OK, "ok")),
            "/readyz" => answer(readiness(&self.gateway)),
            "/metrics" => answer(
                Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(full(crate::metrics::render().into()))
                    .expect("valid response"),
            ),
            _ => pass(&self.inner, req),
        }
    }
}

/// The end of the operational listener: nothing else lives there.
#[derive(Clone, Copy)]
pub(super) struct NotFound;

impl<B> Service<Request<B>> for NotFound {
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, _: Request<B>) -> Answer {
        answer(plain_status(StatusCode::NOT_FOUND, "not found"))
    }
}

/// Answer the metadata document, 404 and `OPTIONS`; hand requests for the MCP path on.
pub(super) fn mcp_layer<S>(gateway: Arc<Gateway>) -> impl Layer<S, Service = McpRoutes<S>> + Clone {
    layer_fn(move |inner: S| McpRoutes {
        inner,
        gateway: gateway.clone(),
    })
}

#[derive(Clone)]
pub(super) struct McpRoutes<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S, B> Service<Request<B>> for McpRoutes<S>
where
    S: Next<Request<B>>,
    B: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, req: Request<B>) -> Answer {
        let gw = &self.gateway;
        let path = req.uri().path();
        if path.starts_with("/.well-known/oauth-protected-resource") {
            let resource = format!(
                "http://{}{}",
                mcp::header_str(req.headers(), "host").unwrap_or("localhost"),
                gw.config.mcp_path
            );
            return answer(match gw.auth.protected_resource_metadata(&resource) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => plain_status(StatusCode::NOT_FOUND, "this gateway does not use OAuth"),
            });
        }
        if path != gw.config.mcp_path {
            return answer(plain_status(
                StatusCode::NOT_FOUND,
                "not found: the MCP endpoint is elsewhere",
            ));
        }
        if req.method() == Method::OPTIONS {
            return answer(plain_status(
                StatusCode::METHOD_NOT_ALLOWED,
                "use POST, GET or DELETE",
            ));
        }
        pass(&self.inner, req)
    }
}

/// `/readyz`: every component that must work for this replica to serve traffic.
fn readiness(gw: &Gateway) -> Response<GatewayBody> {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut check = |name: &str, ok: bool, detail: String| {
        ready &= ok;
        checks.insert(name.into(), serde_json::json!({"ok": ok, "detail": detail}));
    };
    if gw.is_draining() {
        check(
            "shutdown",
            false,
            "shutting down: finishing in-flight requests, taking no new traffic".into(),
        );
    }
    let revision = gw.policy.current().revision().to_owned();
    match gw.policy.last_reload_error() {
        // The previous policy stays in force, so the replica still serves safely; the
        // broken file is reported here, in the logs and in policy_reloads_total.
        Some(err) => check(
            "policy",
            true,
            format!("serving revision {revision}; the newest policy files failed to load: {err}"),
        ),
        None => check("policy", true, format!("revision {revision}")),
    }
    if let Some(signer) = &gw.signer {
        let h = signer.health();
        check("credentials", h.is_ready(), h.message());
    }
    let (ok, detail) = gw.auth.readiness();
    check("auth", ok, detail);
    let (ok, detail) = gw.audit.readiness();
    check("audit", ok, detail);
    let (ok, detail) = gw.upstream.reachability();
    check("upstream", ok, detail);
    // Drift is reported, never a reason to stop serving (it cannot loosen a decision).
    check("catalogue", true, gw.upstream.tools().readiness());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &serde_json::json!({
            "ready": ready,
            "version": crate::VERSION,
            "policy_revision": revision,
            "checks": checks,
        }),
    )
}
