//! Storage: one SQLite file in WAL mode, a pool of read-only connections and exactly one
//! writer thread that group-commits, plus the embedded migrations. This is the SQLite engine's
//! machinery; its repositories (the SQL) are in [`crate::repo::sqlite`], and nothing above
//! `repo/` uses this module but `app.rs`, which opens the engine.
//!
//! Reads never wait for writes (WAL). Every write is a closure run by the writer thread inside
//! a `BEGIN IMMEDIATE` transaction that it shares with the other writes queued at that moment,
//! each in its own `SAVEPOINT`: one failing write rolls back alone, and many writes share one
//! commit (and one fsync). A checkpointer thread copies the WAL back into the database file
//! beside the writer, so the writer does not stop every ~1000 pages to do it (see `checkpoint`).
//!
//! ## Durability
//!
//! The database is `<data-dir>/agora.db` in WAL mode; while it is open, `agora.db-wal` and
//! `agora.db-shm` sit beside it. A write is acknowledged only after its transaction has committed.
//! What a commit survives depends on `--synchronous`:
//!
//! - `full` (default): the WAL is synced at every commit, so an acknowledged write survives a
//!   crash of the process, of the operating system, or a power cut. This costs one fsync per
//!   commit, and group commit shares it among the writes queued together: in the load benchmark
//!   stakes with `full` ran at about the rate they ran with `normal` (see
//!   `benches/README.md`), so durability across power loss is the default.
//! - `normal`: a commit is written to the WAL without fsync; the WAL is synced at checkpoints. A
//!   committed write survives a crash or kill of the agora process, but an operating-system crash
//!   or power cut can lose the most recent commits (the database stays consistent; it rolls back
//!   to an earlier commit).
//!
//! Checkpoints (copying the WAL back into `agora.db`) run on a thread of their own: every 100 ms,
//! if anything was committed, it runs a passive checkpoint on its own connection while the writer
//! keeps committing. When the WAL passes 8192 pages the writer finishes the checkpoint between two
//! group commits (only the pages written since the last pass are left), so the WAL starts over
//! from its beginning (a WAL file that grew past 64 MiB is cut back to that size then). SQLite's default would have the
//! writer stop every 1000 pages to copy and fsync them itself, and every queued write wait behind
//! it. On a clean stop (SIGINT/SIGTERM) agora checkpoints the WAL into `agora.db` and truncates the
//! WAL. Back up a running server with `agora backup PATH` or `POST /api/admin/backup` (admins; a
//! job whose `result.path` names the checked copy in `<data-dir>/backups`), or every
//! `--backup-every-secs` automatically, keeping the newest `--backup-keep`; restore with
//! `agora restore PATH` after stopping the server. At start the server runs `PRAGMA quick_check`
//! and refuses a damaged database, a database from a newer agora, a data directory it cannot
//! create or write, and a data directory another agora server holds, each with a message and a
//! non-zero exit code. A write that hits a full disk or a read-only file gets 503 `unavailable`
//! and rolls back whole; reads go on (the test suite fills a database capped with
//! `--db-max-size-mb` until writes fail, then checks the refused write left nothing and the
//! invariants hold).
//!
//! The data directory also holds
//! `jwt-secret` (unless the secret is configured): whoever reads it can sign access tokens for any
//! user, and replacing it invalidates every access token issued so far.
//!
//! The crash, backup and full-disk tests that prove this from the outside are described in
//! `tests/README.md`.

pub mod backup;
mod checkpoint;
pub mod files;
pub mod invariants;
mod migrations;
mod pool;
mod writer;

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use r2d2_sqlite::SqliteConnectionManager;
pub use rusqlite;
use rusqlite::Connection;

pub use migrations::SCHEMA_VERSION;

use crate::{config::Synchronous, telemetry::spawn_blocking_in_span};

/// Failures of the storage machinery itself (not of a query).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Opening, configuring or migrating the database failed.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The database file.
        path: String,
        /// The cause.
        source: rusqlite::Error,
    },
    /// `PRAGMA quick_check` found damage.
    #[error("database {path} is damaged ({why}); restore a backup (agora restore PATH)")]
    Corrupt {
        /// The database file.
        path: String,
        /// What the check said.
        why: String,
    },
    /// The database was written by a newer agora.
    #[error("database schema version {found} is newer than this agora supports ({supported}); upgrade agora")]
    TooNew {
        /// The file's `user_version`.
        found: i64,
        /// What this binary knows.
        supported: i64,
    },
    /// After the migrations, rows of this table reference rows that do not exist; nothing was
    /// committed.
    #[error("migrating left rows of table {0} with broken references; nothing was changed")]
    BrokenReferences(String),
    /// No read connection became free in time.
    #[error("no database connection available: {0}")]
    Pool(#[from] r2d2::Error),
    /// The database file could not be created or made private.
    #[error("cannot create database {path}: {source}")]
    File {
        /// The database file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer has stopped (shutdown).
    #[error("the database is closed")]
    Closed,
    /// A query failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// A database closure panicked; its work was rolled back.
    #[error("a database task panicked")]
    Panicked,
}

/// Runs `f` inside one read transaction on `conn`, so all its statements see one snapshot
/// (a page and its total agree).
pub fn snapshot<T, E: From<rusqlite::Error>>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    conn.execute_batch("BEGIN")?;
    let result = f();
    conn.execute_batch("COMMIT")?;
    result
}

