//! Quotas counted in Redis (`--redis-url`), so that every agora process using the same Redis
//! (and the same `--redis-prefix`) shares one quota per bucket.
//!
//! # How
//!
//! Each check is one `EVALSHA` of [`gcra.lua`](gcra.lua) (the script is sent with `SCRIPT LOAD`
//! and retried when Redis answers `NOSCRIPT`, e.g. after a restart): GCRA, the algorithm
//! governor runs in process, on one key per bucket, atomically, in one round trip. The key,
//! `<prefix><quota>:<bucket>` (`agora:rl:reads:ip:203.0.113.7`, `agora:rl:login:ip:203.0.113.7
//! name:alice`, `agora:rl:writes:user:42`), holds the bucket's theoretical arrival time; it
//! expires a second after the bucket is full again, so idle clients' state disappears by
//! itself and nothing sweeps. Time is Redis's own (`TIME`), in microseconds, so processes
//! whose clocks disagree still agree on every bucket; a quota's refill interval is therefore
//! rounded down to a whole microsecond (3/2s refills one request every 666,666 µs where
//! governor counts 666,666,666 ns). Decisions, quotas and headers are otherwise exactly the
//! in-process ones: a test replays the same request times through both and compares them.
//! It needs Redis 5 or later (or Valkey), standalone or a primary; Redis Cluster and TLS are
//! not built in.
//!
//! # When Redis cannot answer
//!
//! A check waits at most `--redis-timeout-ms` (100 ms), connection included; after a failure
//! the next checks for a second do not try Redis at all (the failure rule applies at once, so
//! an outage adds no latency to every request), then one is tried again. The client reconnects
//! by itself (redis-rs's connection manager). Every check that got no answer is counted in
//! `agora_rate_limit_store_errors_total`, and a warning is logged at most every 5 s while
//! failures last, then one line when Redis answers again. No check ever becomes a 500.
//!
//! What the unanswered request gets is `--redis-failure`:
//!
//! - `open` (the default): it passes uncounted and without `RateLimit` headers. Quotas here
//!   protect capacity and fairness, and the server keeps its other bounds while they are off
//!   (request timeout, body and head limits, the bounded password-hash queue, the database
//!   pool); refusing instead would turn a Redis outage into an outage of the whole API.
//! - `closed`: it is refused with 503 `unavailable`, for deployments where a quota is a
//!   contract (paid tiers, an upstream that must never see more).
//!
//! Login attempts (the `login` and `login_account` quotas) fail closed in both modes: they are
//! the bound on password guessing, and a guesser who can slow Redis down must not get
//! unlimited guesses from it. While Redis is unreachable a login gets 503 `unavailable`;
//! signed-in clients keep working (a token refresh is not a login).
//!
//! `/readyz` pings Redis: unreachable with `closed`, readiness fails (503), since every
//! limited request would be refused; with `open` the server stays ready and says `degraded`.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use ::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, Script,
};
use clap::{Args, ValueEnum};

use super::{
    policy::{BucketKey, Decision},
    Rate,
};
use crate::config::Secret;

/// The settings of the shared rate-limit store.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Count every rate-limit quota in this Redis (`redis://[:password@]host:port/db`), shared
    /// by every agora process that uses it. Without it, each process counts its own.
    #[arg(long, global = true, env = "AGORA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    /// What a rate-limited request gets while Redis cannot answer: `open` lets it through
    /// uncounted, `closed` refuses it with 503. Login attempts are refused either way.
    #[arg(long, global = true, env = "AGORA_REDIS_FAILURE", value_enum, default_value_t = FailureMode::Open)]
    pub redis_failure: FailureMode,
    /// Longest a rate-limit check waits for Redis, in milliseconds; past it the check counts
    /// as failed.
    #[arg(
        long,
        global = true,
        env = "AGORA_REDIS_TIMEOUT_MS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    pub redis_timeout_ms: u64,
    /// Prefix of every key agora writes in Redis; processes that share quotas share it.
    #[arg(
        long,
        global = true,
        env = "AGORA_REDIS_PREFIX",
        default_value = "agora:rl:"
    )]
    pub redis_prefix: String,
}

/// What a rate-limited request gets while the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailureMode {
    /// Let it through, uncounted.
    Open,
    /// Refuse it with 503.
    Closed,
}

/// The store could not answer a check (an error, a timeout, or a known outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreDown;

const SCRIPT: &str = include_str!("gcra.lua");
/// How long checks skip Redis after a failure.
const REST: Duration = Duration::from_secs(1);
/// Least time between two warnings about the same outage.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Rate-limit buckets in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    script: Script,
    prefix: String,
    timeout: Duration,
    failure: FailureMode,
    /// `host:port/db`, for logs (the URL may hold a password).
    target: String,
    health: Health,
}

