//! The front's layers, composed in one place: what a request meets, in order, before the
//! MCP pipeline sees it.
//!
//! ```text
//! ops endpoints (/healthz /readyz /metrics; no Host check: kubelet probes by pod IP)
//!  → Host / Origin check ............................ 403
//!  → routes: protected-resource metadata, 404, OPTIONS 405
//!  → per-address limit (limits.max_requests_per_source) ........... 503 + Retry-After
//!  → LoadShed + ConcurrencyLimit (max_concurrent_requests + max_queued_requests) 503
//!  → in-flight gauge (mcp_gateway_inflight_requests)
//!  → SSE stream cap for GET (limits.max_sse_streams) .............. 503 + Retry-After
//!  → authenticate ................................................... 401 / 403 / 503
//!  → fair admission: the caller's turn at a request slot (admission.rs) 503
//!  → the MCP pipeline (pipeline.rs)
//! ```
//!
//! The cheap refusals come first, so a full gateway still answers a bad Host with 403 and
//! spends nothing on a request it will refuse; a full gateway answers 503 before it checks
//! credentials (503 before 401). There is deliberately no timeout around the whole request:
//! a session-era GET stream, a long tool call or a person answering a confirmation may take
//! minutes. Each phase has its own deadline instead: `limits.header_read_timeout` (hyper),
//! `limits.body_read_timeout` (pipeline), `limits.queue_timeout` (admission),
//! `upstream.response_timeout` and `upstream.idle_timeout` (forward),
//! `approval.answer_timeout` (confirmation).
//!
//! Every layer here answers a request or hands it on; none fails (`Error = Infallible`).
//! A layer that may answer by itself makes its inner service ready only when it hands the
//! request on (a fresh clone, `oneshot`), so a request refused early never takes a slot
//! of a limit further in.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};

use super::Role;
use super::admit::{self, Admitted};
use super::source::SourceSlots;
use super::{authenticate, host, inflight, routes, source, streams};
use crate::pipeline::{Gateway, GatewayBody, overloaded};

/// The two ends of one client connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// One request's way through the front, ready for a connection.
pub(crate) type FrontService =
    BoxCloneService<Request<Incoming>, Response<GatewayBody>, Infallible>;

/// What a front layer's service returns: it always answers.
pub(super) type Answer =
    Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, Infallible>> + Send>>;

/// The service a front layer wraps: it answers every request and never fails.
pub(super) trait Next<R>:
    Service<R, Response = Response<GatewayBody>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<R, S> Next<R> for S
where
    S: Service<R, Response = Response<GatewayBody>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
}

/// Hand `req` on to a fresh clone of `next`, made ready first (readiness of a limit further
/// in is only asked for once this layer lets the request through).
pub(super) fn pass<R: Send + 'static, S: Next<R>>(next: &S, req: R) -> Answer {
    Box::pin(next.clone().oneshot(req))
}

/// Answer at once, without the inner service.
pub(super) fn answer(resp: Response<GatewayBody>) -> Answer {
    Box::pin(std::future::ready(Ok(resp)))
}

/// `poll_ready` of a front layer: always ready (see [`pass`]).
pub(super) fn ready() -> Poll<Result<(), Infallible>> {
    Poll::Ready(Ok(()))
}

/// The state a listener's limits share across its connections.
pub(crate) struct Front {
    gateway: Arc<Gateway>,
    role: Role,
    security: Arc<crate::config::SecurityConfig>,
    sources: Arc<SourceSlots>,
    /// Requests past the per-address limit and not yet answered (their response head).
    requests: Arc<Semaphore>,
    /// Open GET streams.
    streams: Arc<Semaphore>,
}

impl Front {
    pub(crate) fn new(gateway: Arc<Gateway>, role: Role) -> Front {
        let limits = &gateway.config.limits;
        // In flight plus waiting their turn: beyond it a request is shed before anything else
        // is done for it. Admission (further in) keeps max_concurrent_requests of these
        // running and queues the rest per caller.
        let requests = limits
            .max_concurrent_requests
            .max(1)
            .saturating_add(limits.max_queued_requests)
            .min(Semaphore::MAX_PERMITS);
        Front {
            role,
            security: Arc::new(gateway.config.security.clone()),
            sources: Arc::new(SourceSlots::new(limits.max_requests_per_source)),
            requests: Arc::new(Semaphore::new(requests)),
            streams: Arc::new(Semaphore::new(limits.max_sse_streams)),
            gateway,
        }
    }

    /// The stack for one connection, outermost layer first.
    pub(crate) fn connection(&self, conn: Connection) -> FrontService {
        let gw = &self.gateway;
        let with_ops = match self.role {
            Role::Ops => return BoxCloneService::new(routes::ops(gw.clone(), routes::NotFound)),
            Role::Mcp { with_ops } => with_ops,
        };
        let stack = ServiceBuilder::new()
            // 403 for a Host or Origin the configuration does not allow.
            .layer(host::layer(self.security.clone(), conn))
            // Metadata document, 404, OPTIONS 405: only the MCP path goes further.
            .layer(routes::mcp_layer(gw.clone()))
            // 503: this address holds limits.max_requests_per_source already.
            .layer(source::layer(self.sources.clone(), conn))
            // 503: every slot and every queue place is taken.
            .layer(tower::layer::layer_fn(ShedAsOverloaded))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                self.requests.clone(),
            ))
            .layer(inflight::layer())
            // 503 for a GET beyond limits.max_sse_streams.
            .layer(streams::layer(self.streams.clone()))
            // 401/403 without valid credentials.
            .layer(authenticate::layer(gw.clone()))
            // The caller's turn at a request slot; 503 when its queue is full or too slow.
            .layer(admit::layer(gw.admission.clone()))
            .service(Pipeline(gw.clone()));
        if with_ops {
            BoxCloneService::new(routes::ops(gw.clone(), stack))
        } else {
            BoxCloneService::new(stack)
        }
    }
}

/// `LoadShed` refuses with an error when every slot is taken: the client gets 503 with
/// `Retry-After`.
#[derive(Clone)]
struct ShedAsOverloaded<S>(S);

impl<S, R> Service<R> for ShedAsOverloaded<S>
where
    S: Service<R, Response = Response<GatewayBody>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, req: R) -> Answer {
        let inner = self.0.clone();
        Box::pin(async move {
            Ok(inner.oneshot(req).await.unwrap_or_else(|e| {
                // The layers inside never fail: the only error is LoadShed's own.
                debug_assert!(e.is::<tower::load_shed::error::Overloaded>(), "{e}");
                tracing::warn!("refused a request: every request slot and queue taken (limits.max_concurrent_requests + limits.max_queued_requests)");
                overloaded("requests", "too many requests in flight")
            }))
        })
    }
}

/// The innermost service: an admitted request of an authenticated caller enters the
/// pipeline.
#[derive(Clone)]
struct Pipeline(Arc<Gateway>);

impl Service<Admitted<Incoming>> for Pipeline {
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, a: Admitted<Incoming>) -> Answer {
        let gw = self.0.clone();
        Box::pin(async move {
            Ok(gw
                .handle_mcp(a.request, a.principal, a.slot, a.started)
                .await)
        })
    }
}
