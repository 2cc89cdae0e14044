//! Rate limiting with governor's keyed GCRA limiters, in process.
//!
//! Every request under `/api/` falls in one class with its own quota: `auth` (everything under
//! `/api/auth/`, per client IP), `search`, `reads` and `writes` (per user when the bearer token
//! is valid, else per client IP), and `admin` (an admin's reads and writes, per admin; not
//! unlimited). Login attempts are also counted per username (`login`), so a guessing loop
//! against one account is cut off whatever addresses it comes from. Health, metrics, the
//! spec and Swagger UI are not limited.
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

use std::{
    fmt,
    hash::Hash,
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    str::FromStr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
    Quota, RateLimiter,
};
use poem::{
    http::{header, HeaderMap, HeaderValue, Method},
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
};

use super::request_id;
use crate::{api::error::ApiError, domain::user::Actor, service::tokens::Tokens};

/// `RateLimit-Policy`.
pub const POLICY_HEADER: &str = "ratelimit-policy";
/// `RateLimit`.
pub const STATE_HEADER: &str = "ratelimit";

/// A quota: `count` requests per `window`, written `N/s`, `N/min`, `N/h` or with a multiple
/// such as `N/15min`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed in one burst (and per window on average).
    pub count: NonZeroU32,
    /// Time to refill the whole burst.
    pub window: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate such as 100/min, 10/s, 5/15min or 1000/h");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count = count
            .trim()
            .parse::<NonZeroU32>()
            .map_err(|_| bad())?;
        let per = per.trim();
        let digits = per.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = per.split_at(digits);
        let multiple = if multiple.is_empty() {
            1
        } else {
            multiple.parse::<u64>().map_err(|_| bad())?
        };
        let unit_secs = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(bad()),
        };
        let secs = multiple
            .checked_mul(unit_secs)
            .filter(|&secs| (1..=7 * 86_400).contains(&secs))
            .ok_or_else(|| format!("`{s}`: the window must be 1 second to 7 days"))?;
        let window = Duration::from_secs(secs);
        if window.as_nanos() / u128::from(count.get()) == 0 {
            return Err(format!("`{s}`: more than one request per nanosecond"));
        }
        Ok(Rate { count, window })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.window.as_secs();
        match secs {
            s if s % 3600 == 0 => write!(f, "{}/{}h", self.count, s / 3600),
            s if s % 60 == 0 => write!(f, "{}/{}min", self.count, s / 60),
            s => write!(f, "{}/{}s", self.count, s),
        }
    }
}

