//! The durable job queue: jobs are rows of the `jobs` table, inserted in the same transaction
//! as the change that needs them (so a crash cannot lose one), claimed by tokio workers under a
//! lease (so a job whose worker died runs again), retried with exponential backoff and jitter,
//! and ended `succeeded` or `dead` with the last error kept. Handlers must be idempotent: a job
//! may run more than once (a lease that ran out, a crash between the work and its record).

pub mod handlers;
pub mod queue;
pub mod worker;

use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;

pub use queue::{Queue, QueueConfig};
pub use worker::{Handler, WorkerConfig, Workers};

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
    /// What to do (`index_market`, `reindex_markets`, `close_due_markets`, ...).
    pub kind: String,
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
    pub kind: String,
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
    pub fn new(kind: &str, payload: Value) -> Self {
        NewJob {
            kind: kind.to_owned(),
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
}

/// Filters of the job list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this status.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}
