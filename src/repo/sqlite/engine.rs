//! [`Engine`] and [`Backup`] on SQLite: readiness from the writer and the schema version,
//! shutdown through [`Db::close`], and backups by `VACUUM INTO` ([`crate::db::backup`]).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::{
    db::{backup, Db, SCHEMA_VERSION},
    repo::{Backup, BackupCopy, Engine, StoreError},
};

/// The SQLite database as a whole.
pub struct SqliteEngine {
    db: Arc<Db>,
}

impl SqliteEngine {
    /// The engine over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    /// Ready when a write transaction can start and the schema is current.
    async fn ready(&self) -> Result<i64, String> {
        self.db.ping_writer().await.map_err(|e| e.to_string())?;
        let version = self.db.schema_version().await.map_err(|e| e.to_string())?;
        if version != SCHEMA_VERSION {
            return Err(format!(
                "schema version {version}, expected {SCHEMA_VERSION}"
            ));
        }
        Ok(version)
    }

    fn pool_waits(&self) -> u64 {
        self.db.pool_waits()
    }

    fn write_batches(&self) -> Option<(u64, u64)> {
        Some(self.db.write_batches())
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// Backups of the database file in a data directory. Needs no open database: `agora backup`
/// and `agora restore` use it beside a running server (backup) or with none (restore).
pub struct SqliteBackup {
    db_file: PathBuf,
    data_dir: PathBuf,
}

impl SqliteBackup {
    /// Backups of `db_file`, the database of `data_dir`.
    pub fn new(db_file: &Path, data_dir: &Path) -> Self {
        Self {
            db_file: db_file.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// Runs file work off the async workers; a panic there is a failure like any other.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, backup::BackupError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| StoreError(format!("the {what} panicked")))?
        .map_err(|e| StoreError(e.to_string()))
}

fn copy(b: backup::Backup) -> BackupCopy {
    BackupCopy {
        path: b.path,
        bytes: b.bytes,
    }
}

#[async_trait]
impl Backup for SqliteBackup {
    async fn backup_to(&self, dest: PathBuf) -> Result<BackupCopy, StoreError> {
        let db_file = self.db_file.clone();
        blocking("backup", move || backup::backup(&db_file, &dest).map(copy)).await
    }

    async fn backup_into(
        &self,
        dir: PathBuf,
        keep: usize,
    ) -> Result<(BackupCopy, usize), StoreError> {
        let db_file = self.db_file.clone();
        blocking("backup", move || {
            let dest = dir.join(backup::file_name(OffsetDateTime::now_utc()));
            let done = backup::backup(&db_file, &dest)?;
            let pruned = backup::prune(&dir, keep)?;
            Ok((copy(done), pruned))
        })
        .await
    }

    async fn restore_from(&self, from: PathBuf) -> Result<PathBuf, StoreError> {
        let data_dir = self.data_dir.clone();
        blocking("restore", move || backup::restore(&from, &data_dir)).await
    }
}
