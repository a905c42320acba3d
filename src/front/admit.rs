//! Fair admission as a layer: an authenticated request takes one of the replica's
//! `limits.max_concurrent_requests` slots, waiting its caller's turn when all are busy
//! (`admission.rs` keeps the queues). A request that cannot wait (its caller's queue or all
//! queues full, or `limits.queue_timeout` passed) gets 503 with `Retry-After`. The slot goes
//! into the pipeline with the request and lives until the response (or the streamed answer
//! to a POST) ends; a GET stream gives it back once established (its own cap is
//! `limits.max_sse_streams`, front/streams.rs).
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::layer::{Layer, layer_fn};
use tower::{Service, ServiceExt as _};

use super::authenticate::Authenticated;
use super::stack::{Answer, Next, ready};
use crate::admission::{Admission, Refused, Slot};
use crate::identity::Principal;
use crate::pipeline::{GatewayBody, overloaded};

/// An authenticated request holding its request slot.
pub(crate) struct Admitted<B> {
    pub request: Request<B>,
    pub principal: Principal,
    pub slot: Slot,
    pub started: Instant,
}

pub(super) fn layer<S>(admission: Arc<Admission>) -> impl Layer<S, Service = Admit<S>> + Clone {
    layer_fn(move |inner: S| Admit {
        inner,
        admission: admission.clone(),
    })
}

#[derive(Clone)]
pub(super) struct Admit<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B> Service<Authenticated<B>> for Admit<S>
where
    S: Next<Admitted<B>>,
    B: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, a: Authenticated<B>) -> Answer {
        let (admission, inner) = (self.admission.clone(), self.inner.clone());
        Box::pin(async move {
            let slot = match admission.acquire(&a.principal.id).await {
                Ok(slot) => slot,
                Err(Refused::QueueFull) => {
                    tracing::warn!(principal = %a.principal.id, "refused a request: every slot busy and the caller's queue full (limits.max_concurrent_requests, limits.max_queued_per_caller, limits.max_queued_requests)");
                    return Ok(overloaded("queue_full", "too many requests in flight"));
                }
                Err(Refused::TimedOut) => {
                    return Ok(overloaded(
                        "queue_timeout",
                        "too many requests in flight; yours waited limits.queue_timeout for a slot",
                    ));
                }
            };
            inner
                .oneshot(Admitted {
                    request: a.request,
                    principal: a.principal,
                    slot,
                    started: a.started,
                })
                .await
        })
    }
}