impl RedisStore {
    /// A store for `config.redis_url` (which must be set). Connects lazily: Redis may be down
    /// now and come up later.
    pub fn connect(config: &RedisConfig) -> Result<RedisStore, String> {
        let url = config
            .redis_url
            .as_ref()
            .ok_or("no --redis-url to connect to")?;
        let client = Client::open(url.0.as_str()).map_err(|e| format!("--redis-url: {e}"))?;
        let info = client.get_connection_info();
        let target = format!("{}/{}", info.addr(), info.redis_settings().db());
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1))
            .set_number_of_retries(4);
        let conn = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| format!("--redis-url: {e}"))?;
        Ok(RedisStore {
            conn,
            script: Script::new(SCRIPT),
            prefix: config.redis_prefix.clone(),
            timeout,
            failure: config.redis_failure,
            target,
            health: Health::new(),
        })
    }

    /// Where Redis is (`host:port/db`, no credentials).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// What a request gets while Redis cannot answer.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure
    }

    /// Checks that Redis answers `PING` within the check timeout; the reason when not.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let ping = ::redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Checks that answered nothing so far (errors, timeouts, checks skipped during an outage).
    pub fn errors(&self) -> u64 {
        self.health.errors.load(Ordering::Relaxed)
    }

    /// Counts one request against bucket `key` of quota `quota`, at Redis's time.
    pub(super) async fn count(
        &self,
        quota: &str,
        key: &dyn BucketKey,
        rate: Rate,
    ) -> Result<Decision, StoreDown> {
        let mut name = String::with_capacity(self.prefix.len() + quota.len() + 48);
        name.push_str(&self.prefix);
        name.push_str(quota);
        name.push(':');
        key.write_key(&mut name);
        self.decide(&name, rate, None).await
    }

    /// The script's decision for the raw key `key` (under the prefix) at `now` (time since the
    /// Unix epoch) instead of Redis's clock: for tests that replay request times.
    #[doc(hidden)]
    pub async fn count_at(
        &self,
        key: &str,
        rate: Rate,
        now: Duration,
    ) -> Result<Decision, StoreDown> {
        let name = format!("{}{key}", self.prefix);
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        self.decide(&name, rate, Some(now)).await
    }

    async fn decide(&self, key: &str, rate: Rate, now: Option<u64>) -> Result<Decision, StoreDown> {
        if self.health.resting() {
            self.health.errors.fetch_add(1, Ordering::Relaxed);
            return Err(StoreDown);
        }
        let (t, tau) = rate.gcra_micros();
        let mut invocation = self.script.key(key);
        invocation.arg(t).arg(tau);
        if let Some(now) = now {
            invocation.arg(now);
        }
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        let why = match reply {
            Ok(Ok((allowed, micros))) => {
                self.health.answered(&self.target);
                let micros = u64::try_from(micros).unwrap_or(0);
                return Ok(if allowed == 1 {
                    // As governor: (now + tau + t - tat) / t whole cells, tat - now being `micros`.
                    let remaining = (tau + t).saturating_sub(micros) / t;
                    Decision::Allowed {
                        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    }
                } else {
                    Decision::Refused {
                        wait: Duration::from_micros(micros),
                    }
                });
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        self.health.failed(&self.target, &why, self.failure);
        Err(StoreDown)
    }
}

/// Failures: their count, the pause after one, and the throttled warning.
struct Health {
    epoch: Instant,
    /// Checks skip Redis until this many milliseconds after `epoch`.
    rest_until_ms: AtomicU64,
    failing: AtomicBool,
    errors: AtomicU64,
    /// When the last warning was logged, and the error count then.
    warned: Mutex<Option<(Instant, u64)>>,
}

impl Health {
    fn new() -> Self {
        Health {
            epoch: Instant::now(),
            rest_until_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            warned: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn resting(&self) -> bool {
        self.now_ms() < self.rest_until_ms.load(Ordering::Relaxed)
    }

    fn answered(&self, target: &str) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            *self.warned.lock().unwrap_or_else(PoisonError::into_inner) = None;
            tracing::info!(
                redis = target,
                "Redis answers again; rate limits are counted there again"
            );
        }
    }

    fn failed(&self, target: &str, why: &str, mode: FailureMode) {
        let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let rest = u64::try_from(REST.as_millis()).unwrap_or(u64::MAX);
        self.rest_until_ms
            .store(self.now_ms().saturating_add(rest), Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_some_and(|(at, _)| at.elapsed() < WARN_EVERY) {
            return;
        }
        let since = warned.map_or(errors, |(_, before)| errors - before);
        *warned = Some((Instant::now(), errors));
        let rule = match mode {
            FailureMode::Open => "requests pass uncounted (logins are refused)",
            FailureMode::Closed => "limited requests are refused with 503",
        };
        tracing::warn!(
            redis = target,
            error = why,
            unanswered_checks = since,
            "rate-limit store (Redis) cannot answer; {rule} until it does"
        );
    }
}
