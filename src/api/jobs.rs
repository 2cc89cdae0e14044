//! Background jobs: read one (its owner or an admin), list them and start a reindex (admins).

use std::sync::Arc;

use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};

use super::{
    error::ApiError,
    job_models::{JobEnvelope, JobListEnvelope, JobStatusView},
    security::BearerAuth,
    ApiTags,
};
use crate::{
    domain::{
        job::{Job, JobFilter, JobKind},
        paging::lists,
        Paging,
    },
    service::jobs::JobService,
};

/// Jobs API.
pub struct JobsApi {
    /// The job use cases.
    pub jobs: Arc<JobService>,
}

/// An accepted job.
#[derive(ApiResponse)]
pub enum JobAccepted {
    /// The job is queued; follow it at `Location`.
    #[oai(status = 202)]
    Accepted(
        Json<JobEnvelope>,
        /// Path of the job.
        #[oai(header = "Location")]
        String,
    ),
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Get a job
    ///
    /// A job's status, attempts, last error and result. Readable by the user it was enqueued
    /// for (a market's creator, for its indexing) and by admins; 404 for anyone else.
    #[oai(path = "/api/jobs/:id", method = "get", operation_id = "get_job")]
    async fn get_job(
        &self,
        auth: BearerAuth,
        /// Job id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
    ) -> Result<Json<JobEnvelope>, ApiError> {
        let job = self.jobs.get(&auth.0, id.0).await?;
        Ok(Json(JobEnvelope::new(job.into())))
    }

    /// List jobs
    ///
    /// Jobs newest first, optionally only those in one status or of one kind. Admins only.
    #[oai(path = "/api/jobs", method = "get", operation_id = "list_jobs")]
    async fn list_jobs(
        &self,
        auth: BearerAuth,
        /// Only jobs in this status.
        status: Query<Option<JobStatusView>>,
        /// Only jobs of this kind (e.g. `index_market`).
        #[oai(validator(min_length = 1, max_length = 64))]
        kind: Query<Option<String>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        /// Only with the filters of that request; not with `offset`.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobListEnvelope>, ApiError> {
        let filter = JobFilter {
            status: status.0.map(Into::into),
            kind: kind.0.as_deref().map(JobKind::parse),
        };
        let list = lists::jobs(
            filter.status.map(|s| s.as_str()),
            filter.kind.as_ref().map(JobKind::as_str),
        );
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self.jobs.list(&auth.0, filter, paging.clone()).await?;
        Ok(Json(JobListEnvelope::from_page(page, &paging)))
    }

    /// Back up the database
    ///
    /// Queues a job that copies the database while the server keeps serving (a consistent
    /// snapshot via `VACUUM INTO`), checks the copy with `integrity_check`, and keeps the
    /// newest `--backup-keep` copies in `<data-dir>/backups`. The job's `result.path` names the
    /// copy. Admins only. While one backup is still waiting, returns that one. On PostgreSQL
    /// agora takes no backups (use `pg_dump`): 409 `backup_unsupported`.
    #[oai(
        path = "/api/admin/backup",
        method = "post",
        operation_id = "create_backup"
    )]
    async fn create_backup(&self, auth: BearerAuth) -> Result<JobAccepted, ApiError> {
        Ok(accepted(self.jobs.backup(&auth.0).await?))
    }

    /// Reindex every market
    ///
    /// Queues a job that queues the search indexing of every market, 32 markets a job
    /// (`index_markets`; markets whose text has not changed since their last indexing are
    /// skipped cheaply). Admins only. While one such
    /// job is still waiting, returns that one.
    #[oai(
        path = "/api/admin/reindex",
        method = "post",
        operation_id = "reindex_markets"
    )]
    async fn reindex_markets(&self, auth: BearerAuth) -> Result<JobAccepted, ApiError> {
        Ok(accepted(self.jobs.reindex(&auth.0).await?))
    }
}

/// The 202 for a queued job, pointing at it.
fn accepted(job: Job) -> JobAccepted {
    let location = format!("/api/jobs/{}", job.id);
    JobAccepted::Accepted(Json(JobEnvelope::new(job.into())), location)
}
