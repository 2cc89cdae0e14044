//! The job queue's storage, behind a trait like every other aggregate: enqueue, claim under a
//! lease, record the outcome of a run, read. Jobs that must not be lost with a write are not
//! enqueued here but handed to that write's repository method, which inserts them in its own
//! transaction (see [`MarketRepository::create`](super::MarketRepository::create)).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use time::OffsetDateTime;

use super::RepoError;
use crate::domain::{
    job::{Claimed, Job, JobFilter, JobKind, JobStatus, NewJob},
    Page, Paging,
};

/// The durable queue: jobs as rows, claimed one at a time under a lease, retried by
/// [`after_failure`](crate::domain::retry::after_failure).
#[async_trait]
pub trait JobRepository: Send + Sync {
    /// Enqueues `job` in a transaction of its own and wakes a worker. Returns the new id, or
    /// `None` when a queued job with the same dedupe key already waits (it will do the work).
    async fn enqueue(&self, job: NewJob) -> Result<Option<i64>, RepoError>;
    /// Enqueues `jobs` in one transaction, skipping those whose dedupe key is already queued,
    /// and wakes a worker when any was enqueued; returns how many were.
    async fn enqueue_all(&self, jobs: Vec<NewJob>) -> Result<u64, RepoError>;
    /// Makes sure the one periodic job of `kind` exists, running every `every`.
    async fn ensure_periodic(&self, kind: JobKind, every: Duration) -> Result<(), RepoError>;
    /// Removes the waiting periodic job of `kind` (its period was configured away).
    async fn cancel_periodic(&self, kind: JobKind) -> Result<(), RepoError>;
    /// Deletes jobs that ended (`succeeded` or `dead`) more than `age` ago; returns how many.
    /// Queued, running and periodic jobs stay.
    async fn prune_finished(&self, age: Duration) -> Result<u64, RepoError>;
    /// Claims the job due first (queued and due, or running with its lease run out), counting
    /// the run; `None` when nothing is due. Two workers never claim the same job.
    async fn claim(&self) -> Result<Option<Claimed>, RepoError>;
    /// Records a successful run: `succeeded`, or queued for the next period. `false` when the
    /// lease had run out and another claim owns the job now.
    async fn succeed(&self, claimed: &Claimed, result: Option<Value>) -> Result<bool, RepoError>;
    /// Records a failed run by [`after_failure`](crate::domain::retry::after_failure), or `dead`
    /// when a newer queued job with the same key supersedes it. Returns the status it is left
    /// in, or `None` when the lease had run out.
    async fn fail(&self, claimed: &Claimed, error: &str) -> Result<Option<JobStatus>, RepoError>;
    /// When a worker should look again: the earliest `run_at` of a queued job or lease end of
    /// a running one.
    async fn next_due(&self) -> Result<Option<OffsetDateTime>, RepoError>;
    /// One job.
    async fn get(&self, id: i64) -> Result<Option<Job>, RepoError>;
    /// A page of jobs, newest first.
    async fn list(&self, filter: JobFilter, paging: Paging) -> Result<Page<Job>, RepoError>;
    /// Jobs per status (a gauge for metrics).
    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, RepoError>;
    /// Wakes an idle worker: called after a commit that enqueued a job.
    fn wake(&self);
    /// Resolves once [`wake`](Self::wake) is called (at once when it was called while no
    /// worker waited): what an idle worker waits on, besides its timer.
    async fn woken(&self);
}
