//! credentials: the AWS credentials the gateway signs with, cached and refreshed.
//!
//! This module and `sign` are the only places that hold AWS secrets. Nothing here logs a
//! secret, and no error message carries one.
//!
//! Two layers:
//! - [`CredentialCache`] wraps the standard AWS chain from `aws-config` (environment, shared
//!   profile, IRSA web identity, EKS Pod Identity / container endpoint, IMDS). The chain
//!   itself does not cache when used outside an SDK client, so the cache holds the current
//!   credentials in an `ArcSwap` and a background task refreshes them before they expire
//!   (five minutes ahead, or half the remaining lifetime for short-lived credentials,
//!   whichever is sooner). Refreshes are single-flight. A request never waits for a refresh
//!   while valid credentials are held; it only waits when none are.
//! - [`RoleSessions`] turns the gateway's own credentials into one STS role session per
//!   caller (`AssumeRole` with a `RoleSessionName` derived from the principal and session
//!   tags naming the principal and groups), cached per (principal, groups, role) until near
//!   expiry, so CloudTrail names the person behind each call.
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{
    ProvideCredentials, SharedCredentialsProvider, error::CredentialsError, future,
};
use sha2::{Digest, Sha256};

use crate::identity::Principal;

/// Refresh this long before expiry at the latest.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// Credentials closer than this to expiry (or than a quarter of their lifetime, for very
/// short-lived ones) are not used when fresher ones can be fetched.
const USABLE_MARGIN: Duration = Duration::from_secs(5);
/// Credentials without an expiry (static keys) are re-resolved this often, so a rotated
/// profile file or environment is picked up without a restart.
const STATIC_RECHECK: Duration = Duration::from_secs(15 * 60);
/// Longest a single resolution of the chain (or one STS call) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delays after a failed background refresh: doubling from the first, capped.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(30);
/// Shortest pause between background refreshes, so a provider that keeps handing out
/// nearly-expired credentials cannot make the refresh loop spin.
const MIN_WAKE: Duration = Duration::from_secs(1);
/// Upper bound on cached role sessions; expired ones are evicted first.
const MAX_ROLE_SESSIONS: usize = 10_000;

/// When credentials fetched at `fetched_at` and expiring at `expiry` should be refreshed:
/// five minutes before expiry, or half-way through their lifetime if that is sooner.
pub fn refresh_at(fetched_at: SystemTime, expiry: SystemTime) -> SystemTime {
    let lifetime = expiry.duration_since(fetched_at).unwrap_or_default();
    expiry - REFRESH_AHEAD.min(lifetime / 2)
}

/// True when `creds` (fetched at `fetched_at`) can still be used to sign a request at `now`.
/// The margin is below the refresh lead time, so the background refresh always comes first.
fn usable(creds: &Credentials, fetched_at: SystemTime, now: SystemTime) -> bool {
    match creds.expiry() {
        None => true,
        Some(exp) => {
            let lifetime = exp.duration_since(fetched_at).unwrap_or_default();
            exp > now + USABLE_MARGIN.min(lifetime / 4)
        }
    }
}

/// True when `creds` have not expired at all (used for freshly fetched credentials that are
/// already close to expiry: the best there is).
fn unexpired(creds: &Credentials, now: SystemTime) -> bool {
    creds.expiry().is_none_or(|exp| exp > now)
}

/// Why no credentials are available. Carries the chain's explanation (no secrets in it) for
/// logs and the operator; `sign` maps it to a generic client-facing error.
#[derive(Debug, Clone)]
pub struct CredentialsUnavailable {
    pub message: String,
}

impl fmt::Display for CredentialsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CredentialsUnavailable {}

/// Credential health for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialHealth {
    /// Valid credentials are held; `expires_in` is `None` for static keys.
    Ok { expires_in: Option<Duration> },
    /// Still valid, but refreshing them keeps failing and they expire soon.
    Expiring {
        expires_in: Duration,
        message: String,
    },
    /// No valid credentials: requests cannot be signed.
    Failed { message: String },
}

impl CredentialHealth {
    /// Ready to serve signed traffic (`Ok` or `Expiring`).
    pub fn is_ready(&self) -> bool {
        !matches!(self, CredentialHealth::Failed { .. })
    }

