//! [`JobRepository`] on SQLite: the `jobs` table. Enqueue (also inside another write's
//! transaction, with `insert`), claim under a lease, record success or failure, read.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{from_millis, to_millis};
use crate::{
    db::{snapshot, Db},
    domain::{
        job::{periodic_key, Claimed, Job, JobFilter, JobKind, JobStatus, NewJob, QueueConfig},
        paging::KeyPart,
        retry::after_failure,
        Page, Paging,
    },
    repo::{JobRepository, RepoError},
};

/// The queue in SQLite.
pub struct SqliteJobRepository {
    db: Arc<Db>,
    config: QueueConfig,
    wake: Notify,
}

const COLUMNS: &str = "id, kind, payload, status, attempts, max_attempts, run_at, last_error,
    result, owner_id, every_ms, created_at, updated_at, finished_at";

fn job_from_row(row: &Row<'_>, default_attempts: u32) -> rusqlite::Result<Job> {
    let json = |idx: usize, text: Option<String>| -> rusqlite::Result<Option<Value>> {
        text.map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    idx,
                    rusqlite::types::Type::Text,
                    e.into(),
                )
            })
    };
    let status: String = row.get(3)?;
    Ok(Job {
        id: row.get(0)?,
        kind: JobKind::parse(&row.get::<_, String>(1)?),
        payload: json(2, row.get(2)?)?.unwrap_or(Value::Null),
        status: JobStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("job status {status}").into(),
            )
        })?,
        attempts: row.get(4)?,
        max_attempts: row.get::<_, Option<u32>>(5)?.unwrap_or(default_attempts),
        run_at: from_millis(row.get(6)?),
        last_error: row.get(7)?,
        result: json(8, row.get(8)?)?,
        owner_id: row.get(9)?,
        every: row
            .get::<_, Option<i64>>(10)?
            .map(|ms| Duration::from_millis(ms.max(1) as u64)),
        created_at: from_millis(row.get(11)?),
        updated_at: from_millis(row.get(12)?),
        finished_at: row.get::<_, Option<i64>>(13)?.map(from_millis),
    })
}

/// Inserts `job` using `conn`, inside whatever transaction `conn` is in: the way a change
/// enqueues the work it needs atomically with itself. Returns the new id, or `None` when a
/// queued job with the same dedupe key already waits (it will do the work).
pub(crate) fn insert(conn: &Connection, job: &NewJob) -> rusqlite::Result<Option<i64>> {
    let now = to_millis(OffsetDateTime::now_utc());
    let run_at = now + job.delay.as_millis() as i64;
    conn.prepare_cached(
        "INSERT INTO jobs (kind, payload, max_attempts, run_at, owner_id, dedupe_key, every_ms,
                           created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT DO NOTHING
         RETURNING id",
    )?
    .query_row(
        params![
            job.kind.as_str(),
            job.payload.to_string(),
            job.max_attempts,
            run_at,
            job.owner_id,
            job.dedupe_key,
            job.every.map(|e| e.as_millis().max(1) as i64),
            now
        ],
        |r| r.get(0),
    )
    .optional()
}

impl SqliteJobRepository {
    /// The queue over `db`, retrying and leasing by `config`.
    pub fn new(db: Arc<Db>, config: QueueConfig) -> Self {
        SqliteJobRepository {
            db,
            config,
            wake: Notify::new(),
        }
    }
}

#[async_trait]
impl JobRepository for SqliteJobRepository {
    async fn enqueue(&self, job: NewJob) -> Result<Option<i64>, RepoError> {
        let id = self
            .db
            .write(move |conn| Ok::<_, RepoError>(insert(conn, &job)?))
            .await?;
        self.wake();
        Ok(id)
    }

