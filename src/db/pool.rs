//! Connections: pragmas for the writer and the read-only pool.

use std::{path::Path, time::Duration};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};

use super::{checkpoint, DbError};
use crate::config::Synchronous;

const BUSY_TIMEOUT_MS: u32 = 5_000;

/// Opens the single writer connection, switching the file to WAL.
pub(super) fn open_writer(
    path: &Path,
    synchronous: Synchronous,
    max_size_mb: u64,
) -> Result<Connection, DbError> {
    let open_err = |source| DbError::Open {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {};
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16000;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {};",
        synchronous.as_pragma(),
        checkpoint::JOURNAL_SIZE_LIMIT,
    ))
    .map_err(open_err)?;
    if max_size_mb > 0 {
        // A write that would grow the file past this fails as if the disk were full.
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(open_err)?;
        let pages = (max_size_mb * 1024 * 1024 / page_size.max(512) as u64).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(open_err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens the checkpointer's connection. Its `synchronous` decides whether a checkpoint
/// fsyncs the database file, so it is the writer's.
pub(super) fn open_checkpointer(
    path: &Path,
    synchronous: Synchronous,
) -> Result<Connection, DbError> {
    let conn = Connection::open(path).map_err(|source| DbError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};
         PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA cache_size = -500;",
        synchronous.as_pragma()
    ))?;
    Ok(conn)
}

/// Builds the pool of `query_only` reader connections. Each keeps a small page cache (2 MB):
/// the operating system's file cache is shared by all of them, a per-connection cache is not.
pub(super) fn readers(
    path: &Path,
    size: u32,
) -> Result<r2d2::Pool<SqliteConnectionManager>, DbError> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .with_init(|c| {
            c.set_prepared_statement_cache_capacity(64);
            c.execute_batch(&format!(
                "PRAGMA query_only = ON;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
                 PRAGMA temp_store = MEMORY;
                 PRAGMA cache_size = -2000;"
            ))
        });
    Ok(r2d2::Pool::builder()
        .max_size(size.max(1))
        // A local SQLite connection does not go stale; testing it costs a parse per checkout.
        .test_on_check_out(false)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(5))
        .build(manager)?)
}
