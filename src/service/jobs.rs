//! Job use cases: a job's owner or an admin may read it; admins list jobs and start a reindex
//! or a backup.

use std::sync::Arc;

use super::users::require;
use crate::{
    domain::{
        job::{Job, JobFilter, JobKind, JobStatus, NewJob},
        user::{Actor, Permission},
        Page, Paging,
    },
    error::AppError,
    repo::JobRepository,
};

/// Jobs as the API sees them.
pub struct JobService {
    jobs: Arc<dyn JobRepository>,
    backups_refused: Option<String>,
}

impl JobService {
    /// A service over `jobs`.
    pub fn new(jobs: Arc<dyn JobRepository>) -> Self {
        JobService {
            jobs,
            backups_refused: None,
        }
    }

    /// Refuses backups, saying `why` (the engine takes none: [`Backup::refusal`]).
    ///
    /// [`Backup::refusal`]: crate::repo::Backup::refusal
    pub fn refusing_backups(mut self, why: Option<String>) -> Self {
        self.backups_refused = why;
        self
    }

    /// One job, for its owner or an admin (others get `NotFound`, so ids reveal nothing).
    pub async fn get(&self, actor: &Actor, id: i64) -> Result<Job, AppError> {
        match self.jobs.get(id).await? {
            Some(job) if job.owner_id == Some(actor.user_id) || actor.can(Permission::Admin) => {
                Ok(job)
            }
            _ => Err(AppError::NotFound("job")),
        }
    }

    /// A page of jobs, newest first (admins).
    pub async fn list(
        &self,
        actor: &Actor,
        filter: JobFilter,
        paging: Paging,
    ) -> Result<Page<Job>, AppError> {
        require(actor, Permission::Admin)?;
        Ok(self.jobs.list(filter, paging).await?)
    }

    /// Enqueues the reindexing of every market (admins); while one waits, returns that one.
    pub async fn reindex(&self, actor: &Actor) -> Result<Job, AppError> {
        require(actor, Permission::Admin)?;
        self.enqueue_once(NewJob::reindex_markets(actor.user_id))
            .await
    }

    /// Enqueues a backup of the database (admins); while one waits, returns that one.
    pub async fn backup(&self, actor: &Actor) -> Result<Job, AppError> {
        require(actor, Permission::Admin)?;
        if let Some(why) = &self.backups_refused {
            return Err(AppError::conflict("backup_unsupported", why.clone()));
        }
        self.enqueue_once(NewJob::backup(actor.user_id)).await
    }

    /// Enqueues `job`, or finds the one of its kind already waiting.
    async fn enqueue_once(&self, job: NewJob) -> Result<Job, AppError> {
        let kind = job.kind.clone();
        let id = match self.jobs.enqueue(job).await? {
            Some(id) => id,
            None => self.waiting(kind).await?,
        };
        self.jobs
            .get(id)
            .await?
            .ok_or(AppError::Internal("an enqueued job vanished".into()))
    }

    async fn waiting(&self, kind: JobKind) -> Result<i64, AppError> {
        let filter = JobFilter {
            status: Some(JobStatus::Queued),
            kind: Some(kind),
        };
        let page = self.jobs.list(filter, Paging::first(1)).await?;
        page.items
            .first()
            .map(|job| job.id)
            .ok_or(AppError::conflict(
                "job_pending",
                "such a job was just queued; retry",
            ))
    }
}
