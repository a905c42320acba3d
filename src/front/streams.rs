//! SSE stream cap: at most `limits.max_sse_streams` GET streams open at once; beyond it a
//! GET gets 503 with `Retry-After` before anything else is done for it. The slot lives
//! with the response body, so it is held as long as the stream is relayed and freed when
//! it ends or the client goes away. POSTs pass untouched (their streamed answers are
//! bounded by the request slots).
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::layer::{Layer, layer_fn};
use tower::{Service, ServiceExt as _};

use super::stack::{Answer, Next, answer, pass, ready};
use crate::pipeline::{GatewayBody, overloaded};

pub(super) fn layer<S>(streams: Arc<Semaphore>) -> impl Layer<S, Service = StreamCap<S>> + Clone {
    layer_fn(move |inner: S| StreamCap {
        inner,
        streams: streams.clone(),
    })
}

#[derive(Clone)]
pub(super) struct StreamCap<S> {
    inner: S,
    streams: Arc<Semaphore>,
}

impl<S, B> Service<Request<B>> for StreamCap<S>
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
        if req.method() != Method::GET {
            return pass(&self.inner, req);
        }
        let Ok(permit) = self.streams.clone().try_acquire_owned() else {
            return answer(overloaded("streams", "too many open SSE streams"));
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            let resp = inner.oneshot(req).await?;
            Ok(resp.map(|body| {
                HoldingBody {
                    body,
                    _permit: permit,
                }
                .boxed_unsync()
            }))
        })
    }
}

/// A response body that keeps a stream slot until it is dropped.
struct HoldingBody {
    body: GatewayBody,
    _permit: OwnedSemaphorePermit,
}

impl Body for HoldingBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    /// Alone: the second GET is refused while the first one's body lives; POSTs pass; the
    /// slot frees when the body is dropped.
    #[tokio::test]
    async fn a_stream_slot_lives_with_the_response_body() {
        let inner = tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(crate::pipeline::plain_status(StatusCode::OK, "stream"))
        });
        let svc = layer(Arc::new(Semaphore::new(1))).layer(inner);
        let get = || Request::get("/mcp").body(()).unwrap();
        let first = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let second = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(second.headers()["retry-after"], "1");
        let post = Request::post("/mcp").body(()).unwrap();
        assert_eq!(
            svc.clone().oneshot(post).await.unwrap().status(),
            StatusCode::OK
        );
        drop(first);
        assert_eq!(svc.oneshot(get()).await.unwrap().status(), StatusCode::OK);
    }
}
