//! [`JobRepository`] on PostgreSQL: the `jobs` table. Claims take the due row with
//! `FOR UPDATE SKIP LOCKED` (workers of any process never wait on, or take, one another's
//! job) under a lease; a run's outcome is recorded only while its lease token still owns the
//! job, so a worker whose lease ran out cannot overwrite the next claim's run.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::FutureExt;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_postgres::Row;

use super::{now_ms, read, snapshot, transaction, Conn, Pg, TxError};
use crate::{
    domain::{
        job::{periodic_key, Claimed, Job, JobFilter, JobKind, JobStatus, NewJob, QueueConfig},
        paging::KeyPart,
        retry::after_failure,
        Page, Paging,
    },
    repo::{from_millis, JobRepository, RepoError},
};

/// The queue in PostgreSQL.
pub struct PgJobRepository {
    pg: Arc<Pg>,
    config: QueueConfig,
    wake: Notify,
}

const COLUMNS: &str = "id, kind, payload, status, attempts, max_attempts, run_at, last_error,
    result, owner_id, every_ms, created_at, updated_at, finished_at";

fn job_from_row(row: &Row, default_attempts: u32) -> Result<Job, TxError> {
    let status: &str = row.try_get(3)?;
    Ok(Job {
        id: row.try_get(0)?,
        kind: JobKind::parse(row.try_get(1)?),
        payload: row.try_get(2)?,
        status: JobStatus::parse(status).ok_or_else(|| {
            TxError::Repo(RepoError::Internal(format!("bad job status {status}")))
        })?,
        attempts: row.try_get::<_, i64>(4)? as u32,
        max_attempts: row
            .try_get::<_, Option<i64>>(5)?
            .map_or(default_attempts, |n| n as u32),
        run_at: from_millis(row.try_get(6)?),
        last_error: row.try_get(7)?,
        result: row.try_get(8)?,
        owner_id: row.try_get(9)?,
        every: row
            .try_get::<_, Option<i64>>(10)?
            .map(|ms| Duration::from_millis(ms.max(1) as u64)),
        created_at: from_millis(row.try_get(11)?),
        updated_at: from_millis(row.try_get(12)?),
        finished_at: row.try_get::<_, Option<i64>>(13)?.map(from_millis),
    })
}

/// Inserts `job` inside the transaction of `c`: the way a change enqueues the work it needs
/// atomically with itself. Returns the new id, or `None` when a queued job with the same
/// dedupe key already waits (it will do the work).
pub(super) async fn insert(c: &Conn<'_>, job: &NewJob) -> Result<Option<i64>, TxError> {
    let now = now_ms();
    let run_at = now + job.delay.as_millis() as i64;
    let max_attempts = job.max_attempts.map(i64::from);
    let every = job.every.map(|e| e.as_millis().max(1) as i64);
    c.opt(
        "INSERT INTO jobs (kind, payload, max_attempts, run_at, owner_id, dedupe_key, every_ms,
                           created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT DO NOTHING
         RETURNING id",
        &[
            &job.kind.as_str(),
            &job.payload,
            &max_attempts,
            &run_at,
            &job.owner_id,
            &job.dedupe_key,
            &every,
            &now,
        ],
    )
    .await?
    .map(|r| Ok(r.try_get(0)?))
    .transpose()
}

impl PgJobRepository {
    pub(super) fn new(pg: Arc<Pg>, config: QueueConfig) -> Self {
        PgJobRepository {
            pg,
            config,
            wake: Notify::new(),
        }
    }
}

#[async_trait]
impl JobRepository for PgJobRepository {
    async fn enqueue(&self, job: NewJob) -> Result<Option<i64>, RepoError> {
        let id = read(&self.pg, |client| async move {
            insert(&Conn::client(&client), &job).await
        })
        .await?;
        self.wake();
        Ok(id)
    }

