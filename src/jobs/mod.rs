//! Running the durable job queue: tokio workers claim jobs from the
//! [`JobRepository`](crate::repo::JobRepository) under a lease (so a job whose worker died
//! runs again), run their handler, and record the outcome (retried with exponential backoff and
//! jitter, ended `succeeded` or `dead` with the last error kept). Handlers must be idempotent: a
//! job may run more than once (a lease that ran out, a crash between the work and its record).
//!
//! What a job is (its kinds, the jobs agora enqueues, the retry rule) is [`crate::domain::job`];
//! where jobs are stored is the repository. Jobs that must not be lost with a write are
//! enqueued in that write's transaction: the service names them, the repository inserts them.
//! This module sits above the services (its handlers call them); nothing below `service/`
//! imports it.

pub mod handlers;
pub mod worker;

pub use worker::{Handler, WorkerConfig, Workers};