    /// One line for `/readyz` and logs.
    pub fn message(&self) -> String {
        match self {
            CredentialHealth::Ok { expires_in: None } => "credentials ok (no expiry)".into(),
            CredentialHealth::Ok {
                expires_in: Some(d),
            } => {
                format!("credentials ok (expire in {}s)", d.as_secs())
            }
            CredentialHealth::Expiring {
                expires_in,
                message,
            } => format!(
                "credentials expire in {}s and refreshing them fails: {message}",
                expires_in.as_secs()
            ),
            CredentialHealth::Failed { message } => format!("no valid credentials: {message}"),
        }
    }
}

/// Counters of the credential cache (also exported as metrics where available).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialStats {
    /// Successful resolutions of the chain (the first one included).
    pub refreshes: u64,
    /// Failed resolutions.
    pub failures: u64,
    /// Requests that found no valid credentials and had to wait for a refresh (after
    /// startup this stays 0 while the background refresh keeps up).
    pub waited: u64,
}

struct Held {
    creds: Credentials,
    fetched_at: SystemTime,
}

struct CacheInner {
    provider: SharedCredentialsProvider,
    current: ArcSwapOption<Held>,
    refresh_lock: tokio::sync::Mutex<()>,
    /// Wakes the background task after a foreground refresh, so it re-plans.
    replanned: tokio::sync::Notify,
    refreshes: AtomicU64,
    failures: AtomicU64,
    waited: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A caching, self-refreshing view of a credentials provider. Cheap to share via `Arc`.
pub struct CredentialCache {
    inner: Arc<CacheInner>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Drop for CredentialCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What kind of refresh is asked for; decides whether another caller's refresh suffices.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A request needs usable credentials now.
    Usable,
    /// The background task wants credentials that are not yet due for refresh.
    Fresh,
}

impl CacheInner {
    fn current_satisfies(&self, want: Want, now: SystemTime) -> Option<Credentials> {
        let held = self.current.load_full()?;
        let ok = match want {
            Want::Usable => usable(&held.creds, held.fetched_at, now),
            Want::Fresh => match held.creds.expiry() {
                Some(exp) => now < refresh_at(held.fetched_at, exp),
                None => now < held.fetched_at + STATIC_RECHECK,
            },
        };
        ok.then(|| held.creds.clone())
    }

    async fn refresh(&self, want: Want) -> Result<Credentials, CredentialsUnavailable> {
        let _flight = self.refresh_lock.lock().await;
        // Someone else may have refreshed while this caller waited for the lock.
        if let Some(c) = self.current_satisfies(want, SystemTime::now()) {
            return Ok(c);
        }
        let fetched_at = SystemTime::now();
        let result =
            match tokio::time::timeout(FETCH_TIMEOUT, self.provider.provide_credentials()).await {
                Ok(Ok(c)) if unexpired(&c, SystemTime::now()) => Ok(c),
                Ok(Ok(_)) => Err("the credential provider returned credentials that have \
                                  already expired (check the system clock)"
                    .to_string()),
                Ok(Err(e)) => Err(error_chain(&e)),
                Err(_) => Err(format!(
                    "resolving credentials took longer than {}s",
                    FETCH_TIMEOUT.as_secs()
                )),
            };
        match result {
            Ok(creds) => {
                self.current.store(Some(Arc::new(Held {
                    creds: creds.clone(),
                    fetched_at,
                })));
                self.refreshes.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                record_metric(CredentialEvent::Refresh);
                Ok(creds)
            }
            Err(message) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                record_metric(CredentialEvent::Failure);
                tracing::warn!(error = %message, "AWS credential refresh failed");
                Err(CredentialsUnavailable { message })
            }
        }
    }

    /// How long the background task should sleep before the next refresh.
    fn next_wake(&self, now: SystemTime, retry: Option<Duration>) -> Duration {
        let planned = match self.current.load_full() {
            None => RETRY_FIRST,
            Some(held) => match held.creds.expiry() {
                Some(exp) => refresh_at(held.fetched_at, exp)
                    .duration_since(now)
                    .unwrap_or_default(),
                None => (held.fetched_at + STATIC_RECHECK)
                    .duration_since(now)
                    .unwrap_or_default(),
            },
        };
        match retry {
            // After a failure the plan is already due: wait out the backoff first.
            Some(backoff) => planned.max(backoff.min(RETRY_CAP)),
            None => planned.max(MIN_WAKE),
        }
    }
}

