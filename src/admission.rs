//! admission: the replica's global concurrency limit (`limits.max_concurrent_requests`),
//! served fairly between callers.
//!
//! Below the limit a request goes straight in. At the limit it waits in its caller's own
//! queue (at most `limits.max_queued_per_caller` per caller, `limits.max_queued_requests` in
//! all, for at most `limits.queue_timeout`), and each freed slot goes to the next caller in
//! turn (round robin over callers with someone waiting), not to the oldest request. So a
//! caller with hundreds of slow calls queued cannot starve another caller's single call: that
//! call waits for at most one slot per other waiting caller. Beyond the queue bounds a request
//! is refused at once (HTTP 503, as before queues existed).
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// The global slots and the callers waiting for them.
#[derive(Debug)]
pub struct Admission {
    capacity: usize,
    per_caller: usize,
    total_queued: usize,
    wait: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    in_use: usize,
    queued: usize,
    /// Waiting requests by caller.
    queues: HashMap<String, VecDeque<oneshot::Sender<Slot>>>,
    /// Callers with someone waiting, in the order they are served.
    turn: VecDeque<String>,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The caller's queue, or all queues together, are full.
    QueueFull,
    /// It waited `limits.queue_timeout` without a slot.
    TimedOut,
}

/// One of the global slots; freed (or handed to the next caller in turn) when dropped.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    armed: bool,
}

impl Admission {
    pub fn new(
        capacity: usize,
        per_caller: usize,
        total_queued: usize,
        wait: Duration,
    ) -> Arc<Self> {
        Arc::new(Admission {
            capacity: capacity.max(1),
            per_caller,
            total_queued,
            wait,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.lock().in_use
    }

    /// A slot for a request of `caller`: at once below the limit, else after its turn.
    pub async fn acquire(self: &Arc<Self>, caller: &str) -> Result<Slot, Refused> {
        let rx = {
            let mut st = self.lock();
            if st.in_use < self.capacity && st.queued == 0 {
                st.in_use += 1;
                return Ok(Slot {
                    admission: self.clone(),
                    armed: true,
                });
            }
            let mine = st.queues.get(caller).map_or(0, VecDeque::len);
            if mine >= self.per_caller || st.queued >= self.total_queued {
                return Err(Refused::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            if mine == 0 {
                st.turn.push_back(caller.to_owned());
            }
            st.queues
                .entry(caller.to_owned())
                .or_default()
                .push_back(tx);
            st.queued += 1;
            crate::metrics::global()
                .queued_requests
                .set(st.queued as i64);
            rx
        };
        // A slot sent after the deadline is dropped with the channel, which frees it again.
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Refused::TimedOut),
        }
    }

    /// A slot was freed: hand it to the next caller in turn, or put it back.
    fn release(self: &Arc<Self>) {
        loop {
            let next = {
                let mut st = self.lock();
                match next_waiter(&mut st) {
                    Some(tx) => {
                        crate::metrics::global()
                            .queued_requests
                            .set(st.queued as i64);
                        tx
                    }
                    None => {
                        st.in_use = st.in_use.saturating_sub(1);
                        return;
                    }
                }
            };
            let slot = Slot {
                admission: self.clone(),
                armed: true,
            };
            match next.send(slot) {
                Ok(()) => return,
                // That request stopped waiting (timed out, client gone): the next one.
                Err(mut slot) => slot.armed = false,
            }
        }
    }
}

/// The first waiter of the caller whose turn it is; that caller goes to the back of the
/// line if it has more waiting.
fn next_waiter(st: &mut State) -> Option<oneshot::Sender<Slot>> {
    while let Some(caller) = st.turn.pop_front() {
        let Some(queue) = st.queues.get_mut(&caller) else {
            continue;
        };
        let tx = queue.pop_front();
        if queue.is_empty() {
            st.queues.remove(&caller);
        } else {
            st.turn.push_back(caller);
        }
        if let Some(tx) = tx {
            st.queued -= 1;
            return Some(tx);
        }
    }
    None
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.admission.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn freed_slots_go_to_callers_in_turn_not_to_the_oldest_request() {
        let adm = Admission::new(1, 100, 1000, Duration::from_secs(30));
        let held = adm.acquire("flood").await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        let mut spawn = |who: &'static str| {
            let (adm, order) = (adm.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let slot = adm.acquire(who).await.unwrap();
                order.lock().unwrap().push(who);
                drop(slot);
            }));
        };
        for _ in 0..5 {
            spawn("flood");
        }
        while adm.queued() < 5 {
            tokio::task::yield_now().await;
        }
        spawn("polite");
        while adm.queued() < 6 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let polite = order.iter().position(|w| *w == "polite").unwrap();
        assert!(polite <= 1, "served in turn: {order:?}");
        assert_eq!(adm.in_use(), 0);
        assert_eq!(adm.queued(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_wait_ends() {
        let adm = Admission::new(1, 1, 1000, Duration::from_millis(20));
        let _held = adm.acquire("a").await.unwrap();
        let waiting = {
            let adm = adm.clone();
            tokio::spawn(async move { adm.acquire("a").await.map(|_| ()) })
        };
        while adm.queued() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(adm.acquire("a").await.unwrap_err(), Refused::QueueFull);
        assert_eq!(waiting.await.unwrap().unwrap_err(), Refused::TimedOut);
    }

    #[tokio::test]
    async fn a_slot_handed_to_a_request_that_left_is_passed_on() {
        let adm = Admission::new(1, 10, 1000, Duration::from_secs(30));
        let held = adm.acquire("a").await.unwrap();
        let gone = {
            let adm = adm.clone();
            tokio::spawn(async move { adm.acquire("b").await.map(|_| ()) })
        };
        while adm.queued() < 1 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!(adm.in_use(), 0, "the slot was not lost");
        adm.acquire("c").await.unwrap();
    }
}
