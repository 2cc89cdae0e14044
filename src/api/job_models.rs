//! Schemas of background jobs.

use std::collections::BTreeMap;

use poem_openapi::{types::Example, Enum, Object};
use time::{macros::datetime, OffsetDateTime};

use super::envelope::{envelope, ListMeta};
use crate::domain::job::{Job, JobStatus};

/// Where a job is: `queued` (waiting, also between retries) -> `running` -> `succeeded`, or
/// `dead` after its last allowed run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum JobStatusView {
    /// Waiting for its time and a free worker.
    Queued,
    /// A worker holds it.
    Running,
    /// Done.
    Succeeded,
    /// Failed every allowed run; `last_error` says why.
    Dead,
}

impl From<JobStatus> for JobStatusView {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Dead => Self::Dead,
        }
    }
}

impl From<JobStatusView> for JobStatus {
    fn from(s: JobStatusView) -> Self {
        match s {
            JobStatusView::Queued => Self::Queued,
            JobStatusView::Running => Self::Running,
            JobStatusView::Succeeded => Self::Succeeded,
            JobStatusView::Dead => Self::Dead,
        }
    }
}

/// A JSON object.
pub type JsonObject = BTreeMap<String, serde_json::Value>;

/// `value` as an object (a non-object is wrapped as `{"value": ...}`).
fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map.into_iter().collect(),
        other => BTreeMap::from([("value".to_owned(), other)]),
    }
}

/// A background job.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct JobView {
    /// Job id.
    pub id: i64,
    /// What it does: `index_market`, `index_markets`, `reindex_markets`, `close_due_markets`,
    /// `backup`, `prune_jobs`, `prune_events` or `deliver_webhook`.
    pub kind: String,
    /// Its input.
    pub payload: JsonObject,
    /// Where it is.
    pub status: JobStatusView,
    /// Runs started so far.
    pub attempts: u32,
    /// Runs allowed before it is `dead`.
    pub max_attempts: u32,
    /// When it runs (next), for queued jobs.
    pub run_at: OffsetDateTime,
    /// The error of the last failed run.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// What the last successful run returned.
    #[oai(nullable)]
    pub result: Option<JsonObject>,
    /// For periodic jobs: seconds between runs.
    #[oai(nullable)]
    pub every_secs: Option<f64>,
    /// Enqueued.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
    /// When it ended (`succeeded` or `dead`).
    #[oai(nullable)]
    pub finished_at: Option<OffsetDateTime>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        JobView {
            id: j.id,
            kind: j.kind.to_string(),
            payload: object(j.payload),
            status: j.status.into(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            last_error: j.last_error,
            result: j.result.map(object),
            every_secs: j.every.map(|e| e.as_secs_f64()),
            created_at: j.created_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
        }
    }
}

impl Example for JobView {
    fn example() -> Self {
        let t = datetime!(2026-11-01 12:00 UTC);
        JobView {
            id: 17,
            kind: "index_market".into(),
            payload: object(serde_json::json!({ "market_id": 42 })),
            status: JobStatusView::Succeeded,
            attempts: 1,
            max_attempts: 5,
            run_at: t,
            last_error: None,
            result: Some(object(
                serde_json::json!({ "market_id": 42, "outcome": "embedded" }),
            )),
            every_secs: None,
            created_at: t,
            updated_at: t,
            finished_at: Some(t),
        }
    }
}

envelope! {
    /// A job.
    JobEnvelope { data: JobView }
}

envelope! {
    /// A page of jobs, newest first.
    JobListEnvelope { data: Vec<JobView>, meta: ListMeta }
}
