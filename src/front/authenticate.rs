//! Authentication as a layer: who is calling, before the caller's turn is taken and before
//! any byte of the body is read. A request without valid credentials gets the pipeline's
//! 401/403 challenge (with `WWW-Authenticate` and the RFC 9728 metadata URL); an
//! authenticated one goes on as an [`Authenticated`] request.
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::layer::{Layer, layer_fn};
use tower::{Service, ServiceExt as _};

use super::stack::{Answer, Next, ready};
use crate::identity::Principal;
use crate::pipeline::{Gateway, GatewayBody};

/// A request and the caller it comes from.
pub(crate) struct Authenticated<B> {
    pub request: Request<B>,
    pub principal: Principal,
    /// When the gateway began working on the request (the audit record's latency).
    pub started: Instant,
}

pub(super) fn layer<S>(gateway: Arc<Gateway>) -> impl Layer<S, Service = Authenticate<S>> + Clone {
    layer_fn(move |inner: S| Authenticate {
        inner,
        gateway: gateway.clone(),
    })
}

#[derive(Clone)]
pub(super) struct Authenticate<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Next<Authenticated<B>>,
    B: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        ready()
    }

    fn call(&mut self, request: Request<B>) -> Answer {
        let (gateway, inner) = (self.gateway.clone(), self.inner.clone());
        Box::pin(async move {
            let started = Instant::now();
            let who = gateway.auth.authenticate(request.headers()).await;
            match who {
                Ok(principal) => {
                    inner
                        .oneshot(Authenticated {
                            request,
                            principal,
                            started,
                        })
                        .await
                }
                Err(e) => Ok(gateway.unauthenticated(request.headers(), &e)),
            }
        })
    }
}
