//! Background jobs as data: their kinds, their life, and the jobs agora enqueues. The retry rule
//! every engine's queue applies is [`super::retry`].
//!
//! Which job follows a write is decided by a service (it builds the [`NewJob`]s here) and
//! inserted by the repository in the write's own transaction; the worker loop and the handlers
//! live in [`crate::jobs`].

use std::{fmt, time::Duration};

use serde_json::{json, Value};
use time::OffsetDateTime;

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Embed a market's text and store its vector (payload `{"market_id": N}`).
    IndexMarket,
    /// Embed several markets' texts in one call and store their vectors (payload
    /// `{"market_ids": [N, ...]}`): what a reindex enqueues, up to 32 markets a job.
    IndexMarkets,
    /// Enqueue `index_markets` for every market.
    ReindexMarkets,
    /// Close every active market whose close time has passed (periodic).
    CloseDueMarkets,
    /// Back the database up into the backup directory (on request, or periodic).
    Backup,
    /// Delete jobs that ended longer ago than the retention (periodic).
    PruneJobs,
    /// Delete events older than their retention, and finished webhook deliveries as old
    /// (periodic).
    PruneEvents,
    /// Send one webhook delivery (payload `{"delivery_id": N}`): one attempt per run, retried
    /// with the queue's backoff; the last allowed run marks the delivery `failed`.
    DeliverWebhook,
    /// A kind agora does not define: stored by another version, or enqueued by a test of the
    /// queue itself. Kept readable so such a job fails ("no handler") and ends `dead` instead
    /// of making its row unreadable and the queue stuck on it.
    Other(String),
}

impl JobKind {
    /// Every kind agora defines.
    pub const KNOWN: [JobKind; 8] = [
        JobKind::IndexMarket,
        JobKind::IndexMarkets,
        JobKind::ReindexMarkets,
        JobKind::CloseDueMarkets,
        JobKind::Backup,
        JobKind::PruneJobs,
        JobKind::PruneEvents,
        JobKind::DeliverWebhook,
    ];

    /// The stored and API spelling.
    pub fn as_str(&self) -> &str {
        match self {
            JobKind::IndexMarket => "index_market",
            JobKind::IndexMarkets => "index_markets",
            JobKind::ReindexMarkets => "reindex_markets",
            JobKind::CloseDueMarkets => "close_due_markets",
            JobKind::Backup => "backup",
            JobKind::PruneJobs => "prune_jobs",
            JobKind::PruneEvents => "prune_events",
            JobKind::DeliverWebhook => "deliver_webhook",
            JobKind::Other(kind) => kind,
        }
    }

    /// Reads a stored spelling; one agora does not define is [`JobKind::Other`].
    pub fn parse(s: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .unwrap_or_else(|| JobKind::Other(s.to_owned()))
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for its `run_at` and a free worker (also between retries).
    Queued,
    /// Claimed by a worker whose lease has not run out.
    Running,
    /// Done.
    Succeeded,
    /// Failed its last allowed attempt; `last_error` says why.
    Dead,
}

impl JobStatus {
    /// Every status, in life order.
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Dead,
    ];

    /// The stored and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Id.
    pub id: i64,
    /// What to do.
    pub kind: JobKind,
    /// The handler's input.
    pub payload: Value,
    /// Where it is.
    pub status: JobStatus,
    /// Runs started so far (a run whose lease ran out counts).
    pub attempts: u32,
    /// Runs allowed before it is `dead`.
    pub max_attempts: u32,
    /// When it may run (next).
    pub run_at: OffsetDateTime,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    /// What the handler returned.
    pub result: Option<Value>,
    /// The user it was enqueued for (may read it).
    pub owner_id: Option<i64>,
    /// For periodic jobs: the time between runs.
    pub every: Option<Duration>,
    /// Enqueued.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
    /// Ended (succeeded or dead).
    pub finished_at: Option<OffsetDateTime>,
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// What to do.
    pub kind: JobKind,
    /// The handler's input.
    pub payload: Value,
    /// Who may read it besides admins.
    pub owner_id: Option<i64>,
    /// At most one queued job per key; enqueueing another while one waits does nothing.
    pub dedupe_key: Option<String>,
    /// Runs allowed (default: the queue's configured maximum).
    pub max_attempts: Option<u32>,
    /// Delay before the first run.
    pub delay: Duration,
    /// Periodic: queued again this long after each run.
    pub every: Option<Duration>,
}

