//! Rate limiting with governor's keyed GCRA limiters, in process.
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
//! proxy. State is per process: right for one instance; behind several, limit at the shared
//! gateway instead (or with a shared store such as Redis).

mod client;
mod layer;
mod quota;

use std::{
    hash::Hash,
    net::IpAddr,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    RateLimiter,
};
use poem::{
    http::{HeaderMap, HeaderValue, Method},
    IntoResponse, Response,
};

pub use client::IpNet;
pub use layer::{RateLimit, RateLimitEndpoint, VerifiedActor};
pub use quota::{Quotas, Rate};

use crate::{api::error::ApiError, domain::user::Actor};

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

/// The headers of an allowed request.
#[derive(Debug)]
pub struct Allowed {
    policy: HeaderValue,
    state: String,
}

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One named quota over keys of type `K`.
struct Policy<K: Hash + Eq + Clone> {
    name: &'static str,
    header: HeaderValue,
    refill: Duration,
    burst: u32,
    limiter: Limiter<K>,
    rejected: AtomicU64,
}

impl<K: Hash + Eq + Clone> Policy<K> {
    fn new(name: &'static str, rate: Rate) -> Self {
        let header = format!("\"{name}\";q={};w={}", rate.count, rate.window.as_secs());
        Policy {
            name,
            header: HeaderValue::from_str(&header).expect("ASCII header"),
            refill: rate.window / rate.count.get(),
            burst: rate.count.get(),
            rejected: AtomicU64::new(0),
            limiter: RateLimiter::keyed(rate.quota())
                .with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, key: &K) -> std::result::Result<Allowed, Throttled> {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // The bucket is full again once every used cell has refilled.
                let full_in = self.refill * (self.burst - remaining.min(self.burst));
                Ok(Allowed {
                    policy: self.header.clone(),
                    state: format!("\"{}\";r={remaining};t={}", self.name, ceil_secs(full_in)),
                })
            }
            Err(not_until) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let retry_after = ceil_secs(wait).max(1);
                Err(Throttled {
                    policy: self.header.clone(),
                    state: format!("\"{}\";r=0;t={retry_after}", self.name),
                    retry_after,
                })
            }
        }
    }

    /// Forgets keys whose state equals a fresh one; returns how many are still tracked.
    fn sweep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
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
}

impl RateLimits {
    /// Limiters for `quotas`.
    pub fn new(quotas: &Quotas) -> Self {
        RateLimits {
            enabled: quotas.enabled,
            trusted_proxies: quotas.trusted_proxies.clone(),
            auth: Policy::new("auth", quotas.auth),
            login: Policy::new("login", quotas.login),
            login_account: Policy::new("login_account", quotas.login_account),
            writes: Policy::new("writes", quotas.writes),
            reads: Policy::new("reads", quotas.reads),
            search: Policy::new("search", quotas.search),
            admin: Policy::new("admin", quotas.admin),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Counts a login attempt against `username` (case-insensitively) from `ip`, then against
    /// the username's ceiling; an attempt refused for its address does not use the ceiling.
    pub fn check_login(&self, username: &str, ip: IpAddr) -> std::result::Result<(), Throttled> {
        if !self.enabled {
            return Ok(());
        }
        let username = username.to_lowercase();
        self.login.check(&(username.clone(), ip))?;
        self.login_account.check(&username).map(|_| ())
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

    /// Keys tracked after the last sweep (a gauge).
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// The client address: the peer, or what a trusted proxy says the client is.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        client::client_ip(peer, headers, &self.trusted_proxies)
    }

    /// Counts a request against its quota: `None` when it is not limited (not under
    /// `/api/`, or limiting is off), else whether it may proceed.
    pub fn check_request(
        &self,
        method: &Method,
        path: &str,
        actor: Option<&Actor>,
        ip: IpAddr,
    ) -> Option<std::result::Result<Allowed, Throttled>> {
        if !self.enabled {
            return None;
        }
        let result = match (classify(method, path), actor) {
            (Class::Exempt, _) => return None,
            (Class::Auth, _) => self.auth.check(&ip),
            (_, Some(actor)) if actor.role == crate::domain::user::Role::Admin => {
                self.admin.check(&actor.user_id)
            }
            (class, actor) => {
                let key = actor.map_or(Key::Ip(ip), |a| Key::User(a.user_id));
                match class {
                    Class::Search => self.search.check(&key),
                    Class::Reads => self.reads.check(&key),
                    _ => self.writes.check(&key),
                }
            }
        };
        Some(result)
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

    #[test]
    fn a_burst_is_allowed_then_refused_with_a_retry_time() {
        let policy = Policy::<i64>::new("reads", "3/min".parse().unwrap());
        let first = policy.check(&1).ok().unwrap();
        assert_eq!(first.policy, "\"reads\";q=3;w=60");
        assert_eq!(first.state, "\"reads\";r=2;t=20");
        policy.check(&1).ok().unwrap();
        let last = policy.check(&1).ok().unwrap();
        assert_eq!(last.state, "\"reads\";r=0;t=60");
        let refused = policy.check(&1).err().unwrap();
        assert!((19..=20).contains(&refused.retry_after), "{refused:?}");
        assert_eq!(
            refused.state,
            format!("\"reads\";r=0;t={}", refused.retry_after)
        );
        // Another key has its own bucket.
        assert!(policy.check(&2).is_ok());
    }

    #[test]
    fn idle_keys_are_forgotten_so_a_million_clients_do_not_grow_memory() {
        // 1 request per key per millisecond: a key used once is fresh again 1 ms later.
        let policy = Policy::<u64>::new("reads", "1000/s".parse().unwrap());
        let batch = 100_000u64;
        for round in 0..10 {
            for key in round * batch..(round + 1) * batch {
                assert!(policy.check(&key).is_ok());
            }
            assert_eq!(policy.limiter.len(), batch as usize);
            std::thread::sleep(Duration::from_millis(5));
            assert_eq!(policy.sweep(), 0, "round {round}");
        }
    }
}
