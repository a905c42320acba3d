//! limits: per-caller admission, from the policy data (`gateway.limits`).
//!
//! A shared gateway serves a whole team; one agent stuck in a loop must not spend everyone's
//! upstream quota or hold every slot. Before an allowed call is forwarded, the caller (its
//! principal id) is admitted against three limits of the call's class (`read`, `sensitive`,
//! `write`, `unknown` for `tools/call` by the catalogue's access class, `other` for every other
//! method):
//!
//! - **rate**: calls per second with a `burst` (a token bucket that starts full);
//! - **concurrency**: calls of that class in flight at once;
//! - **bytes**: for the tools in `byte_tools` (log and CloudWatch reads), result bytes per
//!   second with a burst. Bytes are known only once the result arrives, so a result is charged
//!   afterwards and the caller's next such call waits until the debt is paid.
//!
//! A refused call never reaches the upstream; the pipeline answers it with the gateway's own
//! rate-limit error (`jsonrpc::RATE_LIMITED` with `retry_after`), never the upstream's 429.
//!
//! The table of callers is bounded (`limits.max_callers`): callers idle for
//! `limits.caller_idle_timeout` are forgotten, and when the table is full the least recently
//! seen callers with nothing in flight go first, so a flood of distinct identities cannot grow
//! memory. Limits are per replica: this module never talks to another replica.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::classify::Access;

/// What a call is limited as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    Read,
    Sensitive,
    Write,
    Unknown,
    /// Every method other than `tools/call` (initialize, tools/list, ping, ...).
    Other,
}

impl CallClass {
    const ALL: [CallClass; 5] = [
        CallClass::Read,
        CallClass::Sensitive,
        CallClass::Write,
        CallClass::Unknown,
        CallClass::Other,
    ];

    /// The class of a call: the tool's access class for `tools/call`, `Other` otherwise.
    pub fn of(access: Option<Access>) -> CallClass {
        match access {
            Some(Access::Read) => CallClass::Read,
            Some(Access::Sensitive) => CallClass::Sensitive,
            Some(Access::Write) => CallClass::Write,
            Some(Access::Unknown) => CallClass::Unknown,
            None => CallClass::Other,
        }
    }

    /// The name used in the policy data, metrics and errors.
    pub fn label(self) -> &'static str {
        match self {
            CallClass::Read => "read",
            CallClass::Sensitive => "sensitive",
            CallClass::Write => "write",
            CallClass::Unknown => "unknown",
            CallClass::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The limits of one class. A missing field is no limit on that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Calls per second (refill rate of the token bucket).
    pub rate: Option<f64>,
    /// Calls that may be made at once after a quiet period; defaults to `max(rate, 1)`.
    pub burst: Option<f64>,
    /// Calls of this class in flight at once.
    pub concurrency: Option<u32>,
}

/// A byte budget: `rate` bytes per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteLimit {
    pub rate: u64,
    pub burst: Option<u64>,
}

/// The limits of one entry (defaults, a group, a principal), by class.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassLimits {
    pub read: Option<Limit>,
    pub sensitive: Option<Limit>,
    pub write: Option<Limit>,
    pub unknown: Option<Limit>,
    pub other: Option<Limit>,
    /// Result bytes of the `byte_tools`, all classes together.
    pub bytes: Option<ByteLimit>,
}

impl ClassLimits {
    fn class(&self, class: CallClass) -> Option<&Limit> {
        match class {
            CallClass::Read => self.read.as_ref(),
            CallClass::Sensitive => self.sensitive.as_ref(),
            CallClass::Write => self.write.as_ref(),
            CallClass::Unknown => self.unknown.as_ref(),
            CallClass::Other => self.other.as_ref(),
        }
    }

    fn entries(&self) -> impl Iterator<Item = (CallClass, &Limit)> {
        CallClass::ALL
            .into_iter()
            .filter_map(|c| self.class(c).map(|l| (c, l)))
    }
}

/// `gateway.limits` of the policy data.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsData {
    /// For callers whose groups and principal entry set nothing for a class.
    #[serde(default)]
    pub defaults: ClassLimits,
    /// By group name. A caller in several groups gets the most generous of their entries.
    #[serde(default)]
    pub groups: BTreeMap<String, ClassLimits>,
    /// By principal id; replaces what the groups and defaults say for the classes it names.
    #[serde(default)]
    pub principals: BTreeMap<String, ClassLimits>,
    /// Tools whose result bytes count against the `bytes` budget.
    #[serde(default)]
    pub byte_tools: Vec<String>,
}

