//! front: the HTTP listeners, DNS-rebinding protection and graceful shutdown.
//!
//! Accepts connections (HTTP/1.1 and h2c, TCP_NODELAY, header read timeout), checks `Host`
//! and `Origin` before anything else runs, routes `/mcp` to the pipeline and serves the
//! operational endpoints (`/healthz`, `/readyz`, `/metrics`, protected-resource metadata).
//! On shutdown it stops accepting, lets in-flight requests finish within the configured
//! grace period, then closes what is left.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::{Config, SecurityConfig, is_loopback_host};
use crate::mcp;
use crate::pipeline::{Gateway, GatewayBody, full, json_error_status, json_response, plain_status};

/// Which routes a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// MCP endpoint, plus operational endpoints when no separate metrics listener exists.
    Mcp { with_ops: bool },
    /// Operational endpoints only.
    Ops,
}

/// Serve `listener` until `shutdown` resolves, then drain within `limits.shutdown_grace`.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    role: Role,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gateway.config.limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let gw = gateway.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let gw = gw.clone();
            async move { Ok::<_, Infallible>(route(gw, req, peer, local, role).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(tcp), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = gateway.config.limits.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period elapsed; closing remaining connections");
    }
    Ok(())
}

pub(crate) async fn route(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    role: Role,
) -> Response<GatewayBody> {
    let path = req.uri().path().to_owned();
    let ops = matches!(role, Role::Ops | Role::Mcp { with_ops: true });
    if ops {
        match path.as_str() {
            "/healthz" => return plain_status(StatusCode::OK, "ok"),
            "/readyz" => return readiness(&gw),
            "/metrics" => {
                return Response::builder()
                    .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                    .body(full(crate::metrics::render().into()))
                    .expect("valid response");
            }
            _ => {}
        }
    }
    let Role::Mcp { .. } = role else {
        return plain_status(StatusCode::NOT_FOUND, "not found");
    };
    if let Err(resp) = check_host_and_origin(&gw.config.security, &req, local) {
        tracing::warn!(%peer, "refused request with a disallowed Host or Origin");
        return resp;
    }
    if path.starts_with("/.well-known/oauth-protected-resource") {
        let resource = format!(
            "http://{}{}",
            mcp::header_str(req.headers(), "host").unwrap_or("localhost"),
            gw.config.mcp_path
        );
        return match gw.auth.protected_resource_metadata(&resource) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => plain_status(StatusCode::NOT_FOUND, "this gateway does not use OAuth"),
        };
    }
    if path != gw.config.mcp_path {
        return plain_status(
            StatusCode::NOT_FOUND,
            "not found: the MCP endpoint is elsewhere",
        );
    }
    if req.method() == Method::OPTIONS {
        return plain_status(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
    }
    // One source may hold at most `limits.max_requests_per_source` of the request slots,
    // whatever it does with them (a body trickled one byte at a time, a slow upstream call).
    let slots = gw.clone();
    let Some(_slot) = slots.source_slots.try_acquire(peer.ip()) else {
        tracing::warn!(%peer, "refused a request: too many requests in flight from this address");
        return crate::pipeline::overloaded(
            "too many requests in flight from your address (limits.max_requests_per_source)",
        );
    };
    crate::metrics::global().inflight_requests.inc();
    let resp = gw.handle_mcp(req).await;
    crate::metrics::global().inflight_requests.dec();
    resp
}

/// Requests in flight per client address, bounded.
pub struct SourceSlots {
    max: usize,
    held: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One request slot of one source; released on drop.
pub struct SourceSlot<'a> {
    slots: &'a SourceSlots,
    ip: std::net::IpAddr,
}

impl SourceSlots {
    pub fn new(max: usize) -> Self {
        SourceSlots {
            max,
            held: Default::default(),
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `ip`, or `None` when it already holds `max`.
    pub fn try_acquire(&self, ip: std::net::IpAddr) -> Option<SourceSlot<'_>> {
        let mut held = self.lock();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot { slots: self, ip })
    }
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.lock();
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
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

/// DNS-rebinding protection: a browser page must not be able to reach the gateway through
/// a hostname it controls, nor from an origin that is not allowed.
#[allow(clippy::result_large_err)]
fn check_host_and_origin(
    sec: &SecurityConfig,
    req: &Request<Incoming>,
    local: SocketAddr,
) -> Result<(), Response<GatewayBody>> {
    match host_origin_refusal(sec, req.headers(), req.uri(), local) {
        None => Ok(()),
        Some(why) => Err(json_error_status(
            StatusCode::FORBIDDEN,
            None,
            crate::jsonrpc::INVALID_REQUEST,
            why,
        )),
    }
}

/// Why a request's `Host` (or URI authority) or `Origin` is refused on a listener at
/// `local`, or `None` when both are acceptable. Public for the `headers` fuzz target.
#[doc(hidden)]
pub fn host_origin_refusal(
    sec: &SecurityConfig,
    headers: &http::HeaderMap,
    uri: &http::Uri,
    local: SocketAddr,
) -> Option<&'static str> {
    let host = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let host_ok = match host {
        None => false,
        Some(h) if !sec.allowed_hosts.is_empty() => {
            let bare = strip_port(h);
            sec.allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h) || a.eq_ignore_ascii_case(bare))
        }
        Some(h) => !local.ip().is_loopback() || is_loopback_host(strip_port(h)),
    };
    if !host_ok {
        return Some("Host header not allowed (security.allowed_hosts)");
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let allowed = sec
            .allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            || (sec.allowed_origins.is_empty()
                && origin_is_loopback(origin)
                && local.ip().is_loopback());
        if !allowed {
            return Some("Origin not allowed (security.allowed_origins)");
        }
    }
    None
}