impl Rate {
    fn quota(self) -> Quota {
        let period = self.window / self.count.get();
        Quota::with_period(period)
            .expect("Rate::from_str keeps the period above zero")
            .allow_burst(self.count)
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an IP address or CIDR network");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl IpNet {
    /// True when `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The quotas, from configuration.
#[derive(Debug, Clone)]
pub struct Quotas {
    /// Off: nothing is limited and no headers are sent.
    pub enabled: bool,
    /// `/api/auth/*`, per client IP.
    pub auth: Rate,
    /// Login attempts per username.
    pub login: Rate,
    /// Other non-GET requests, per user or client IP.
    pub writes: Rate,
    /// GET requests, per user or client IP.
    pub reads: Rate,
    /// Market search, per user or client IP.
    pub search: Rate,
    /// Every non-auth request of an admin, per admin.
    pub admin: Rate,
    /// Peers whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

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
}

impl<K: Hash + Eq + Clone> Policy<K> {
    fn new(name: &'static str, rate: Rate) -> Self {
        let header = format!("\"{name}\";q={};w={}", rate.count, rate.window.as_secs());
        Policy {
            name,
            header: HeaderValue::from_str(&header).expect("ASCII header"),
            refill: rate.window / rate.count.get(),
            burst: rate.count.get(),
            limiter: RateLimiter::keyed(rate.quota()).with_middleware::<StateInformationMiddleware>(),
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
    login: Policy<String>,
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
            writes: Policy::new("writes", quotas.writes),
            reads: Policy::new("reads", quotas.reads),
            search: Policy::new("search", quotas.search),
            admin: Policy::new("admin", quotas.admin),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Counts a login attempt against `username` (case-insensitively).
    pub fn check_login(&self, username: &str) -> std::result::Result<(), Throttled> {
        if !self.enabled {
            return Ok(());
        }
        self.login.check(&username.to_lowercase()).map(|_| ())
    }

    /// Drops the state of keys that are back to a full bucket and releases the memory; returns
    /// the number of keys still tracked (also kept for [`RateLimits::tracked_keys`]).
    pub fn sweep(&self) -> usize {
        let tracked = self.auth.sweep()
            + self.login.sweep()
            + self.writes.sweep()
            + self.reads.sweep()
            + self.search.sweep()
            + self.admin.sweep();
        self.tracked.store(tracked, Ordering::Relaxed);
        tracked
    }

    /// Keys tracked after the last sweep (a gauge).
    pub fn tracked_keys(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// The client address: the peer, or what a trusted proxy says the client is.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> IpAddr {
        let Some(peer) = peer.map(canonical) else {
            return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        };
        if !self.trusted(peer) {
            return peer;
        }
        let mut hops = forwarded_for(headers);
        // Right to left: the last hop a trusted proxy did not add itself is the client.
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            client = hop;
            if !self.trusted(hop) {
                break;
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
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

/// Addresses listed by `X-Forwarded-For` (all such headers, in order), else by `Forwarded`'s
/// `for=` parameters. Entries that are not addresses (`unknown`, obfuscated names) are skipped.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let parse = |raw: &str| -> Option<IpAddr> {
        let raw = raw.trim().trim_matches('"');
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Some(canonical(ip));
        }
        // `[v6]:port`, `[v6]` or `v4:port`.
        let host = match raw.strip_prefix('[') {
            Some(rest) => rest.split(']').next()?,
            None => raw.rsplit_once(':')?.0,
        };
        host.parse::<IpAddr>().ok().map(canonical)
    };
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(parse)
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.eq_ignore_ascii_case("for").then(|| parse(value))?
        })
        .collect()
}

/// An access token the rate limiter already verified, for the bearer checker to reuse.
#[derive(Debug, Clone)]
pub struct VerifiedActor(pub Actor);

/// The rate-limiting middleware.
pub struct RateLimit {
    /// The limiters.
    pub limits: Arc<RateLimits>,
    /// To tell users (and admins) from anonymous clients.
    pub tokens: Arc<Tokens>,
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint {
            inner,
            limits: self.limits.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

/// [`RateLimit`] around an endpoint.
pub struct RateLimitEndpoint<E> {
    inner: E,
    limits: Arc<RateLimits>,
    tokens: Arc<Tokens>,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> Result<Response> {
        if !self.limits.enabled || classify(req.method(), req.uri().path()) == Class::Exempt {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        }
        let actor = bearer(req.headers()).and_then(|token| self.tokens.verify(token).ok());
        if let Some(actor) = &actor {
            request_id::set_user(actor.user_id);
            req.extensions_mut().insert(VerifiedActor(actor.clone()));
        }
        let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
        let ip = self.limits.client_ip(peer, req.headers());
        let checked =
            self.limits
                .check_request(req.method(), req.uri().path(), actor.as_ref(), ip);
        let allowed = match checked {
            None => return self.inner.call(req).await.map(IntoResponse::into_response),
            Some(Err(throttled)) => return Ok(throttled.response()),
            Some(Ok(allowed)) => allowed,
        };
        let mut resp = self.inner.call(req).await?.into_response();
        // A handler's own refusal (the per-username login quota) keeps its headers.
        if !resp.headers().contains_key(STATE_HEADER) {
            let headers = resp.headers_mut();
            headers.insert(POLICY_HEADER, allowed.policy);
            if let Ok(state) = HeaderValue::from_str(&allowed.state) {
                headers.insert(STATE_HEADER, state);
            }
        }
        Ok(resp)
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(rate: &str) -> Quotas {
        let rate: Rate = rate.parse().unwrap();
        Quotas {
            enabled: true,
            auth: rate,
            login: rate,
            writes: rate,
            reads: rate,
            search: rate,
            admin: rate,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        }
    }

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "100/min".parse().unwrap();
        assert_eq!((r.count.get(), r.window), (100, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "100/1min");
        let r: Rate = "5/15min".parse().unwrap();
        assert_eq!(r.window, Duration::from_secs(900));
        assert_eq!("10/s".parse::<Rate>().unwrap().to_string(), "10/1s");
        assert_eq!("7/2h".parse::<Rate>().unwrap().window.as_secs(), 7200);
        for bad in ["", "10", "0/s", "-1/s", "10/", "10/fortnight", "10/0s", "1/8d", "x/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad} parsed");
        }
        assert!("4000000000/s".parse::<Rate>().is_err());
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let one: IpNet = "2001:db8::1".parse().unwrap();
        assert!(one.contains("2001:db8::1".parse().unwrap()));
        assert!(!one.contains("2001:db8::2".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "::/129", "host", "10.0.0.0/x"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad} parsed");
        }
    }

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
    fn forwarded_addresses_count_only_from_trusted_peers() {
        let limits = RateLimits::new(&quotas("10/s"));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.9".parse().unwrap());
        let untrusted: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(limits.client_ip(Some(untrusted), &headers), untrusted);
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // 10.0.0.9 is a trusted hop; 2.2.2.2 is the client as far as we can tell.
        assert_eq!(
            limits.client_ip(Some(proxy), &headers),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            r#"for="[2001:db8::7]:4711";proto=https, for=unknown"#.parse().unwrap(),
        );
        assert_eq!(
            limits.client_ip(Some("::1".parse().unwrap()), &headers),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
        // A trusted peer that forwards nothing is the client.
        assert_eq!(limits.client_ip(Some(proxy), &HeaderMap::new()), proxy);
        assert_eq!(
            limits.client_ip(None, &HeaderMap::new()),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        );
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
        assert_eq!(refused.state, format!("\"reads\";r=0;t={}", refused.retry_after));
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
