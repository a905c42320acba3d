//! Upstream protection, shared by every caller of one replica: the upstream's own throttling
//! (a 429's `Retry-After` holds every caller's calls until it passes, so callers do not each
//! find out alone and spend the account's quota doing so) and a circuit breaker (after
//! `upstream.breaker_failures` failures in a row the gateway stops calling the upstream for
//! `upstream.breaker_open_for`, then lets one probe through; the probe's success closes it).
//!
//! This module only keeps the state and says yes or no; the pipeline asks before each attempt
//! and reports each outcome. It never retries by itself (retries are the pipeline's, for
//! catalogue reads only).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::UpstreamConfig;

/// Why a call is not sent to the upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The upstream answered 429; its `Retry-After` has this much left.
    Throttled(Duration),
    /// The breaker is open after this many failures in a row; it probes again after the
    /// duration.
    Open {
        failures: u32,
        retry_after: Duration,
    },
}

/// What one attempt came to, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (any status that is not a failure below).
    Answered,
    /// The upstream throttled the gateway: 429 with this `Retry-After` (seconds), if any.
    Throttled(Option<u64>),
    /// Unreachable, timed out, or a 5xx.
    Failed,
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        failures: u32,
        until: Instant,
    },
    /// One probe is on its way; everything else is held.
    Probing {
        failures: u32,
    },
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    throttled_until: Option<Instant>,
}

/// The protection state of one upstream.
#[derive(Debug)]
pub struct UpstreamGuard {
    threshold: u32,
    open_for: Duration,
    max_retry_after: Duration,
    state: Mutex<State>,
}

/// Permission for one attempt; report its outcome with [`UpstreamGuard::record`]. A probe
/// dropped without an outcome (the client went away) lets the next call probe.
#[derive(Debug)]
pub struct Attempt<'a> {
    guard: &'a UpstreamGuard,
    probe: bool,
    recorded: bool,
}

impl UpstreamGuard {
    pub fn new(cfg: &UpstreamConfig) -> Self {
        UpstreamGuard {
            threshold: cfg.breaker_failures.max(1),
            open_for: cfg.breaker_open_for,
            max_retry_after: cfg.max_retry_after,
            state: Mutex::new(State {
                breaker: Breaker::Closed { failures: 0 },
                throttled_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go to the upstream now?
    pub fn admit(&self) -> Result<Attempt<'_>, Hold> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(until) = st.throttled_until {
            if now < until {
                return Err(Hold::Throttled(until - now));
            }
            st.throttled_until = None;
        }
        let probe = match st.breaker {
            Breaker::Closed { .. } => false,
            Breaker::Open { failures, until } if now < until => {
                return Err(Hold::Open {
                    failures,
                    retry_after: until - now,
                });
            }
            Breaker::Open { failures, .. } => {
                st.breaker = Breaker::Probing { failures };
                crate::metrics::global().upstream_breaker_state.set(2);
                true
            }
            Breaker::Probing { failures } => {
                return Err(Hold::Open {
                    failures,
                    retry_after: Duration::from_secs(1),
                });
            }
        };
        Ok(Attempt {
            guard: self,
            probe,
            recorded: false,
        })
    }

    /// Count what an attempt came to.
    pub fn record(&self, mut attempt: Attempt<'_>, outcome: Outcome) {
        attempt.recorded = true;
        let now = Instant::now();
        let mut st = self.lock();
        let failures = match st.breaker {
            Breaker::Closed { failures }
            | Breaker::Open { failures, .. }
            | Breaker::Probing { failures } => failures,
        };
        match outcome {
            Outcome::Failed => {
                let failures = failures.saturating_add(1);
                if attempt.probe || failures >= self.threshold {
                    if !matches!(st.breaker, Breaker::Open { .. }) {
                        tracing::warn!(
                            failures,
                            open_for = ?self.open_for,
                            "upstream circuit breaker open: failing fast until a probe succeeds"
                        );
                    }
                    st.breaker = Breaker::Open {
                        failures,
                        until: now + self.open_for,
                    };
                    crate::metrics::global().upstream_breaker_state.set(1);
                } else if let Breaker::Closed { .. } = st.breaker {
                    st.breaker = Breaker::Closed { failures };
                }
            }
            Outcome::Answered | Outcome::Throttled(_) => {
                if !matches!(st.breaker, Breaker::Closed { failures: 0 }) {
                    if !matches!(st.breaker, Breaker::Closed { .. }) {
                        tracing::info!("upstream circuit breaker closed: the probe succeeded");
                    }
                    st.breaker = Breaker::Closed { failures: 0 };
                    crate::metrics::global().upstream_breaker_state.set(0);
                }
                if let Outcome::Throttled(secs) = outcome {
                    // Without a Retry-After (or with an HTTP date) hold for one second.
                    let wait = secs
                        .map(Duration::from_secs)
                        .unwrap_or(Duration::from_secs(1))
                        .min(self.max_retry_after);
                    let until = now + wait;
                    if st.throttled_until.is_none_or(|t| t < until) {
                        st.throttled_until = Some(until);
                    }
                }
            }
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut st = self.guard.lock();
            if let Breaker::Probing { failures } = st.breaker {
                // Nobody learned anything: the next call may probe.
                st.breaker = Breaker::Open {
                    failures,
                    until: Instant::now(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(threshold: u32, open_for: Duration) -> UpstreamGuard {
        let mut cfg: UpstreamConfig =
            serde_yaml::from_str("url: http://127.0.0.1:1/mcp\n").unwrap();
        cfg.breaker_failures = threshold;
        cfg.breaker_open_for = open_for;
        UpstreamGuard::new(&cfg)
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_probes_once_and_closes() {
        let g = guard(3, Duration::from_millis(20));
        for _ in 0..2 {
            g.record(g.admit().unwrap(), Outcome::Failed);
        }
        g.record(g.admit().unwrap(), Outcome::Answered);
        for _ in 0..3 {
            g.record(g.admit().unwrap(), Outcome::Failed);
        }
        assert!(matches!(g.admit(), Err(Hold::Open { failures: 3, .. })));
        std::thread::sleep(Duration::from_millis(30));
        let probe = g.admit().expect("one probe after open_for");
        assert!(
            matches!(g.admit(), Err(Hold::Open { .. })),
            "only one probe at a time"
        );
        g.record(probe, Outcome::Failed);
        assert!(
            matches!(g.admit(), Err(Hold::Open { failures: 4, .. })),
            "a failed probe opens it again"
        );
        std::thread::sleep(Duration::from_millis(30));
        g.record(g.admit().unwrap(), Outcome::Answered);
        g.admit().expect("closed after a good probe");
        g.admit().expect("and stays closed");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let g = guard(1, Duration::from_millis(1));
        g.record(g.admit().unwrap(), Outcome::Failed);
        std::thread::sleep(Duration::from_millis(5));
        drop(g.admit().unwrap());
        g.admit().expect("the next call probes");
    }

    #[test]
    fn a_throttle_holds_every_call_until_retry_after() {
        let g = guard(5, Duration::from_secs(10));
        g.record(g.admit().unwrap(), Outcome::Throttled(Some(30)));
        match g.admit() {
            Err(Hold::Throttled(left)) => assert!(left > Duration::from_secs(29), "{left:?}"),
            other => panic!("{other:?}"),
        }
    }
}