/// The host of a `Host` value (`host`, `host:port`, `[v6]`, `[v6]:port`). A value of any
/// other shape (userinfo, text after the brackets) is returned whole, so it matches no
/// loopback name: the fuzz target `headers` found `[::1]:8i@)` accepted as `::1`, which an
/// authority parser reads as the host `)`.
fn strip_port(host: &str) -> &str {
    let port_ok = |p: &str| p.is_empty() || p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, after))
                if after.is_empty() || after.strip_prefix(':').is_some_and(port_ok) =>
            {
                v6
            }
            _ => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn origin_is_loopback(origin: &str) -> bool {
    origin
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(is_loopback_host))
        .unwrap_or(false)
}

/// Flush the audit queue on shutdown, bounded: a sink that keeps failing must not keep the
/// process alive forever (what is lost is logged by the sink).
pub async fn flush_audit(gateway: &Gateway) {
    let grace = gateway.config.limits.shutdown_grace;
    if tokio::time::timeout(grace, gateway.audit.flush())
        .await
        .is_err()
    {
        tracing::error!(
            ?grace,
            "audit records could not be flushed before the shutdown deadline"
        );
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Start the gateway from a config: MCP listener, optional ops listener, until a signal.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {} (config key `listen`): {e}",
            config.listen
        )
    })?;
    let ops_listener = match config.metrics.listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (config key `metrics.listen`): {e}")
        })?),
        None => None,
    };
    let gateway = Gateway::build(config).await?;
    serve_gateway(gateway, listener, ops_listener, shutdown).await
}

/// Serve `gateway` on its MCP listener (and the operational one, if any) until `shutdown`
/// resolves, then drain as configured and flush the audit trail.
pub async fn serve_gateway(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    ops_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Shutdown in three steps: /readyz turns 503 at once; the MCP listener keeps serving for
    // `limits.shutdown_delay` (load balancers see the 503 and stop sending); then it stops
    // accepting and in-flight requests get `limits.shutdown_grace`. The operational listener
    // answers (503 on /readyz) until the audit trail is flushed.
    let (tx, rx) = tokio::sync::watch::channel(false);
    let draining = gateway.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.start_draining();
        let delay = draining.config.limits.shutdown_delay;
        tracing::info!(
            ?delay,
            "shutdown requested: /readyz answers 503; new requests are served for limits.shutdown_delay"
        );
        tokio::time::sleep(delay).await;
        let _ = tx.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let (ops_tx, ops_rx) = tokio::sync::watch::channel(false);
    let ops_task =
        ops_listener.map(|l| tokio::spawn(serve(gateway.clone(), l, Role::Ops, wait(ops_rx))));
    tracing::info!(
        version = crate::VERSION,
        policy_revision = %gateway.policy.current().revision(),
        listen = %gateway.config.listen,
        upstream = %gateway.config.upstream.url,
        "eks-mcp-gateway {} serving MCP at http://{}{}",
        crate::VERSION,
        gateway.config.listen,
        gateway.config.mcp_path
    );
    serve(
        gateway.clone(),
        listener,
        Role::Mcp {
            with_ops: gateway.config.metrics.listen.is_none(),
        },
        wait(rx),
    )
    .await?;
    // In-flight requests are drained: a stdio upstream process can stop now.
    gateway.upstream.shutdown().await;
    flush_audit(&gateway).await;
    let _ = ops_tx.send(true);
    if let Some(t) = ops_task {
        let _ = t.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_slots() {
        let slots = SourceSlots::new(2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let one = slots.try_acquire(a).unwrap();
        let _two = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none());
        assert!(
            slots.try_acquire(b).is_some(),
            "another source is not affected"
        );
        drop(one);
        assert!(slots.try_acquire(a).is_some());
    }

    #[test]
    fn ports_are_stripped_for_host_checks() {
        assert_eq!(strip_port("localhost:8080"), "localhost");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("example.com"), "example.com");
        assert!(origin_is_loopback("http://127.0.0.1:3000"));
        assert!(!origin_is_loopback("http://evil.example"));
    }

    /// From the fuzz target `headers`: a bracketed host followed by anything but a port is
    /// not a loopback Host (an authority parser reads `[::1]:8i@)` as the host `)`).
    #[test]
    fn a_host_of_another_shape_is_not_loopback() {
        let sec = SecurityConfig::default();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let uri = http::Uri::from_static("/mcp");
        let refusal = |host: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::HOST, host.parse().unwrap());
            host_origin_refusal(&sec, &h, &uri, local)
        };
        for bad in [
            "[::1]:8i@)",
            "[::1]x",
            "[::1]:80@evil.example",
            "localhost.evil.example",
        ] {
            assert!(refusal(bad).is_some(), "{bad} accepted");
        }
        for good in ["[::1]", "[::1]:8080", "localhost:8080", "127.0.0.1"] {
            assert_eq!(refusal(good), None, "{good} refused");
        }
    }
}