    async fn enqueue_all(&self, jobs: Vec<NewJob>) -> Result<u64, RepoError> {
        let n = transaction(&self.pg, |c| {
            let jobs = jobs.clone();
            async move {
                let mut n = 0;
                for job in &jobs {
                    n += u64::from(insert(c, job).await?.is_some());
                }
                Ok(n)
            }
            .boxed()
        })
        .await?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    async fn ensure_periodic(&self, kind: JobKind, every: Duration) -> Result<(), RepoError> {
        let job = NewJob::periodic(kind, every);
        transaction(&self.pg, |c| {
            let job = job.clone();
            async move {
                let every_ms = every.as_millis().max(1) as i64;
                // Several processes may start at once: the key's lock orders them, so exactly
                // one inserts the periodic job and the others update it.
                c.exec(
                    "SELECT pg_advisory_xact_lock(hashtext($1))",
                    &[&job.dedupe_key],
                )
                .await?;
                let updated = c
                    .exec(
                        "UPDATE jobs SET every_ms = $2
                          WHERE dedupe_key = $1 AND status IN ('queued', 'running')",
                        &[&job.dedupe_key, &every_ms],
                    )
                    .await?;
                if updated == 0 {
                    insert(c, &job).await?;
                }
                Ok(())
            }
            .boxed()
        })
        .await?;
        self.wake();
        Ok(())
    }

    async fn cancel_periodic(&self, kind: JobKind) -> Result<(), RepoError> {
        let key = periodic_key(&kind);
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .exec(
                    "DELETE FROM jobs WHERE dedupe_key = $1 AND status = 'queued'",
                    &[&key],
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn prune_finished(&self, age: Duration) -> Result<u64, RepoError> {
        let cutoff = now_ms() - age.as_millis() as i64;
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .exec(
                    "DELETE FROM jobs WHERE status IN ('succeeded', 'dead')
                        AND finished_at < $1 AND every_ms IS NULL",
                    &[&cutoff],
                )
                .await
        })
        .await
    }

    /// One statement: the due job is locked with SKIP LOCKED, so two workers (of any
    /// process) never claim the same job, nor wait on each other.
    async fn claim(&self) -> Result<Option<Claimed>, RepoError> {
        let (lease, default_attempts) = (self.config.lease, self.config.max_attempts);
        read(&self.pg, |client| async move {
            let now = now_ms();
            let token = uuid::Uuid::new_v4().to_string();
            let lease_until = now + lease.as_millis() as i64;
            let job = Conn::client(&client)
                .opt(
                    &format!(
                        "WITH queued AS (
                             SELECT id, run_at AS due FROM jobs
                              WHERE status = 'queued' AND run_at <= $1
                              ORDER BY run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED),
                         expired AS (
                             SELECT id, lease_until AS due FROM jobs
                              WHERE status = 'running' AND lease_until < $1
                              ORDER BY lease_until, id LIMIT 1 FOR UPDATE SKIP LOCKED)
                         UPDATE jobs SET status = 'running', attempts = attempts + 1,
                                lease_until = $2, lease_token = $3, updated_at = $1
                          WHERE id = (SELECT id FROM (SELECT * FROM queued UNION ALL SELECT * FROM expired) d
                                       ORDER BY due LIMIT 1)
                          RETURNING {COLUMNS}"
                    ),
                    &[&now, &lease_until, &token],
                )
                .await?
                .map(|r| job_from_row(&r, default_attempts))
                .transpose()?;
            Ok(job.map(|job| Claimed::new(job, token)))
        })
        .await
    }

    async fn succeed(&self, claimed: &Claimed, result: Option<Value>) -> Result<bool, RepoError> {
        let (id, token) = (claimed.job.id, claimed.lease_token().to_owned());
        let every = claimed.job.every.map(|e| e.as_millis() as i64);
        read(&self.pg, |client| async move {
            let now = now_ms();
            let c = Conn::client(&client);
            let changed = match every {
                Some(every) => {
                    c.exec(
                        "UPDATE jobs SET status = 'queued', attempts = 0, lease_until = NULL,
                                lease_token = NULL, result = $3, last_error = NULL,
                                run_at = $4::bigint + $5::bigint, updated_at = $4
                          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                        &[&id, &token, &result, &now, &every],
                    )
                    .await?
                }
                None => {
                    c.exec(
                        "UPDATE jobs SET status = 'succeeded', lease_until = NULL,
                                lease_token = NULL, result = $3, updated_at = $4,
                                finished_at = $4
                          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                        &[&id, &token, &result, &now],
                    )
                    .await?
                }
            };
            Ok(changed == 1)
        })
        .await
    }