/// The limits that apply to one call, resolved from the data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Effective {
    /// `(calls per second, burst)`.
    pub rate: Option<(f64, f64)>,
    pub concurrency: Option<u32>,
    /// `(bytes per second, burst)`, for a call of a `byte_tools` tool.
    pub bytes: Option<(f64, f64)>,
}

impl LimitsData {
    /// Read `gateway.limits` from a data document; `None` when absent. Errors name the key
    /// and the fix.
    pub fn from_data(data: &serde_json::Value) -> Result<Option<LimitsData>, String> {
        let Some(v) = data.get("gateway").and_then(|g| g.get("limits")) else {
            return Ok(None);
        };
        let parsed: LimitsData = serde_json::from_value(v.clone()).map_err(|e| {
            format!(
                "data.gateway.limits: {e}. Fix: each of defaults, groups.<group> and \
                 principals.<id> maps a class (read, sensitive, write, unknown, other) to \
                 {{rate, burst, concurrency}}, and bytes to {{rate, burst}}"
            )
        })?;
        parsed.validate()?;
        Ok(Some(parsed))
    }

    fn validate(&self) -> Result<(), String> {
        let mut entries = vec![("defaults".to_owned(), &self.defaults)];
        entries.extend(self.groups.iter().map(|(g, l)| (format!("groups.{g}"), l)));
        entries.extend(
            self.principals
                .iter()
                .map(|(p, l)| (format!("principals.{p}"), l)),
        );
        for (path, limits) in entries {
            for (class, l) in limits.entries() {
                let at = format!("data.gateway.limits.{path}.{}", class.label());
                if l.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
                    return Err(format!(
                        "{at}.rate must be a number above 0 (calls per second); remove it for no rate limit"
                    ));
                }
                if l.burst.is_some_and(|b| !(b.is_finite() && b >= 1.0)) {
                    return Err(format!("{at}.burst must be at least 1"));
                }
                if l.burst.is_some() && l.rate.is_none() {
                    return Err(format!("{at}.burst needs a rate"));
                }
                if l.concurrency == Some(0) {
                    return Err(format!(
                        "{at}.concurrency must be at least 1; remove it for no limit"
                    ));
                }
            }
            if let Some(b) = &limits.bytes {
                let at = format!("data.gateway.limits.{path}.bytes");
                if b.rate == 0 || b.burst == Some(0) {
                    return Err(format!(
                        "{at}: rate and burst must be above 0 (bytes); remove it for no byte limit"
                    ));
                }
            }
        }
        Ok(())
    }

    /// What applies to a call of `class` (of tool `tool`) by `principal` in `groups`: the
    /// principal's entry for the class if any; else the most generous of the caller's groups
    /// that name the class (an unset field there is no limit); else the defaults.
    pub fn resolve(
        &self,
        principal: &str,
        groups: &[String],
        class: CallClass,
        tool: Option<&str>,
    ) -> Effective {
        let own = self.principals.get(principal);
        let mine: Vec<&ClassLimits> = groups.iter().filter_map(|g| self.groups.get(g)).collect();
        let limit = own
            .and_then(|l| l.class(class).copied())
            .or_else(|| most_generous(mine.iter().filter_map(|l| l.class(class))))
            .or_else(|| self.defaults.class(class).copied())
            .unwrap_or_default();
        let bytes = match tool {
            Some(t) if self.byte_tools.iter().any(|b| b == t) => own
                .and_then(|l| l.bytes)
                .or_else(|| most_generous_bytes(mine.iter().filter_map(|l| l.bytes.as_ref())))
                .or(self.defaults.bytes)
                .map(|b| (b.rate as f64, b.burst.unwrap_or(b.rate) as f64)),
            _ => None,
        };
        Effective {
            rate: limit
                .rate
                .map(|r| (r, limit.burst.unwrap_or_else(|| r.max(1.0)))),
            concurrency: limit.concurrency,
            bytes,
        }
    }
}

fn most_generous<'a>(mut limits: impl Iterator<Item = &'a Limit>) -> Option<Limit> {
    let first = *limits.next()?;
    Some(limits.fold(first, |a, b| {
        let (rate, burst) = match (a.rate, b.rate) {
            (Some(x), Some(y)) => (
                Some(x.max(y)),
                match (a.burst, b.burst) {
                    (Some(p), Some(q)) => Some(p.max(q)),
                    _ => a.burst.or(b.burst).map(|v| v.max(x.max(y).max(1.0))),
                },
            ),
            _ => (None, None),
        };
        Limit {
            rate,
            burst,
            concurrency: a.concurrency.zip(b.concurrency).map(|(x, y)| x.max(y)),
        }
    }))
}

