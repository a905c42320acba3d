//! In-flight gauge: `mcp_gateway_inflight_requests` counts the requests past the global
//! request limit that have not been answered yet (until their response head; a stream's
//! body is counted by `mcp_gateway_open_sse_streams`). A request the client abandons stops
//! counting when its future is dropped.
use std::convert::Infallible;
use std::task::{Context, Poll};

use http::Response;
use tower::layer::{Layer, layer_fn};
use tower::{Service, ServiceExt as _};

use super::stack::{Answer, Next, ready};
use crate::pipeline::GatewayBody;

pub(super) fn layer<S>() -> impl Layer<S, Service = InFlight<S>> + Clone {
    layer_fn(|inner: S| InFlight { inner })
}

#[derive(Clone)]
pub(super) struct InFlight<S> {
    inner: S,
}

/// Counted while it lives.
struct Counted;

impl Counted {
    fn new() -> Self {
        crate::metrics::global().inflight_requests.inc();
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        crate::metrics::global().inflight_requests.dec();
    }
}

impl<S, R> Service<R> for InFlight<S>
where
    S: Next<R>,
    R: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, req: R) -> Answer {
        let inner = self.inner.clone();
        Box::pin(async move {
            let _counted = Counted::new();
            inner.oneshot(req).await
        })
    }
}
