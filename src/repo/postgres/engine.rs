//! [`Engine`] and [`Backup`] on PostgreSQL: readiness from a write-capable connection and the
//! schema version, shutdown by closing the pool; backups are the database's own tools' job.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;

use super::{migrations, Pg, SCHEMA_VERSION};
use crate::repo::{Backup, BackupCopy, Engine, StoreError};

/// The PostgreSQL database as a whole.
pub struct PgEngine {
    pg: Arc<Pg>,
}

impl PgEngine {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

#[async_trait]
impl Engine for PgEngine {
    /// Ready when a connection can be had, the server is not a read-only standby, and the
    /// schema is current.
    async fn ready(&self) -> Result<i64, String> {
        let client = self.pg.client().await.map_err(|e| e.to_string())?;
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| super::classify(e).to_string())?
            .get(0);
        if standby {
            return Err("the database is a read-only standby".into());
        }
        let version = migrations::version(&client)
            .await
            .map_err(|e| super::classify(e).to_string())?;
        if version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {version}, expected {SCHEMA_VERSION}"
            ));
        }
        Ok(version)
    }

    fn pool_waits(&self) -> u64 {
        self.pg.waits.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn write_batches(&self) -> Option<(u64, u64)> {
        None
    }

    async fn close(&self) {
        self.pg.announcer.close().await;
        self.pg.pool.close();
    }
}

/// Backups of a PostgreSQL database are `pg_dump`'s and `pg_restore`'s job (or the platform's:
/// base backups, point-in-time recovery); agora refuses rather than do a worse copy.
pub struct PgBackup;

const USE_PG_DUMP: &str = "agora does not back up a PostgreSQL database: use pg_dump \
    (e.g. `pg_dump --format=custom --file=agora.dump \"$AGORA_DATABASE_URL\"`) and pg_restore, \
    or your platform's backups";

#[async_trait]
impl Backup for PgBackup {
    fn refusal(&self) -> Option<String> {
        Some(USE_PG_DUMP.into())
    }

    async fn backup_to(&self, _dest: PathBuf) -> Result<BackupCopy, StoreError> {
        Err(StoreError(USE_PG_DUMP.into()))
    }

    async fn backup_into(
        &self,
        _dir: PathBuf,
        _keep: usize,
    ) -> Result<(BackupCopy, usize), StoreError> {
        Err(StoreError(USE_PG_DUMP.into()))
    }

    async fn restore_from(&self, _from: PathBuf) -> Result<PathBuf, StoreError> {
        Err(StoreError(USE_PG_DUMP.replace("back up", "restore")))
    }
}