impl NewJob {
    /// A job of `kind` with `payload`, to run now.
    pub fn new(kind: JobKind, payload: Value) -> Self {
        NewJob {
            kind,
            payload,
            owner_id: None,
            dedupe_key: None,
            max_attempts: None,
            delay: Duration::ZERO,
            every: None,
        }
    }

    /// Readable by `owner` too.
    pub fn owned_by(mut self, owner: i64) -> Self {
        self.owner_id = Some(owner);
        self
    }

    /// Deduplicated by `key` while queued.
    pub fn dedupe(mut self, key: String) -> Self {
        self.dedupe_key = Some(key);
        self
    }

    /// Allowed `n` runs.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    /// (Re)indexing market `market_id` for search, readable by `owner`; one waits per market.
    pub fn index_market(market_id: i64, owner: Option<i64>) -> Self {
        let kind = JobKind::IndexMarket;
        NewJob {
            owner_id: owner,
            dedupe_key: Some(format!("{kind}:{market_id}")),
            ..NewJob::new(kind, json!({ "market_id": market_id }))
        }
    }

    /// (Re)indexing the markets `market_ids` in one embedding call, readable by `owner` (a
    /// reindex's batch; a market may also wait in an `index_market` job, and whichever runs
    /// second finds its vector current).
    pub fn index_markets(market_ids: &[i64], owner: Option<i64>) -> Self {
        NewJob {
            owner_id: owner,
            ..NewJob::new(JobKind::IndexMarkets, json!({ "market_ids": market_ids }))
        }
    }

    /// Reindexing every market, for `owner`; one waits at a time.
    pub fn reindex_markets(owner: i64) -> Self {
        let kind = JobKind::ReindexMarkets;
        NewJob::new(kind.clone(), json!({}))
            .owned_by(owner)
            .dedupe(kind.to_string())
    }

    /// A backup requested by `owner`; one waits at a time.
    pub fn backup(owner: i64) -> Self {
        let kind = JobKind::Backup;
        NewJob::new(kind.clone(), json!({}))
            .owned_by(owner)
            .dedupe(kind.to_string())
    }

    /// The one periodic job of `kind`, running every `every`.
    pub fn periodic(kind: JobKind, every: Duration) -> Self {
        NewJob {
            dedupe_key: Some(periodic_key(&kind)),
            every: Some(every),
            ..NewJob::new(kind, Value::Object(Default::default()))
        }
    }
}

/// The dedupe key of the periodic job of `kind`.
pub fn periodic_key(kind: &JobKind) -> String {
    format!("periodic:{kind}")
}

/// Filters of the job list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<JobKind>,
}

/// A job a worker holds: only the holder of its lease token may record its outcome.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, as claimed (attempts already counts this run).
    pub job: Job,
    lease_token: String,
}

impl Claimed {
    /// `job`, held under `lease_token` (made by the store that claimed it).
    pub fn new(job: Job, lease_token: String) -> Self {
        Claimed { job, lease_token }
    }

    /// The token the store checks when the outcome is recorded.
    pub fn lease_token(&self) -> &str {
        &self.lease_token
    }
}

/// Retry and lease settings of the queue (the rule that uses them: [`super::retry`]).
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Runs allowed when a job does not say.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// Longest delay between runs.
    pub backoff_max: Duration,
    /// How long a claim holds a job; past it, another worker may run the job again.
    pub lease: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            lease: Duration::from_secs(70),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_stored_and_unknown_ones_stay_readable() {
        for kind in JobKind::KNOWN {
            assert_eq!(JobKind::parse(kind.as_str()), kind);
        }
        assert_eq!(JobKind::parse("flaky"), JobKind::Other("flaky".into()));
        assert_eq!(JobKind::parse("flaky").as_str(), "flaky");
    }
}