    async fn enqueue_all(&self, jobs: Vec<NewJob>) -> Result<u64, RepoError> {
        let n = self
            .db
            .write(move |conn| {
                let mut n = 0;
                for job in &jobs {
                    n += u64::from(insert(conn, job)?.is_some());
                }
                Ok::<_, RepoError>(n)
            })
            .await?;
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    async fn ensure_periodic(&self, kind: JobKind, every: Duration) -> Result<(), RepoError> {
        let job = NewJob::periodic(kind, every);
        self.db
            .write(move |conn| {
                let every_ms = every.as_millis().max(1) as i64;
                let updated = conn
                    .prepare_cached(
                        "UPDATE jobs SET every_ms = ?2
                          WHERE dedupe_key = ?1 AND status IN ('queued', 'running')",
                    )?
                    .execute(params![job.dedupe_key, every_ms])?;
                if updated == 0 {
                    insert(conn, &job)?;
                }
                Ok::<_, RepoError>(())
            })
            .await?;
        self.wake();
        Ok(())
    }

    async fn cancel_periodic(&self, kind: JobKind) -> Result<(), RepoError> {
        let key = periodic_key(&kind);
        self.db
            .write(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM jobs WHERE dedupe_key = ?1 AND status = 'queued'",
                )?
                .execute([key])?;
                Ok::<_, RepoError>(())
            })
            .await
    }

    async fn prune_finished(&self, age: Duration) -> Result<u64, RepoError> {
        self.db
            .write(move |conn| {
                let cutoff = to_millis(OffsetDateTime::now_utc()) - age.as_millis() as i64;
                let n = conn
                    .prepare_cached(
                        "DELETE FROM jobs WHERE status IN ('succeeded', 'dead')
                            AND finished_at < ?1 AND every_ms IS NULL",
                    )?
                    .execute([cutoff])?;
                Ok::<_, RepoError>(n as u64)
            })
            .await
    }

    /// One write transaction, so two workers never claim the same job.
    async fn claim(&self) -> Result<Option<Claimed>, RepoError> {
        let (lease, default_attempts) = (self.config.lease, self.config.max_attempts);
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let token = uuid::Uuid::new_v4().to_string();
                let job = conn
                    .prepare_cached(&format!(
                        "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                                lease_until = ?2, lease_token = ?3, updated_at = ?1
                          WHERE id = (SELECT id FROM (
                                    SELECT * FROM (
                                        SELECT id, run_at AS due FROM jobs
                                         WHERE status = 'queued' AND run_at <= ?1
                                         ORDER BY run_at, id LIMIT 1)
                                    UNION ALL
                                    SELECT * FROM (
                                        SELECT id, lease_until AS due FROM jobs
                                         WHERE status = 'running' AND lease_until < ?1
                                         ORDER BY lease_until, id LIMIT 1))
                                 ORDER BY due LIMIT 1)
                          RETURNING {COLUMNS}"
                    ))?
                    .query_row(params![now, now + lease.as_millis() as i64, token], |r| {
                        job_from_row(r, default_attempts)
                    })
                    .optional()?;
                Ok::<_, RepoError>(job.map(|job| Claimed::new(job, token)))
            })
            .await
    }

    async fn succeed(&self, claimed: &Claimed, result: Option<Value>) -> Result<bool, RepoError> {
        let (id, token) = (claimed.job.id, claimed.lease_token().to_owned());
        let every = claimed.job.every;
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                let result = result.map(|r| r.to_string());
                let changed = match every {
                    Some(every) => conn
                        .prepare_cached(
                            "UPDATE jobs SET status = 'queued', attempts = 0, lease_until = NULL,
                                    lease_token = NULL, result = ?3, last_error = NULL,
                                    run_at = ?4 + ?5, updated_at = ?4
                              WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                        )?
                        .execute(params![id, token, result, now, every.as_millis() as i64])?,
                    None => conn
                        .prepare_cached(
                            "UPDATE jobs SET status = 'succeeded', lease_until = NULL,
                                    lease_token = NULL, result = ?3, updated_at = ?4,
                                    finished_at = ?4
                              WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                        )?
                        .execute(params![id, token, result, now])?,
                };
                Ok::<_, RepoError>(changed == 1)
            })
            .await
    }

    async fn fail(&self, claimed: &Claimed, error: &str) -> Result<Option<JobStatus>, RepoError> {
        let (id, token) = (claimed.job.id, claimed.lease_token().to_owned());
        let retry = after_failure(&claimed.job, &self.config);
        let error: String = error.chars().take(2000).collect();
        self.db
            .write(move |conn| {
                let now = to_millis(OffsetDateTime::now_utc());
                // A newer queued job with the same key supersedes this one's retry.
                let superseded: Option<i64> = conn
                    .prepare_cached(
                        "SELECT newer.id FROM jobs AS this JOIN jobs AS newer
                            ON newer.dedupe_key = this.dedupe_key AND newer.status = 'queued'
                         WHERE this.id = ?1",
                    )?
                    .query_row([id], |r| r.get(0))
                    .optional()?;
                let (status, error) = match superseded {
                    Some(newer) => (
                        JobStatus::Dead,
                        format!("{error} (superseded by job {newer})"),
                    ),
                    None if retry.dead => (JobStatus::Dead, error),
                    None => (JobStatus::Queued, error),
                };
                let changed = conn
                    .prepare_cached(
                        "UPDATE jobs SET status = ?3, last_error = ?4, lease_until = NULL,
                                lease_token = NULL, run_at = ?5 + ?6, updated_at = ?5,
                                attempts = CASE WHEN ?7 THEN 0 ELSE attempts END,
                                finished_at = CASE WHEN ?3 = 'dead' THEN ?5 END
                          WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
                    )?
                    .execute(params![
                        id,
                        token,
                        status.as_str(),
                        error,
                        now,
                        retry.delay.as_millis() as i64,
                        retry.exhausted && status == JobStatus::Queued
                    ])?;
                Ok::<_, RepoError>((changed == 1).then_some(status))
            })
            .await
    }

    async fn next_due(&self) -> Result<Option<OffsetDateTime>, RepoError> {
        self.db
            .read_point(|conn| {
                let due: Option<i64> = conn
                    .prepare_cached(
                        "SELECT min(due) FROM (
                            SELECT min(run_at) AS due FROM jobs WHERE status = 'queued'
                            UNION ALL
                            SELECT min(lease_until) FROM jobs WHERE status = 'running')",
                    )?
                    .query_row([], |r| r.get(0))?;
                Ok::<_, RepoError>(due.map(from_millis))
            })
            .await
    }

    async fn get(&self, id: i64) -> Result<Option<Job>, RepoError> {
        let default_attempts = self.config.max_attempts;
        self.db
            .read_point(move |conn| {
                Ok::<_, RepoError>(
                    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?
                        .query_row([id], |r| job_from_row(r, default_attempts))
                        .optional()?,
                )
            })
            .await
    }

    /// By offset, or after a cursor's job id.
    async fn list(&self, filter: JobFilter, paging: Paging) -> Result<Page<Job>, RepoError> {
        let default_attempts = self.config.max_attempts;
        self.db
            .read(move |conn| {
                let status = filter.status.map(JobStatus::as_str);
                let kind = filter.kind.as_ref().map(JobKind::as_str);
                let filters = "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2)";
                // Jobs are read in id (rowid) order, so a cursor page starts with a seek.
                let (after, offset) = match paging.after.as_deref() {
                    Some([KeyPart::Int(id)]) => ("AND id < ?4 ORDER BY id DESC LIMIT ?3", *id),
                    _ => ("ORDER BY id DESC LIMIT ?3 OFFSET ?4", paging.offset as i64),
                };
                snapshot(conn, || {
                    let total: i64 = conn
                        .prepare_cached(&format!("SELECT count(*) FROM jobs WHERE {filters}"))?
                        .query_row(params![status, kind], |r| r.get(0))?;
                    let rows = conn
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM jobs WHERE {filters} {after}"
                        ))?
                        .query_map(params![status, kind, paging.fetch(), offset], |r| {
                            job_from_row(r, default_attempts)
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok::<_, RepoError>(Page::of(rows, total as u64, &paging, |j| {
                        vec![KeyPart::Int(j.id)]
                    }))
                })
            })
            .await
    }

    async fn counts(&self) -> Result<Vec<(JobStatus, u64)>, RepoError> {
        self.db
            .read(|conn| {
                let mut counts: Vec<(JobStatus, u64)> =
                    JobStatus::ALL.iter().map(|s| (*s, 0)).collect();
                let mut stmt =
                    conn.prepare_cached("SELECT status, count(*) FROM jobs GROUP BY status")?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
                for row in rows {
                    let (status, n): (String, i64) = row?;
                    if let Some(slot) = counts
                        .iter_mut()
                        .find(|(s, _)| Some(*s) == JobStatus::parse(&status))
                    {
                        slot.1 = n as u64;
                    }
                }
                Ok::<_, RepoError>(counts)
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
