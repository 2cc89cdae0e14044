//! Prometheus metrics (`GET /metrics`, OpenMetrics text): requests and their latency by route
//! template and status, the read cache, the job queue, the rate limiter and the database pool.
//! Request metrics are recorded by the access-log middleware; the rest is read from its source
//! at scrape time.
//!
//! # What each metric is for
//!
//! Served unauthenticated and not rate limited, like the health probes: scrape it from inside the
//! network.
//!
//! | metric | type | labels | what it tells you |
//! |---|---|---|---|
//! | `agora_http_requests_total` | counter | `method`, `route`, `status` | Traffic and error rates per operation. `method` is an HTTP method's name, `other` for any unknown one; `route` is the operationId (`get_market`, `create_position`, ...), so the label set stays small; `-` for requests no route matched and for requests the rate limiter refused before routing. |
//! | `agora_http_request_duration_seconds` | histogram | `method`, `route` | Latency per operation (buckets 0.5 ms to 5 s): p50/p99 with `histogram_quantile`. |
//! | `agora_cache_hits_total`, `agora_cache_misses_total` | counter | | Whether the market read cache is sized right: a falling hit ratio means `--cache-mb` is too small or `--cache-ttl-secs` too short. |
//! | `agora_cache_market_bytes` | gauge | | Memory the cached markets take (as the cache weighs them), at most `--cache-mb`: at the budget with a falling hit ratio, the budget is too small. |
//! | `agora_jobs` | gauge | `status` | Background job queue depth: a growing `queued` means workers cannot keep up; any `dead` needs a look (`GET /api/jobs?status=dead`). |
//! | `agora_rate_limited_total` | counter | `policy` | 429s per quota: a quota refusing real users is set too low. |
//! | `agora_rate_limit_keys` | gauge | | Clients the rate limiter tracks after its last sweep (its memory); 0 with `--redis-url`, where keys expire in Redis. |
//! | `agora_rate_limit_store_errors_total` | counter | | Rate-limit checks Redis did not answer (an error, past `--redis-timeout-ms`, or skipped in the second after a failure); each passed uncounted or got 503 as `--redis-failure` says (logins: 503). Any increase means limits were not enforced as configured: look at Redis. Always 0 without `--redis-url`. |
//! | `agora_db_pool_waits_total` | counter | | Reads that found every pooled SQLite connection busy and waited: rising fast means `--db-readers` is too small for the load. On PostgreSQL: requests that found no idle pooled connection (`--db-pool-size`). |
//! | `agora_db_write_commits_total`, `agora_db_batched_writes_total` | counter | | SQLite only: write transactions the single writer committed, and the writes they carried (each in its own savepoint when it shares one). `rate(agora_db_batched_writes_total[1m]) / rate(agora_db_write_commits_total[1m])` is the group commit's mean batch: near 1 under write load means writes arrive one at a time (each pays its own fsync); large batches are how the writer keeps up, and `--write-batch` caps them. |
//! | `agora_event_streams_open` | gauge | | Open `GET /api/events` streams in this process (each costs a task and a slot in the per-client limit). |
//! | `agora_event_head` | gauge | | The newest event id this process has seen in the outbox: processes on one database that disagree for long have a tailer stuck. |
//! | `agora_change_feed_connected` | gauge | | PostgreSQL only: 1 while this process follows the changes other agora processes announce; 0 means their writes reach this process's caches only by the TTL (`--cache-ttl-secs`). |

use std::sync::Arc;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    middleware::rate_limit::RateLimits,
    repo::{cached::MarketCache, ChangeFeed, Engine, JobRepository},
    service::events::EventHub,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

/// Where scraped values come from.
pub struct Sources {
    /// The read cache, when enabled.
    pub cache: Option<Arc<MarketCache>>,
    /// The job queue.
    pub queue: Arc<dyn JobRepository>,
    /// The rate limiter.
    pub limits: Arc<RateLimits>,
    /// The storage engine.
    pub engine: Arc<dyn Engine>,
    /// Other processes' changes, on an engine several processes share.
    pub changes: Option<Arc<dyn ChangeFeed>>,
    /// The event streams' fan-out.
    pub hub: Arc<EventHub>,
}

/// The registry and its metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Gauge,
    jobs: Family<StatusLabels, Gauge>,
    rate_limited: Family<PolicyLabels, Counter>,
    rate_limit_keys: Gauge,
    rate_limit_store_errors: Counter,
    pool_waits: Counter,
    write_commits: Counter,
    batched_writes: Counter,
    change_feed: Gauge,
    streams: Gauge,
    event_head: Gauge,
    sources: Sources,
}

