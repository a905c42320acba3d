//! Per-address limit: one client address holds at most `limits.max_requests_per_source` of
//! the gateway's request slots, whatever it does with them (a body trickled one byte at a
//! time, a slow upstream call), so one source cannot take every slot of the global limit
//! further in. Beyond it: 503 with `Retry-After`. A slot is held until the response head.
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;
use tower::layer::{Layer, layer_fn};

use super::stack::{Answer, Connection, Next, answer, ready};
use crate::pipeline::{GatewayBody, overloaded};

/// Requests in flight per client address, bounded.
pub(super) struct SourceSlots {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One request slot of one source; released on drop.
pub(super) struct SourceSlot {
    slots: Arc<SourceSlots>,
    ip: IpAddr,
}

impl SourceSlots {
    pub(super) fn new(max: usize) -> Self {
        SourceSlots {
            max,
            held: Default::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `ip`, or `None` when it already holds `max`.
    pub(super) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut held = self.lock();
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
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

/// Hold one of the connection's address's slots while the request is worked on.
pub(super) fn layer<S>(
    slots: Arc<SourceSlots>,
    conn: Connection,
) -> impl Layer<S, Service = PerSourceLimit<S>> + Clone {
    layer_fn(move |inner: S| PerSourceLimit {
        inner,
        slots: slots.clone(),
        conn,
    })
}

#[derive(Clone)]
pub(super) struct PerSourceLimit<S> {
    inner: S,
    slots: Arc<SourceSlots>,
    conn: Connection,
}

impl<S, B> Service<Request<B>> for PerSourceLimit<S>
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
        let peer = self.conn.peer;
        let Some(slot) = self.slots.try_acquire(peer.ip()) else {
            tracing::warn!(%peer, "refused a request: too many requests in flight from this address");
            return answer(overloaded(
                "source",
                "too many requests in flight from your address (limits.max_requests_per_source)",
            ));
        };
        let inner = self.inner.clone();
        Box::pin(async move {
            use tower::ServiceExt as _;
            let resp = inner.oneshot(req).await;
            drop(slot);
            resp
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use tower::ServiceExt as _;

    #[test]
    fn a_source_holds_at_most_its_slots() {
        let slots = Arc::new(SourceSlots::new(2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
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

    /// Alone: while a request of an address is in the inner service, that address's next
    /// request gets 503 with Retry-After; once it is answered, the slot is free again.
    #[tokio::test]
    async fn the_slot_is_held_until_the_inner_service_answers() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gate = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(AtomicBool::new(false));
        let (opened, inside) = (gate.clone(), entered.clone());
        let inner = tower::service_fn(move |_req: Request<()>| {
            let (gate, inside) = (opened.clone(), inside.clone());
            async move {
                inside.store(true, Ordering::SeqCst);
                gate.notified().await;
                Ok::<_, Infallible>(crate::pipeline::plain_status(StatusCode::OK, "in"))
            }
        });
        let conn = Connection {
            peer: "10.0.0.1:40000".parse().unwrap(),
            local: "10.0.0.9:8080".parse().unwrap(),
        };
        let svc = layer(Arc::new(SourceSlots::new(1)), conn).layer(inner);
        let held = tokio::spawn(svc.clone().oneshot(Request::new(())));
        while !entered.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        let refused = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        gate.notify_one();
        let again = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
}
