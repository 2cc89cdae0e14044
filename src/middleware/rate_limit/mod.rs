//! Rate limiting: GCRA quotas per class and per key, counted in process (governor) or in Redis.
//!
//! Every request under `/api/` falls in one class with its own quota: `auth` (everything under
//! `/api/auth/`, per client IP), `search`, `reads` and `writes` (per user when the bearer token
//! is valid, else per client IP), and `admin` (an admin's reads and writes, per admin; not
//! unlimited). Login attempts are also counted per username and client IP (`login`, 10 per
//! 15 minutes), so a guessing loop from one address is cut off while the owner, elsewhere,
//! can still sign in; and per username from all addresses together (`login_account`, 200 per
//! 15 minutes), the ceiling on guessing spread over many addresses. (A single per-username
//! quota let anyone lock any account out with ten wrong passwords.) Health, metrics, the spec
//! and Swagger UI are not limited.
//!
//! A quota `N/window` lets a burst of N requests through and refills one every window/N. Each
//! limited response says so in `RateLimit-Policy: "reads";q=N;w=SECONDS` and
//! `RateLimit: "reads";r=REMAINING;t=SECONDS_UNTIL_FULL` (IETF httpapi ratelimit-headers
//! draft); a refusal is 429 with the JSON envelope, code `rate_limited`, and a whole-second
//! `Retry-After` rounded up, so a retry after it succeeds.
//!
//! The client IP is the TCP peer, unless the peer is one of `--trusted-proxies`: then it is the
//! right-most address in `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted
//! proxy.
//!
//! Where the buckets are counted is the one thing that varies: by default governor's keyed
//! limiters in this process (right for one instance: behind several, each counts its own, so
//! the quotas add up to N times the configured ones); with `--redis-url`, the same GCRA in
//! Redis, shared by every process ([`redis`] says how, and what happens when Redis cannot
//! answer). Each quota (`policy.rs`) hides which it uses behind one `check`, so the middleware
//! and the login handler do not know.
//!
//! ## Across processes
//!
//! **Without `--redis-url`** the quotas are counted by governor in the process. Right for one
//! process; with several, each counts its own, so a client spread over N processes gets N times
//! every quota. Then pass `--redis-url` (below), or limit at the load balancer or gateway and run
//! agora with `--rate-limit off`.
//!
//! **With `--redis-url redis://host:port/db`** every quota (every class, per user and per address,
//! and both login quotas) is counted in Redis, so all processes using it share one quota: the same
//! GCRA as governor (burst N, one request back every window/N), the same quotas, headers and 429,
//! as one Lua script per check (one round trip; `EVALSHA`), on keys `agora:rl:<quota>:<bucket>`
//! (`--redis-prefix`) that expire by themselves once their bucket is full again, with time taken
//! from Redis so the processes' clocks need not agree. It needs Redis 5 or later (or Valkey); TLS is
//! not built in. A check waits at most `--redis-timeout-ms` (100 ms). While Redis cannot answer:
//!
//! - `--redis-failure open` (the default): limited requests pass uncounted, without `RateLimit`
//!   headers; `/readyz` stays 200 with status `degraded`. Quotas protect capacity, the server keeps
//!   its other bounds, and refusing everything would turn a Redis outage into an API outage.
//! - `--redis-failure closed`: limited requests get 503 `unavailable` and `/readyz` is 503, for
//!   quotas that are a contract.
//! - Either way, **logins get 503**: the login quotas are the bound on password guessing and fail
//!   closed. Signed-in clients keep working (refreshing a token is not a login).
//!
//! Unanswered checks are counted in `agora_rate_limit_store_errors_total`, a warning is logged at
//! most every 5 s while they last, and after a failure checks skip Redis for a second (so an outage
//! adds no latency). The client reconnects by itself: limits are back as soon as Redis is, without
//! a restart. Details: `redis.rs`.

mod client;
mod layer;
mod policy;
mod quota;
pub mod redis;

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
};

use poem::{
    http::{HeaderMap, HeaderValue, Method},
    IntoResponse, Response,
};

pub use self::redis::{FailureMode, RedisConfig, RedisStore};
pub use client::IpNet;
pub use layer::{RateLimit, RateLimitEndpoint, VerifiedActor};
pub use policy::{Allowed, Decision};
pub use quota::{Quotas, Rate};