impl Metrics {
    /// Registers every metric.
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("agora");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by method, route template (the operation id; `-` when no route matched) and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by method and route template",
            latency.clone(),
        );
        let (cache_hits, cache_misses) = (Counter::default(), Counter::default());
        registry.register(
            "cache_hits",
            "Market reads answered by the cache",
            cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Market reads that went to the database",
            cache_misses.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_market_bytes",
            "Memory the cached markets take, in bytes as the cache weighs them",
            cache_bytes.clone(),
        );
        let jobs = Family::<StatusLabels, Gauge>::default();
        registry.register("jobs", "Jobs in the queue by status", jobs.clone());
        let rate_limited = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429, by quota",
            rate_limited.clone(),
        );
        let rate_limit_keys = Gauge::default();
        registry.register(
            "rate_limit_keys",
            "Clients the rate limiter tracks (after its last sweep)",
            rate_limit_keys.clone(),
        );
        let rate_limit_store_errors = Counter::default();
        registry.register(
            "rate_limit_store_errors",
            "Rate-limit checks the shared store (Redis) did not answer",
            rate_limit_store_errors.clone(),
        );
        let pool_waits = Counter::default();
        registry.register(
            "db_pool_waits",
            "Reads that found no idle database connection and waited for one",
            pool_waits.clone(),
        );
        let (write_commits, batched_writes) = (Counter::default(), Counter::default());
        if sources.engine.write_batches().is_some() {
            registry.register(
                "db_write_commits",
                "Write transactions the single writer committed (SQLite)",
                write_commits.clone(),
            );
            registry.register(
                "db_batched_writes",
                "Writes those transactions carried: over agora_db_write_commits_total, the group commit's mean batch",
                batched_writes.clone(),
            );
        }
        let change_feed = Gauge::default();
        if sources.changes.is_some() {
            registry.register(
                "change_feed_connected",
                "1 while other processes' changes are followed (PostgreSQL); 0: caches fall back to their TTL",
                change_feed.clone(),
            );
        }
        let streams = Gauge::default();
        registry.register(
            "event_streams_open",
            "Event streams (GET /api/events) open in this process",
            streams.clone(),
        );
        let event_head = Gauge::default();
        registry.register(
            "event_head",
            "The newest event id this process has read from the outbox",
            event_head.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            cache_hits,
            cache_misses,
            cache_bytes,
            jobs,
            rate_limited,
            rate_limit_keys,
            rate_limit_store_errors,
            pool_waits,
            write_commits,
            batched_writes,
            change_feed,
            streams,
            event_head,
            sources,
        }
    }

    /// Records one answered request. Label values come from fixed sets (a known method name
    /// or `other`, an operation id or `-`), so no request can add label series of its own.
    pub fn request(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { method, route })
            .observe(seconds);
    }

    /// Reads the scraped values and encodes everything as OpenMetrics text.
    pub async fn render(&self) -> String {
        let s = &self.sources;
        if let Some(cache) = &s.cache {
            let stats = cache.stats();
            catch_up(&self.cache_hits, stats.hits);
            catch_up(&self.cache_misses, stats.misses);
            self.cache_bytes.set(cache.market_bytes() as i64);
        }
        if let Ok(counts) = s.queue.counts().await {
            for (status, n) in counts {
                let labels = StatusLabels {
                    status: status.as_str().to_owned(),
                };
                self.jobs.get_or_create(&labels).set(n as i64);
            }
        }
        for (policy, n) in s.limits.rejections() {
            let labels = PolicyLabels {
                policy: policy.to_owned(),
            };
            catch_up(&self.rate_limited.get_or_create(&labels), n);
        }
        self.rate_limit_keys.set(s.limits.tracked_keys() as i64);
        catch_up(&self.rate_limit_store_errors, s.limits.store_errors());
        catch_up(&self.pool_waits, s.engine.pool_waits());
        if let Some((commits, writes)) = s.engine.write_batches() {
            catch_up(&self.write_commits, commits);
            catch_up(&self.batched_writes, writes);
        }
        if let Some(changes) = &s.changes {
            self.change_feed.set(i64::from(changes.connected()));
        }
        self.streams.set(s.hub.open_streams() as i64);
        self.event_head.set(s.hub.head());
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Brings a counter up to a total kept elsewhere.
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}