fn most_generous_bytes<'a>(mut limits: impl Iterator<Item = &'a ByteLimit>) -> Option<ByteLimit> {
    let first = *limits.next()?;
    Some(limits.fold(first, |a, b| ByteLimit {
        rate: a.rate.max(b.rate),
        burst: Some(a.burst.unwrap_or(a.rate).max(b.burst.unwrap_or(b.rate))),
    }))
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Rate,
    Concurrency,
    Bytes,
    /// The caller table is full of callers with calls in flight.
    Callers,
}

impl LimitKind {
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::Rate => "rate",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Bytes => "bytes",
            LimitKind::Callers => "callers",
        }
    }
}

/// A refused call: which limit and when to try again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limited {
    pub kind: LimitKind,
    pub class: CallClass,
    pub retry_after: Duration,
}

impl Limited {
    /// What the caller reads: which limit, of which class, and what to do.
    pub fn message(&self) -> String {
        let what = match self.kind {
            LimitKind::Rate => format!("too many {} calls per second", self.class.label()),
            LimitKind::Concurrency => format!("too many {} calls in flight", self.class.label()),
            LimitKind::Bytes => "too many result bytes per second from log reads".to_owned(),
            LimitKind::Callers => "too many distinct callers busy at once".to_owned(),
        };
        format!(
            "rate limited by the gateway: {what} for this caller; retry after {:.3}s",
            self.retry_after.as_secs_f64()
        )
    }
}

/// A token bucket's state; its rate and burst come from the current policy data at each use,
/// so a reload changes them without losing what a caller has spent.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(slot: &mut Option<Bucket>, (rate, burst): (f64, f64), now: Instant) -> &mut Bucket {
        let b = slot.get_or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        b
    }
}

#[derive(Debug)]
struct CallerState {
    calls: [Option<Bucket>; 5],
    bytes: Option<Bucket>,
    in_flight: [u32; 5],
    last_seen: Instant,
}

impl CallerState {
    fn new(now: Instant) -> Self {
        CallerState {
            calls: [None; 5],
            bytes: None,
            in_flight: [0; 5],
            last_seen: now,
        }
    }

    fn busy(&self) -> bool {
        self.in_flight.iter().any(|n| *n > 0)
    }
}

#[derive(Debug)]
struct Table {
    callers: HashMap<String, CallerState>,
    last_sweep: Instant,
}

/// Every caller this replica has seen recently, bounded.
#[derive(Debug)]
pub struct Callers {
    max: usize,
    idle: Duration,
    table: Mutex<Table>,
}