    async fn fail(&self, claimed: &Claimed, error: &str) -> Result<Option<JobStatus>, RepoError> {
        let (id, token) = (claimed.job.id, claimed.lease_token().to_owned());
        let retry = after_failure(&claimed.job, &self.config);
        let error: String = error.chars().take(2000).collect();
        transaction(&self.pg, |c| {
            let (token, error) = (token.clone(), error.clone());
            async move {
                let now = now_ms();
                // A newer queued job with the same key supersedes this one's retry.
                let superseded: Option<i64> = c
                    .opt(
                        "SELECT newer.id FROM jobs AS this JOIN jobs AS newer
                            ON newer.dedupe_key = this.dedupe_key AND newer.status = 'queued'
                         WHERE this.id = $1",
                        &[&id],
                    )
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                let (status, error) = match superseded {
                    Some(newer) => (
                        JobStatus::Dead,
                        format!("{error} (superseded by job {newer})"),
                    ),
                    None if retry.dead => (JobStatus::Dead, error),
                    None => (JobStatus::Queued, error),
                };
                let reset = retry.exhausted && status == JobStatus::Queued;
                let finished = (status == JobStatus::Dead).then_some(now);
                let changed = c
                    .exec(
                        "UPDATE jobs SET status = $3, last_error = $4, lease_until = NULL,
                                lease_token = NULL, run_at = $5::bigint + $6::bigint, updated_at = $5,
                                attempts = CASE WHEN $7 THEN 0 ELSE attempts END,
                                finished_at = $8
                          WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                        &[
                            &id,
                            &token,
                            &status.as_str(),
                            &error,
                            &now,
                            &(retry.delay.as_millis() as i64),
                            &reset,
                            &finished,
                        ],
                    )
                    .await?;
                Ok((changed == 1).then_some(status))
            }
            .boxed()
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, RepoError> {
        read(&self.pg, |client| async move {
            let due: Option<i64> = Conn::client(&client)
                .one(
                    "SELECT least((SELECT min(run_at) FROM jobs WHERE status = 'queued'),
                                  (SELECT min(lease_until) FROM jobs WHERE status = 'running'))",
                    &[],
                )
                .await?
                .try_get(0)?;
            Ok(due.map(from_millis))
        })
        .await
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, RepoError> {
        let default_attempts = self.config.max_attempts;
        read(&self.pg, |client| async move {
            Conn::client(&client)
                .opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
                .await?
                .map(|r| job_from_row(&r, default_attempts))
                .transpose()
        })
        .await
    }

    /// By offset, or after a cursor's job id.
    async fn list(&self, filter: JobFilter, paging: Paging) -> Result<Page<Job>, RepoError> {
        let default_attempts = self.config.max_attempts;
        snapshot(&self.pg, move |c| {
            async move {
                let status = filter.status.map(JobStatus::as_str);
                let kind = filter.kind.as_ref().map(JobKind::as_str);
                let filters =
                    "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)";
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND id < $4 ORDER BY id DESC LIMIT $3", *id),
                    _ => ("ORDER BY id DESC LIMIT $3 OFFSET $4", paging.offset as i64),
                };
                let total: i64 = c
                    .one(
                        &format!("SELECT count(*) FROM jobs WHERE {filters}"),
                        &[&status, &kind],
                    )
                    .await?
                    .try_get(0)?;
                let rows = c
                    .rows(
                        &format!("SELECT {COLUMNS} FROM jobs WHERE {filters} {after}"),
                        &[&status, &kind, &paging.fetch(), &offset],
                    )
                    .await?
                    .iter()
                    .map(|r| job_from_row(r, default_attempts))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page::of(rows, total as u64, &paging, |j| {
                    vec![KeyPart::Int(j.id)]
                }))
            }
            .boxed()
        })
        .await
    }

    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, RepoError> {
        read(&self.pg, |client| async move {
            let mut counts: Vec<(JobStatus, u64)> =
                JobStatus::ALL.iter().map(|s| (*s, 0)).collect();
            for row in Conn::client(&client)
                .rows("SELECT status, count(*) FROM jobs GROUP BY status", &[])
                .await?
            {
                let (status, n): (&str, i64) = (row.try_get(0)?, row.try_get(1)?);
                if let Some(slot) = counts
                    .iter_mut()
                    .find(|(s, _)| Some(*s) == JobStatus::parse(status))
                {
                    slot.1 = n as u64;
                }
            }
            Ok(counts)
        })
        .await
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    async fn woken(&self) {
        self.wake.notified().await;
    }
}