use self::redis::StoreDown;
use crate::{api::error::ApiError, domain::user::Actor};
use policy::Policy;

/// `RateLimit-Policy`.
pub const POLICY_HEADER: &str = "ratelimit-policy";
/// `RateLimit`.
pub const STATE_HEADER: &str = "ratelimit";

/// Who a quota is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An authenticated user.
    User(i64),
    /// An anonymous client.
    Ip(IpAddr),
}

/// A refusal: which policy, and when to come back.
#[derive(Debug, Clone)]
pub struct Throttled {
    /// `RateLimit-Policy` value.
    pub policy: HeaderValue,
    /// `RateLimit` value.
    pub state: String,
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
}

impl Throttled {
    /// The 429 response.
    pub fn response(&self) -> Response {
        ApiError::rate_limited(self).into_response()
    }
}

/// Why a limited request may not proceed.
#[derive(Debug, Clone)]
pub enum Refused {
    /// Its quota is used up: 429.
    Throttled(Throttled),
    /// The quota could not be checked (Redis cannot answer) and this quota fails closed: 503.
    Unchecked,
}

impl Refused {
    /// The response: 429 `rate_limited` or 503 `unavailable`.
    pub fn response(&self) -> Response {
        ApiError::from(self).into_response()
    }
}

/// Which quota a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Exempt,
    Auth,
    Search,
    Reads,
    Writes,
}

fn classify(method: &Method, path: &str) -> Class {
    let Some(rest) = path.strip_prefix("/api/") else {
        return Class::Exempt;
    };
    let read = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if rest.starts_with("auth/") {
        Class::Auth
    } else if read && rest.trim_end_matches('/') == "markets/search" {
        Class::Search
    } else if read {
        Class::Reads
    } else {
        Class::Writes
    }
}

/// Every limiter of the server.
pub struct RateLimits {
    enabled: bool,
    trusted_proxies: Vec<IpNet>,
    auth: Policy<IpAddr>,
    login: Policy<(String, IpAddr)>,
    login_account: Policy<String>,
    writes: Policy<Key>,
    reads: Policy<Key>,
    search: Policy<Key>,
    admin: Policy<i64>,
    tracked: AtomicUsize,
    store: Option<Arc<RedisStore>>,
}

/// Whether the shared store can count, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Quotas are counted in this process: nothing to reach.
    InProcess,
    /// Redis answers.
    Up,
    /// Redis does not answer; requests get what `mode` says.
    Down {
        /// Why not.
        why: String,
        /// What limited requests get meanwhile.
        mode: FailureMode,
    },
}

impl RateLimits {
    /// Limiters for `quotas`, counted in this process.
    pub fn new(quotas: &Quotas) -> Self {
        Self::build(quotas, None)
    }

    /// Limiters for `quotas`, counted in `store` and shared with every process that uses it.
    pub fn shared(quotas: &Quotas, store: Arc<RedisStore>) -> Self {
        Self::build(quotas, Some(store))
    }

    fn build(quotas: &Quotas, store: Option<Arc<RedisStore>>) -> Self {
        let s = store.as_ref();
        RateLimits {
            enabled: quotas.enabled,
            trusted_proxies: quotas.trusted_proxies.clone(),
            auth: Policy::new("auth", quotas.auth, s),
            login: Policy::new("login", quotas.login, s),
            login_account: Policy::new("login_account", quotas.login_account, s),
            writes: Policy::new("writes", quotas.writes, s),
            reads: Policy::new("reads", quotas.reads, s),
            search: Policy::new("search", quotas.search, s),
            admin: Policy::new("admin", quotas.admin, s),
            tracked: AtomicUsize::new(0),
            store,
        }
    }

    /// Whether quotas are counted in this process (and so need [`RateLimits::sweep`]).
    pub fn in_process(&self) -> bool {
        self.store.is_none()
    }

    /// Counts a login attempt against `username` (case-insensitively) from `ip`, then against
    /// the username's ceiling; an attempt refused for its address does not use the ceiling.
    /// These quotas fail closed: when Redis cannot answer, the attempt is refused.
    pub async fn check_login(
        &self,
        username: &str,
        ip: IpAddr,
    ) -> std::result::Result<(), Refused> {
        if !self.enabled {
            return Ok(());
        }
        let username = username.to_lowercase();
        closed(self.login.check(&(username.clone(), ip)).await)?;
        closed(self.login_account.check(&username).await)
    }