impl CredentialCache {
    /// Resolve credentials once (failing when nothing resolves), then keep them fresh in the
    /// background. Must be called inside a tokio runtime.
    pub async fn start(
        provider: SharedCredentialsProvider,
    ) -> Result<Arc<Self>, CredentialsUnavailable> {
        let inner = Arc::new(CacheInner {
            provider,
            current: ArcSwapOption::empty(),
            refresh_lock: tokio::sync::Mutex::new(()),
            replanned: tokio::sync::Notify::new(),
            refreshes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        inner.refresh(Want::Usable).await?;
        let task = tokio::spawn(background_refresh(Arc::downgrade(&inner)));
        Ok(Arc::new(Self { inner, task }))
    }

    /// Credentials to sign with now. Returns at once while valid credentials are held;
    /// otherwise waits for the (single-flight) refresh.
    pub async fn get(&self) -> Result<Credentials, CredentialsUnavailable> {
        if let Some(c) = self
            .inner
            .current_satisfies(Want::Usable, SystemTime::now())
        {
            return Ok(c);
        }
        self.inner.waited.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.refresh(Want::Usable).await;
        self.inner.replanned.notify_one();
        result
    }

    pub fn stats(&self) -> CredentialStats {
        CredentialStats {
            refreshes: self.inner.refreshes.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            waited: self.inner.waited.load(Ordering::Relaxed),
        }
    }

    pub fn health(&self) -> CredentialHealth {
        let now = SystemTime::now();
        let last_error = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match self.inner.current.load_full() {
            Some(held) if usable(&held.creds, held.fetched_at, now) => match held.creds.expiry() {
                None => CredentialHealth::Ok { expires_in: None },
                Some(exp) => {
                    let expires_in = exp.duration_since(now).unwrap_or_default();
                    match last_error {
                        Some(message) if now >= refresh_at(held.fetched_at, exp) => {
                            CredentialHealth::Expiring {
                                expires_in,
                                message,
                            }
                        }
                        _ => CredentialHealth::Ok {
                            expires_in: Some(expires_in),
                        },
                    }
                }
            },
            _ => CredentialHealth::Failed {
                message: last_error.unwrap_or_else(|| "credentials have expired".into()),
            },
        }
    }

    /// This cache as an SDK credentials provider (used for the STS client of role sessions,
    /// so STS calls are signed with the cached credentials rather than re-resolving the chain).
    pub fn as_provider(self: &Arc<Self>) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(CacheProvider(self.clone()))
    }
}

async fn background_refresh(inner: Weak<CacheInner>) {
    let mut retry: Option<Duration> = None;
    loop {
        let wait = match inner.upgrade() {
            Some(inner) => inner.next_wake(SystemTime::now(), retry),
            None => return,
        };
        let notified = match inner.upgrade() {
            Some(inner) => {
                // Sleep until the planned refresh, or until a foreground refresh re-plans.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = inner.replanned.notified() => false,
                }
            }
            None => return,
        };
        if !notified {
            retry = None;
            continue;
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.refresh(Want::Fresh).await {
            Ok(_) => retry = None,
            Err(_) => {
                retry = Some(retry.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_CAP)));
            }
        }
    }
}

#[derive(Debug)]
struct CacheProvider(Arc<CredentialCache>);

impl ProvideCredentials for CacheProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            self.0
                .get()
                .await
                .map_err(|e| CredentialsError::not_loaded(e.message))
        })
    }
}

/// The error and its sources on one line (the SDK puts the useful part in the sources).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[derive(Clone, Copy)]
enum CredentialEvent {
    Refresh,
    Failure,
    SessionHit,
    SessionMiss,
    SessionError,
}