/// Refuses a damaged database at start, before anything writes to it. The check reads every
/// page, so it runs on a connection of its own with a small page cache, closed afterwards:
/// through the writer's it would leave that cache full on an idle server.
fn quick_check(path: &Path) -> Result<(), DbError> {
    let corrupt = |why: String| DbError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    let conn = Connection::open(path).map_err(|e| corrupt(e.to_string()))?;
    let problems: Vec<String> = conn
        .execute_batch("PRAGMA cache_size = -1000")
        .and_then(|()| conn.prepare("PRAGMA quick_check"))
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| corrupt(e.to_string()))?;
    if problems == ["ok"] {
        Ok(())
    } else {
        Err(corrupt(problems.join("; ")))
    }
}

/// How to open the database.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// `synchronous` pragma of the writer.
    pub synchronous: Synchronous,
    /// Size of the read-only connection pool.
    pub readers: u32,
    /// Most writes that share one commit (1 = a commit per write).
    pub write_batch: usize,
    /// Largest the database file may grow, in MiB (0: no limit beyond the disk's).
    pub max_size_mb: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            synchronous: Synchronous::Normal,
            readers: 4,
            write_batch: 256,
            max_size_mb: 0,
        }
    }
}

/// The two threads that write to the database file.
struct Threads {
    writer: writer::Writer,
    checkpointer: checkpoint::Checkpointer,
}

/// The database: readers and the writer.
pub struct Db {
    readers: r2d2::Pool<SqliteConnectionManager>,
    /// The writer and checkpointer threads, until [`Db::close`] stops them.
    threads: Mutex<Option<Threads>>,
    /// Reads that found no idle connection.
    waits: Arc<AtomicU64>,
    /// What the writer and the checkpointer tell each other, and the writer's commits.
    wal: Arc<checkpoint::WalState>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, applies pragmas and migrations, and
    /// starts the writer and checkpointer threads.
    pub fn open(path: &Path, options: &DbOptions) -> Result<Self, DbError> {
        files::make_db_private(path).map_err(|source| DbError::File {
            path: path.display().to_string(),
            source,
        })?;
        let mut conn = pool::open_writer(path, options.synchronous, options.max_size_mb)?;
        quick_check(path)?;
        migrations::apply(&mut conn).map_err(|e| match e {
            DbError::Sqlite(source) => DbError::Open {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })?;
        let readers = pool::readers(path, options.readers)?;
        let checkpointer = pool::open_checkpointer(path, options.synchronous)?;
        let wal = Arc::new(checkpoint::WalState::default());
        Ok(Db {
            readers,
            threads: Mutex::new(Some(Threads {
                writer: writer::Writer::start(conn, options.write_batch, wal.clone()),
                checkpointer: checkpoint::Checkpointer::start(checkpointer, wal.clone()),
            })),
            waits: Arc::new(AtomicU64::new(0)),
            wal,
        })
    }

    /// Runs `f` on a read-only connection, off the async runtime.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let pool = self.readers.clone();
        let waits = self.waits.clone();
        spawn_blocking_in_span(move || {
            if pool.state().idle_connections == 0 {
                waits.fetch_add(1, Ordering::Relaxed);
            }
            let conn = pool.get().map_err(DbError::from)?;
            f(&conn)
        })
        .await
        .map_err(|_| E::from(DbError::Panicked))?
    }

    /// Runs `f` on a read-only connection right here on the async worker when one is free at
    /// once, else like [`Db::read`]. Only for lookups of a bounded number of rows by key
    /// (microseconds): handing those to the blocking pool costs more than the query (a market by
    /// id, cache off, under wrk: 12.3k/s inline vs 7.2k/s through spawn_blocking). Anything
    /// that scans goes through [`Db::read`].
    pub async fn read_point<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        match self.readers.try_get() {
            Some(conn) => f(&conn),
            None => self.read(f).await,
        }
    }

    /// Runs `f` on the writer inside a transaction (shared with concurrent writes, isolated by
    /// a savepoint). `Ok` is returned only after the commit; an `Err` from `f` rolls back
    /// exactly what `f` did.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let submitted = match self.threads.lock() {
            Ok(guard) => guard.as_ref().map(|t| t.writer.submit(f)),
            Err(_) => None,
        };
        match submitted {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(E::from(DbError::Closed))),
            None => Err(E::from(DbError::Closed)),
        }
    }

    /// Reads so far that found every pooled connection busy and waited (a metric).
    pub fn pool_waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Write transactions the writer has committed so far, and the writes they carried (a
    /// metric: their ratio is the group commit's mean batch).
    pub fn write_batches(&self) -> (u64, u64) {
        self.wal.batches()
    }

    /// True when a write transaction can be started (used by readiness checks).
    pub async fn ping_writer(&self) -> Result<(), DbError> {
        self.write(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(DbError::from)
        })
        .await
    }

    /// The migration version the database is at.
    pub async fn schema_version(&self) -> Result<i64, DbError> {
        self.read(|conn| {
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(DbError::from)
        })
        .await
    }

    /// Stops the checkpointer, then the writer after the queued writes; the writer runs `PRAGMA
    /// optimize` and checkpoints the WAL last.
    pub async fn close(&self) {
        if let Some(threads) = self.threads.lock().ok().and_then(|mut g| g.take()) {
            let _ = tokio::task::spawn_blocking(move || {
                threads.checkpointer.stop();
                threads.writer.stop();
            })
            .await;
        }
    }
}