    /// Drops the state of keys that are back to a full bucket and releases the memory; returns
    /// the number of keys still tracked (also kept for [`RateLimits::tracked_keys`]).
    pub fn sweep(&self) -> usize {
        let tracked = self.auth.sweep()
            + self.login.sweep()
            + self.login_account.sweep()
            + self.writes.sweep()
            + self.reads.sweep()
            + self.search.sweep()
            + self.admin.sweep();
        self.tracked.store(tracked, Ordering::Relaxed);
        tracked
    }

    /// Requests refused so far, per quota.
    pub fn rejections(&self) -> [(&'static str, u64); 7] {
        let n = |rejected: &AtomicU64| rejected.load(Ordering::Relaxed);
        [
            (self.auth.name, n(&self.auth.rejected)),
            (self.login.name, n(&self.login.rejected)),
            (self.login_account.name, n(&self.login_account.rejected)),
            (self.writes.name, n(&self.writes.rejected)),
            (self.reads.name, n(&self.reads.rejected)),
            (self.search.name, n(&self.search.rejected)),
            (self.admin.name, n(&self.admin.rejected)),
        ]
    }

    /// Keys tracked after the last sweep (a gauge; 0 with Redis, whose keys expire by
    /// themselves).
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Checks that got no answer from the shared store (0 in process).
    pub fn store_errors(&self) -> u64 {
        self.store.as_ref().map_or(0, |store| store.errors())
    }

    /// Whether the shared store answers now.
    pub async fn store_health(&self) -> StoreHealth {
        let Some(store) = self.store.as_ref().filter(|_| self.enabled) else {
            return StoreHealth::InProcess;
        };
        match store.ping().await {
            Ok(()) => StoreHealth::Up,
            Err(why) => StoreHealth::Down {
                why,
                mode: store.failure_mode(),
            },
        }
    }

    /// The client address: the peer, or what a trusted proxy says the client is.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        client::client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Counts a request against its quota: `None` when it is not limited (not under `/api/`,
    /// limiting is off, or Redis cannot answer and failures are open), else whether it may
    /// proceed.
    pub async fn check_request(
        &self,
        method: &Method,
        path: &str,
        actor: Option<&Actor>,
        ip: IpAddr,
    ) -> Option<std::result::Result<Allowed, Refused>> {
        if !self.enabled {
            return None;
        }
        let checked = match (classify(method, path), actor) {
            (Class::Exempt, _) => return None,
            (Class::Auth, _) => self.auth.check(&ip).await,
            (_, Some(actor)) if actor.role == crate::domain::user::Role::Admin => {
                self.admin.check(&actor.user_id).await
            }
            (class, actor) => {
                let key = actor.map_or(Key::Ip(ip), |a| Key::User(a.user_id));
                match class {
                    Class::Search => self.search.check(&key).await,
                    Class::Reads => self.reads.check(&key).await,
                    _ => self.writes.check(&key).await,
                }
            }
        };
        match checked {
            Ok(result) => Some(result.map_err(Refused::Throttled)),
            Err(StoreDown) => match self.store.as_ref().map(|s| s.failure_mode()) {
                Some(FailureMode::Closed) => Some(Err(Refused::Unchecked)),
                _ => None,
            },
        }
    }
}

/// A check that fails closed: an unanswered one refuses.
fn closed(
    checked: std::result::Result<std::result::Result<Allowed, Throttled>, StoreDown>,
) -> std::result::Result<(), Refused> {
    match checked {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(throttled)) => Err(Refused::Throttled(throttled)),
        Err(StoreDown) => Err(Refused::Unchecked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_fall_in_their_class() {
        assert_eq!(classify(&Method::GET, "/healthz"), Class::Exempt);
        assert_eq!(classify(&Method::GET, "/docs"), Class::Exempt);
        assert_eq!(classify(&Method::POST, "/api/auth/login"), Class::Auth);
        assert_eq!(classify(&Method::GET, "/api/markets/search"), Class::Search);
        assert_eq!(classify(&Method::GET, "/api/markets/7"), Class::Reads);
        assert_eq!(classify(&Method::HEAD, "/api/markets"), Class::Reads);
        assert_eq!(classify(&Method::POST, "/api/markets"), Class::Writes);
        assert_eq!(classify(&Method::DELETE, "/api/markets/7"), Class::Writes);
    }
}
