//! front: the HTTP listeners, the layers every request passes before the pipeline, and
//! graceful shutdown.
//!
//! Accepts connections (HTTP/1.1 and h2c, TCP_NODELAY, header read timeout) and hands each
//! request to the front's stack of tower layers, composed in one place ([`stack`]): Host and
//! Origin checks, routes, the per-address, global and SSE stream limits, authentication and
//! the caller's fair turn, then the MCP pipeline. On shutdown it stops accepting, lets
//! in-flight requests finish within the configured grace period, then closes what is left.
//!
//! The front decides whether a request may start; it never reads a body or a JSON-RPC
//! message (that is the pipeline's).
use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::pipeline::Gateway;

mod admit;
mod authenticate;
mod host;
mod inflight;
mod routes;
mod source;
mod stack;
mod streams;

pub use host::host_origin_refusal;
pub(crate) use stack::{Connection, Front};

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
    let front = Front::new(gateway.clone(), role);
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
        let stack = front.connection(Connection { peer, local });
        let svc = hyper::service::service_fn(move |req| stack.clone().oneshot(req));
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