impl Callers {
    /// A table of at most `max` callers; a caller idle for `idle` is forgotten.
    pub fn new(max: usize, idle: Duration) -> Arc<Callers> {
        Arc::new(Callers {
            max: max.max(1),
            idle,
            table: Mutex::new(Table {
                callers: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Callers currently remembered.
    pub fn len(&self) -> usize {
        self.lock().callers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most callers ever remembered at once.
    pub fn bound(&self) -> usize {
        self.max
    }

    /// Admit one call of `class` by `principal` under `limits`, or say which limit refuses it.
    /// The permit counts the call in flight until dropped.
    pub fn admit(
        self: &Arc<Self>,
        principal: &str,
        class: CallClass,
        limits: Effective,
    ) -> Result<CallerPermit, Limited> {
        if limits == Effective::default() {
            return Ok(CallerPermit {
                callers: None,
                principal: String::new(),
                class,
                bytes: None,
            });
        }
        let now = Instant::now();
        let refuse = |kind, retry_after| Limited {
            kind,
            class,
            retry_after,
        };
        let mut table = self.lock();
        if now.saturating_duration_since(table.last_sweep) >= self.idle {
            self.forget_idle(&mut table, now);
        }
        if !table.callers.contains_key(principal) && table.callers.len() >= self.max {
            self.make_room(&mut table, now);
            if table.callers.len() >= self.max {
                return Err(refuse(LimitKind::Callers, Duration::from_secs(1)));
            }
        }
        let state = table
            .callers
            .entry(principal.to_owned())
            .or_insert_with(|| CallerState::new(now));
        state.last_seen = now;
        let i = class.index();
        if let Some(max) = limits.concurrency
            && state.in_flight[i] >= max
        {
            return Err(refuse(LimitKind::Concurrency, Duration::from_secs(1)));
        }
        if let Some(budget) = limits.bytes {
            let b = Bucket::refill(&mut state.bytes, budget, now);
            if b.tokens <= 0.0 {
                let wait = (-b.tokens + 1.0) / budget.0;
                return Err(refuse(LimitKind::Bytes, Duration::from_secs_f64(wait)));
            }
        }
        if let Some(rate) = limits.rate {
            let b = Bucket::refill(&mut state.calls[i], rate, now);
            if b.tokens < 1.0 {
                let wait = (1.0 - b.tokens) / rate.0;
                return Err(refuse(LimitKind::Rate, Duration::from_secs_f64(wait)));
            }
            b.tokens -= 1.0;
        }
        state.in_flight[i] += 1;
        Ok(CallerPermit {
            callers: Some(self.clone()),
            principal: principal.to_owned(),
            class,
            bytes: limits.bytes,
        })
    }

    /// Forget callers idle for `idle` with nothing in flight.
    fn forget_idle(&self, table: &mut Table, now: Instant) {
        let idle = self.idle;
        table
            .callers
            .retain(|_, s| s.busy() || now.saturating_duration_since(s.last_seen) < idle);
        table.last_sweep = now;
    }

    /// The table is full: forget idle callers, and if that frees nothing, the least recently
    /// seen eighth of the callers with nothing in flight (amortised: one scan per max/8
    /// newcomers). A forgotten caller starts again with full buckets.
    fn make_room(&self, table: &mut Table, now: Instant) {
        self.forget_idle(table, now);
        if table.callers.len() < self.max {
            return;
        }
        let mut quiet: Vec<(Instant, String)> = table
            .callers
            .iter()
            .filter(|(_, s)| !s.busy())
            .map(|(k, s)| (s.last_seen, k.clone()))
            .collect();
        let n = (self.max / 8).max(1).min(quiet.len());
        if n == 0 {
            return;
        }
        if n < quiet.len() {
            quiet.select_nth_unstable(n - 1);
        }
        for (_, k) in quiet.into_iter().take(n) {
            table.callers.remove(&k);
        }
    }
}

/// One admitted call, counted in flight for its caller until dropped.
#[derive(Debug)]
pub struct CallerPermit {
    callers: Option<Arc<Callers>>,
    principal: String,
    class: CallClass,
    bytes: Option<(f64, f64)>,
}

impl CallerPermit {
    /// Charge `n` result bytes to the caller's byte budget (calls of `byte_tools` only).
    pub fn charge_bytes(&self, n: usize) {
        let (Some(callers), Some(budget)) = (&self.callers, self.bytes) else {
            return;
        };
        let mut table = callers.lock();
        if let Some(state) = table.callers.get_mut(&self.principal) {
            let b = Bucket::refill(&mut state.bytes, budget, Instant::now());
            b.tokens -= n as f64;
        }
    }
}

impl Drop for CallerPermit {
    fn drop(&mut self) {
        let Some(callers) = &self.callers else {
            return;
        };
        let mut table = callers.lock();
        if let Some(state) = table.callers.get_mut(&self.principal) {
            let n = &mut state.in_flight[self.class.index()];
            *n = n.saturating_sub(1);
            state.last_seen = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(yaml: &str) -> LimitsData {
        let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
        LimitsData::from_data(&v).unwrap().unwrap()
    }

    fn rate(r: f64, b: f64) -> Effective {
        Effective {
            rate: Some((r, b)),
            ..Effective::default()
        }
    }

    #[test]
    fn a_caller_over_its_burst_is_refused_and_another_is_not() {
        let callers = Callers::new(100, Duration::from_secs(600));
        let limits = rate(0.5, 3.0);
        let held: Vec<_> = (0..3)
            .map(|_| callers.admit("alice", CallClass::Write, limits).unwrap())
            .collect();
        let refused = callers
            .admit("alice", CallClass::Write, limits)
            .unwrap_err();
        assert_eq!(refused.kind, LimitKind::Rate);
        assert!(
            refused.retry_after > Duration::from_millis(1500),
            "{refused:?}"
        );
        callers
            .admit("bob", CallClass::Write, limits)
            .expect("another caller has its own bucket");
        callers
            .admit("alice", CallClass::Read, limits)
            .expect("another class has its own bucket");
        drop(held);
    }

    #[test]
    fn concurrency_counts_calls_in_flight_until_the_permit_drops() {
        let callers = Callers::new(100, Duration::from_secs(600));
        let limits = Effective {
            concurrency: Some(2),
            ..Effective::default()
        };
        let a = callers.admit("alice", CallClass::Read, limits).unwrap();
        let _b = callers.admit("alice", CallClass::Read, limits).unwrap();
        let refused = callers.admit("alice", CallClass::Read, limits).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Concurrency);
        drop(a);
        callers.admit("alice", CallClass::Read, limits).unwrap();
    }

    #[test]
    fn result_bytes_are_charged_and_the_next_call_waits_for_the_debt() {
        let callers = Callers::new(100, Duration::from_secs(600));
        let limits = Effective {
            bytes: Some((1000.0, 1000.0)),
            ..Effective::default()
        };
        let p = callers
            .admit("alice", CallClass::Sensitive, limits)
            .unwrap();
        p.charge_bytes(5000);
        drop(p);
        let refused = callers
            .admit("alice", CallClass::Sensitive, limits)
            .unwrap_err();
        assert_eq!(refused.kind, LimitKind::Bytes);
        assert!(refused.retry_after >= Duration::from_secs(3), "{refused:?}");
    }

    #[test]
    fn a_hundred_thousand_distinct_callers_stay_within_the_bound() {
        let callers = Callers::new(1000, Duration::from_secs(600));
        let limits = rate(1.0, 1.0);
        let mut most = 0;
        for i in 0..100_000 {
            let p = callers
                .admit(&format!("caller-{i}"), CallClass::Read, limits)
                .expect("a newcomer finds room among quiet callers");
            drop(p);
            most = most.max(callers.len());
        }
        assert!(most <= callers.bound(), "{most} callers remembered");
        assert_eq!(callers.bound(), 1000);
        // The most recent caller is still remembered (and limited).
        let again = callers.admit("caller-99999", CallClass::Read, limits);
        assert_eq!(again.unwrap_err().kind, LimitKind::Rate);
    }

    #[test]
    fn a_full_table_of_busy_callers_refuses_newcomers() {
        let callers = Callers::new(2, Duration::from_secs(600));
        let limits = rate(10.0, 10.0);
        let _a = callers.admit("a", CallClass::Read, limits).unwrap();
        let _b = callers.admit("b", CallClass::Read, limits).unwrap();
        let refused = callers.admit("c", CallClass::Read, limits).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Callers);
    }

    #[test]
    fn idle_callers_are_forgotten() {
        let callers = Callers::new(100, Duration::from_millis(1));
        let limits = rate(1.0, 1.0);
        drop(callers.admit("a", CallClass::Read, limits).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        drop(callers.admit("b", CallClass::Read, limits).unwrap());
        assert_eq!(callers.len(), 1, "a was idle and is forgotten");
    }

    #[test]
    fn principal_then_most_generous_group_then_defaults() {
        let d = data(
            "gateway:\n  limits:\n    defaults:\n      write: {rate: 1, burst: 2, concurrency: 1}\n      read: {rate: 5}\n      bytes: {rate: 100}\n    groups:\n      a: {write: {rate: 2, concurrency: 3}}\n      b: {write: {rate: 4, burst: 8}}\n    principals:\n      ci: {write: {concurrency: 9}}\n    byte_tools: [get_pod_logs]\n",
        );
        let e = d.resolve("x", &[], CallClass::Write, None);
        assert_eq!((e.rate, e.concurrency), (Some((1.0, 2.0)), Some(1)));
        let e = d.resolve("x", &["a".into(), "b".into()], CallClass::Write, None);
        assert_eq!(
            (e.rate, e.concurrency),
            (Some((4.0, 8.0)), None),
            "b sets no concurrency: most generous is none"
        );
        let e = d.resolve("ci", &["a".into()], CallClass::Write, None);
        assert_eq!((e.rate, e.concurrency), (None, Some(9)));
        let e = d.resolve("x", &["a".into()], CallClass::Read, Some("get_pod_logs"));
        assert_eq!((e.rate, e.bytes), (Some((5.0, 5.0)), Some((100.0, 100.0))));
        assert_eq!(
            d.resolve("x", &[], CallClass::Other, Some("list_k8s_resources")),
            Effective::default()
        );
    }

    #[test]
    fn bad_limits_name_the_key() {
        let bad = |yaml: &str| {
            let v: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
            LimitsData::from_data(&v).unwrap_err()
        };
        let e = bad("gateway:\n  limits:\n    groups:\n      g: {write: {rate: 0}}\n");
        assert!(e.contains("data.gateway.limits.groups.g.write.rate"), "{e}");
        let e = bad("gateway:\n  limits:\n    defaults: {writes: {rate: 1}}\n");
        assert!(e.contains("writes") && e.contains("Fix"), "{e}");
    }
}