/// Mirror an event into the process-wide Prometheus registry
/// (`mcp_gateway_credential_refreshes_total`, `mcp_gateway_role_session_cache_total`).
/// The counters in the structs here stay the source of truth for tests and `/readyz`.
fn record_metric(event: CredentialEvent) {
    let m = crate::metrics::global();
    let (counter, label) = match event {
        CredentialEvent::Refresh => (&m.credential_refreshes_total, "ok"),
        CredentialEvent::Failure => (&m.credential_refreshes_total, "error"),
        CredentialEvent::SessionHit => (&m.role_session_cache_total, "hit"),
        CredentialEvent::SessionMiss => (&m.role_session_cache_total, "miss"),
        CredentialEvent::SessionError => (&m.role_session_cache_total, "error"),
    };
    counter.with_label_values(&[label]).inc();
}

// ---------------------------------------------------------------------------------------
// Per-caller role sessions
// ---------------------------------------------------------------------------------------

/// An STS role session for one caller.
#[derive(Clone)]
pub struct RoleSession {
    pub credentials: Credentials,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session name>`: what CloudTrail shows.
    pub assumed_role_arn: String,
    pub session_name: String,
    pub role_arn: String,
    fetched_at: SystemTime,
}

impl fmt::Debug for RoleSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSession")
            .field("assumed_role_arn", &self.assumed_role_arn)
            .field("session_name", &self.session_name)
            .field("expiry", &self.credentials.expiry())
            .finish_non_exhaustive()
    }
}

/// Counters of the role-session cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSessionStats {
    /// Requests served from a cached session.
    pub hits: u64,
    /// Requests that had to call STS first.
    pub misses: u64,
    /// STS calls that failed.
    pub failures: u64,
}

/// Why a role session could not be had. Display is safe to show to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoleSessionError {
    #[error(
        "the policy chose role {0:?}, which is not listed in signing.assume_role.roles; \
         the gateway operator must add it or change the policy"
    )]
    UnknownRole(String),
    /// `detail` is for logs; the client sees only the role name.
    #[error("the gateway could not assume the upstream role {role:?} for this caller")]
    AssumeRole { role: String, detail: String },
}

#[derive(Default)]
struct SessionSlot {
    current: ArcSwapOption<RoleSession>,
    lock: tokio::sync::Mutex<()>,
}

/// Per-caller STS role sessions, cached until near expiry.
pub struct RoleSessions {
    sts: aws_sdk_sts::Client,
    default_role: String,
    roles: std::collections::BTreeMap<String, String>,
    duration: Duration,
    session_tags: bool,
    slots: Mutex<HashMap<SessionKey, Arc<SessionSlot>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    principal: String,
    /// Groups are part of the session tags, so a change of groups needs a new session.
    groups: Vec<String>,
    role: Option<String>,
}

impl fmt::Debug for RoleSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSessions")
            .field("default_role", &self.default_role)
            .field("roles", &self.roles)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RoleSessions {
    /// `sts` must be configured with the gateway's own (cached) credentials.
    pub fn new(
        sts: aws_sdk_sts::Client,
        cfg: &crate::config::AssumeRoleConfig,
    ) -> Result<Self, String> {
        let secs = cfg.session_duration.as_secs();
        if !(900..=43_200).contains(&secs) {
            return Err(format!(
                "signing.assume_role.session_duration is {secs}s; STS accepts 15m to 12h \
                 (and at most the role's maximum session duration). Fix: e.g. session_duration: 1h"
            ));
        }
        for (name, arn) in
            std::iter::once((&"(role_arn)".to_string(), &cfg.role_arn)).chain(cfg.roles.iter())
        {
            if !arn.starts_with("arn:") || !arn.contains(":role/") {
                return Err(format!(
                    "signing.assume_role {name}: {arn:?} is not an IAM role ARN. Fix: use \
                     arn:aws:iam::<account>:role/<name>"
                ));
            }
        }
        Ok(Self {
            sts,
            default_role: cfg.role_arn.clone(),
            roles: cfg.roles.clone(),
            duration: cfg.session_duration,
            session_tags: cfg.session_tags,
            slots: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> RoleSessionStats {
        RoleSessionStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// The role session for this caller and (optionally) a role named by the decision.
    /// Served from cache while the session is usable; when it is due for refresh but still
    /// usable, it is served and refreshed in the background.
    pub async fn get(
        self: &Arc<Self>,
        principal: &Principal,
        role: Option<&str>,
    ) -> Result<Arc<RoleSession>, RoleSessionError> {
        let role_arn = match role {
            None => self.default_role.clone(),
            Some(name) => self
                .roles
                .get(name)
                .cloned()
                .ok_or_else(|| RoleSessionError::UnknownRole(name.to_string()))?,
        };
        let mut groups = principal.groups.clone();
        groups.sort();
        groups.dedup();
        let key = SessionKey {
            principal: principal.id.clone(),
            groups,
            role: role.map(str::to_string),
        };
        let slot = self.slot(&key);
        let now = SystemTime::now();
        if let Some(session) = slot.current.load_full()
            && usable(&session.credentials, session.fetched_at, now)
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            record_metric(CredentialEvent::SessionHit);
            if due(&session, now) {
                let this = self.clone();
                let (slot, key, role_arn) = (slot.clone(), key.clone(), role_arn.clone());
                tokio::spawn(async move {
                    if let Ok(_flight) = slot.lock.try_lock() {
                        let _ = this.assume(&slot, &key, &role_arn).await;
                    }
                });
            }
            return Ok(session);
        }
        let _flight = slot.lock.lock().await;
        if let Some(session) = slot.current.load_full()
            && usable(&session.credentials, session.fetched_at, SystemTime::now())
        {
            // Another request for the same caller fetched it while this one waited.
            self.hits.fetch_add(1, Ordering::Relaxed);
            record_metric(CredentialEvent::SessionHit);
            return Ok(session);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        record_metric(CredentialEvent::SessionMiss);
        self.assume(&slot, &key, &role_arn).await
    }

    fn slot(&self, key: &SessionKey) -> Arc<SessionSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(key) {
            return s.clone();
        }
        if slots.len() >= MAX_ROLE_SESSIONS {
            let now = SystemTime::now();
            slots.retain(|_, s| {
                s.current
                    .load()
                    .as_ref()
                    .is_some_and(|r| usable(&r.credentials, r.fetched_at, now))
            });
            if slots.len() >= MAX_ROLE_SESSIONS {
                // Still full of live sessions: drop the one expiring first.
                let victim = slots
                    .iter()
                    .min_by_key(|(_, s)| {
                        s.current
                            .load()
                            .as_ref()
                            .and_then(|r| r.credentials.expiry())
                    })
                    .map(|(k, _)| k.clone());
                if let Some(k) = victim {
                    slots.remove(&k);
                }
            }
        }
        let s = Arc::new(SessionSlot::default());
        slots.insert(key.clone(), s.clone());
        s
    }

    /// Call STS AssumeRole and store the session in `slot`. Caller holds `slot.lock`.
    async fn assume(
        &self,
        slot: &SessionSlot,
        key: &SessionKey,
        role_arn: &str,
    ) -> Result<Arc<RoleSession>, RoleSessionError> {
        let role_label = key.role.clone().unwrap_or_else(|| role_arn.to_string());
        let fail = |detail: String| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            record_metric(CredentialEvent::SessionError);
            tracing::warn!(role = %role_arn, principal = %key.principal, error = %detail,
                "STS AssumeRole for a caller failed");
            RoleSessionError::AssumeRole {
                role: role_label.clone(),
                detail,
            }
        };
        let session_name = role_session_name(&key.principal);
        let mut req = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(&session_name)
            .duration_seconds(i32::try_from(self.duration.as_secs()).unwrap_or(3600));
        if self.session_tags {
            for (k, v) in session_tags(&key.principal, &key.groups) {
                let tag = aws_sdk_sts::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                req = req.tags(tag);
            }
        }
        let fetched_at = SystemTime::now();
        let out = match tokio::time::timeout(FETCH_TIMEOUT, req.send()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(fail(error_chain(&e))),
            Err(_) => {
                return Err(fail(format!(
                    "STS did not answer within {}s",
                    FETCH_TIMEOUT.as_secs()
                )));
            }
        };
        let Some(c) = out.credentials() else {
            return Err(fail("STS answered without credentials".into()));
        };
        let expiry = SystemTime::try_from(*c.expiration())
            .map_err(|_| fail("STS returned an unreadable expiration".into()))?;
        let credentials = Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            Some(expiry),
            "eks-mcp-gateway-role-session",
        );
        let assumed_role_arn = out
            .assumed_role_user()
            .map(|u| u.arn().to_string())
            .unwrap_or_default();
        let session = Arc::new(RoleSession {
            credentials,
            assumed_role_arn,
            session_name,
            role_arn: role_arn.to_string(),
            fetched_at,
        });
        slot.current.store(Some(session.clone()));
        Ok(session)
    }
}

fn due(session: &RoleSession, now: SystemTime) -> bool {
    match session.credentials.expiry() {
        Some(exp) => now >= refresh_at(session.fetched_at, exp),
        None => false,
    }
}

/// True for characters STS allows in a `RoleSessionName` (`[\w+=,.@-]`).
fn session_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    hex::encode(&digest[..4])
}

/// A `RoleSessionName` for a principal: the STS alphabet `[\w+=,.@-]`, 2 to 64 characters.
/// An id that is already valid is used as is (so CloudTrail shows it verbatim). Otherwise
/// invalid characters become `_`, the result is truncated, and a short hash of the original
/// id is appended, so two different principals never share a session name.
pub fn role_session_name(principal_id: &str) -> String {
    let valid =
        (2..=64).contains(&principal_id.len()) && principal_id.chars().all(session_name_char);
    if valid {
        return principal_id.to_string();
    }
    let suffix = short_hash(principal_id);
    let keep = 64 - 1 - suffix.len();
    let mut base: String = principal_id
        .chars()
        .map(|c| if session_name_char(c) { c } else { '_' })
        .take(keep)
        .collect();
    if base.is_empty() {
        base.push_str("principal");
    }
    format!("{base}-{suffix}")
}

/// True for characters STS allows in session tag keys and values
/// (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`).
fn tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// Session tags for a caller: `principal` and (when the caller has any) `groups`, separated by
/// spaces. Values use the tag alphabet (other characters become `_`) and are truncated to 256
/// characters, with a short hash of the full value when shortened.
pub fn session_tags(principal_id: &str, groups: &[String]) -> Vec<(&'static str, String)> {
    let mut tags = vec![("principal", tag_value(principal_id))];
    if !groups.is_empty() {
        tags.push(("groups", tag_value(&groups.join(" "))));
    }
    tags
}

fn tag_value(raw: &str) -> String {
    const MAX: usize = 256;
    let clean: String = raw
        .chars()
        .map(|c| if tag_char(c) { c } else { '_' })
        .collect();
    if clean.chars().count() <= MAX {
        return clean;
    }
    let suffix = short_hash(raw);
    let keep = MAX - 1 - suffix.len();
    let base: String = clean.chars().take(keep).collect();
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn refresh_point_is_five_minutes_or_half_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(60)),
            t0 + Duration::from_secs(30)
        );
        // Already expired when fetched: refresh at once.
        assert_eq!(
            refresh_at(t0, t0 - Duration::from_secs(1)),
            t0 - Duration::from_secs(1)
        );
    }

    #[test]
    fn valid_session_names_are_kept_verbatim() {
        assert_eq!(role_session_name("alice@example.com"), "alice@example.com");
        assert_eq!(role_session_name("svc.bot-1_x+y=z,w"), "svc.bot-1_x+y=z,w");
    }

    #[test]
    fn session_names_are_sanitised_and_never_collide() {
        let names = [
            "alice smith",
            "alice_smith",
            "alice/smith",
            "a",
            "",
            "ünïcødé-user",
            &"x".repeat(64),
            &"x".repeat(65),
            &"x".repeat(200),
            &format!("{}a", "x".repeat(100)),
            &format!("{}b", "x".repeat(100)),
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let s = role_session_name(n);
            assert!((2..=64).contains(&s.len()), "{n:?} -> {s:?} has bad length");
            assert!(
                s.chars().all(session_name_char),
                "{n:?} -> {s:?} has bad chars"
            );
            assert!(seen.insert(s.clone()), "{n:?} -> {s:?} collides");
        }
        assert_eq!(role_session_name(&"x".repeat(64)), "x".repeat(64));
        assert!(role_session_name("alice smith").starts_with("alice_smith-"));
    }

    #[test]
    fn session_tags_respect_the_sts_alphabet_and_length() {
        let tags = session_tags("alice,smith", &["sre".into(), "system:masters".into()]);
        assert_eq!(tags[0], ("principal", "alice_smith".to_string()));
        assert_eq!(tags[1], ("groups", "sre system:masters".to_string()));
        let long = session_tags(&"é".repeat(300), &[]);
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].1.chars().count(), 256);
        assert!(long[0].1.chars().all(tag_char));
    }

    /// A provider that hands out credentials with a fixed lifetime and counts calls.
    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        lifetime: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail.load(Ordering::SeqCst);
            let lifetime = self.lifetime;
            future::ProvideCredentials::new(async move {
                if fail {
                    return Err(CredentialsError::not_loaded("test provider is off"));
                }
                Ok(Credentials::new(
                    format!("AKID{n}"),
                    "secret",
                    Some("token".into()),
                    Some(SystemTime::now() + lifetime),
                    "test",
                ))
            })
        }
    }

    #[tokio::test]
    async fn startup_fails_when_nothing_resolves() {
        let p = Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(3600),
            fail: true.into(),
        };
        let err = CredentialCache::start(SharedCredentialsProvider::new(p))
            .await
            .unwrap_err();
        assert!(err.message.contains("test provider is off"), "{err}");
    }

    #[tokio::test]
    async fn held_credentials_are_served_without_calling_the_chain() {
        let p = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(3600),
            fail: false.into(),
        });
        let cache =
            CredentialCache::start(SharedCredentialsProvider::new(SharedCounting(p.clone())))
                .await
                .unwrap();
        for _ in 0..100 {
            assert_eq!(cache.get().await.unwrap().access_key_id(), "AKID0");
        }
        assert_eq!(p.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            cache.stats(),
            CredentialStats {
                refreshes: 1,
                failures: 0,
                waited: 0
            }
        );
        assert!(matches!(
            cache.health(),
            CredentialHealth::Ok {
                expires_in: Some(_)
            }
        ));
    }

    #[tokio::test]
    async fn short_lived_credentials_are_refreshed_in_the_background() {
        let p = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(8),
            fail: false.into(),
        });
        let cache =
            CredentialCache::start(SharedCredentialsProvider::new(SharedCounting(p.clone())))
                .await
                .unwrap();
        // Half-life refresh: after ~4 s a new key is in place without anyone asking.
        let mut key = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            key = cache
                .inner
                .current
                .load_full()
                .unwrap()
                .creds
                .access_key_id()
                .to_string();
            if key != "AKID0" {
                break;
            }
        }
        assert_ne!(key, "AKID0", "background refresh did not happen");
        assert!(cache.stats().refreshes >= 2);
    }

    #[tokio::test]
    async fn health_goes_expiring_then_failed_when_refreshes_keep_failing() {
        let p = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            lifetime: Duration::from_secs(8),
            fail: false.into(),
        });
        let cache =
            CredentialCache::start(SharedCredentialsProvider::new(SharedCounting(p.clone())))
                .await
                .unwrap();
        p.fail.store(true, Ordering::SeqCst);
        let mut seen_expiring = false;
        let mut last = cache.health();
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = cache.health();
            match &last {
                CredentialHealth::Expiring { message, .. } => {
                    assert!(message.contains("test provider is off"), "{message}");
                    assert!(last.is_ready());
                    seen_expiring = true;
                }
                CredentialHealth::Failed { .. } => break,
                CredentialHealth::Ok { .. } => {}
            }
        }
        assert!(seen_expiring, "never reported expiring; last: {last:?}");
        assert!(!last.is_ready(), "still ready after expiry: {last:?}");
        assert!(
            last.message().contains("test provider is off"),
            "{}",
            last.message()
        );
        let err = cache.get().await.unwrap_err();
        assert!(err.message.contains("test provider is off"));
        assert!(cache.stats().failures >= 2);
    }

    #[derive(Debug)]
    struct SharedCounting(Arc<Counting>);
    impl ProvideCredentials for SharedCounting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.provide_credentials()
        }
    }
}
