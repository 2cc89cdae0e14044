//! The single writer thread and its group commit.
//!
//! Writes queue on a channel. The thread takes every write waiting at that moment (up to
//! the configured batch size), opens one `BEGIN IMMEDIATE` transaction, runs each write in its own
//! `SAVEPOINT` (released on success, rolled back on error or panic), commits once, and only
//! then answers each caller: an acknowledged write is committed. A write that is alone in its
//! batch runs without a savepoint (the transaction is its rollback unit): statement journals
//! inside a savepoint cost time proportional to the pages it has dirtied, which makes bulk
//! writes (seeding, backfills) quadratic.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{
    checkpoint::{self, WalState},
    DbError,
};

/// Delivers a write's outcome once the shared commit has succeeded (`None`) or failed.
type Reply = Box<dyn FnOnce(Option<&rusqlite::Error>) + Send>;
/// A queued write: runs (in a savepoint when the flag says so) and returns how to reply and
/// whether it succeeded.
type Job = Box<dyn FnOnce(&Connection, bool) -> (Reply, bool) + Send>;

/// Handle to the writer thread.
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer thread owning `conn`.
    pub(super) fn start(conn: Connection, max_batch: usize, wal: Arc<WalState>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("agora-db-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), &wal))
            .unwrap_or_else(|e| panic!("cannot start the database writer thread: {e}"));
        Writer { tx, thread }
    }

    /// Queues `f`; the receiver yields its result after the commit.
    pub(super) fn submit<T, E, F>(&self, f: F) -> oneshot::Receiver<Result<T, E>>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = oneshot::channel();
        let job: Job = Box::new(move |conn, savepoint| {
            let result = if savepoint {
                in_savepoint(conn, f)
            } else {
                guarded(conn, f)
            };
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |commit_error| {
                let result = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(E::from(DbError::Sqlite(clone_error(e)))),
                    (result, _) => result,
                };
                let _ = reply_tx.send(result);
            });
            (reply, ok)
        });
        // A send error means the thread has stopped; dropping the job drops `reply_tx`, which
        // the caller sees as `Closed`.
        let _ = self.tx.send(job);
        reply_rx
    }

    /// Finishes the queued writes, then optimizes and checkpoints the database.
    pub(super) fn stop(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Job>, max_batch: usize, wal: &WalState) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the batch answers every caller with `Closed` (mapped to 503).
            tracing::error!(error = %e, db.batch = batch.len(), "cannot begin a write transaction");
            continue;
        }
        let savepoints = batch.len() > 1;
        let (replies, oks): (Vec<Reply>, Vec<bool>) =
            batch.into_iter().map(|job| job(&conn, savepoints)).unzip();
        let end = if savepoints || oks.iter().all(|ok| *ok) {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let commit = conn.execute_batch(end);
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = &commit {
            tracing::error!(error = %e, db.batch = replies.len(), "write transaction failed to commit");
        }
        let committed = if commit.is_ok() && end == "COMMIT" {
            replies.len()
        } else {
            0
        };
        for reply in replies {
            reply(commit.as_ref().err());
        }
        if wal.committed(committed) {
            // The checkpointer has copied nearly all of a long WAL; finishing here, between
            // transactions, lets the next one restart the WAL from its beginning.
            if let Err(e) = checkpoint::checkpoint(&conn) {
                tracing::warn!(error = %e, "checkpoint on the writer failed");
            }
        }
    }
    let _ = conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);");
    tracing::info!("database writer stopped");
}

/// Runs `f`, turning a panic into an error.
fn guarded<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
    E: From<DbError>,
{
    catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| Err(E::from(DbError::Panicked)))
}

fn in_savepoint<T, E, F>(conn: &Connection, f: F) -> Result<T, E>
where
    F: FnOnce(&Connection) -> Result<T, E>,
    E: From<DbError>,
{
    // Prepared once and kept: these run twice per write in every shared batch.
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    exec("SAVEPOINT write").map_err(|e| E::from(DbError::Sqlite(e)))?;
    let result = guarded(conn, f);
    let end = if result.is_ok() {
        exec("RELEASE write")
    } else {
        exec("ROLLBACK TO write").and_then(|_| exec("RELEASE write"))
    };
    match end {
        Ok(_) => result,
        Err(e) => Err(E::from(DbError::Sqlite(e))),
    }
}

/// `rusqlite::Error` is not `Clone`; a commit failure is shared by the whole batch.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::db::{Db, DbError, DbOptions};

    #[tokio::test]
    async fn a_failing_write_in_a_group_commit_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (n INTEGER NOT NULL)")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        // A slow write holds the writer, so the next ten queue up and share one transaction.
        let slow = db.write(|c| {
            std::thread::sleep(Duration::from_millis(100));
            c.execute("INSERT INTO t VALUES (0)", [])
                .map_err(DbError::from)
        });
        let batch = futures::future::join_all((1..=10).map(|n| {
            db.write(move |c| {
                c.execute("INSERT INTO t VALUES (?1)", [n])?;
                if n % 3 == 0 {
                    // Half-done work that must vanish with the error.
                    c.execute("INSERT INTO t VALUES (?1)", [n * 100])?;
                    return Err(DbError::Closed);
                }
                Ok(())
            })
        }));
        let (slow, results) = tokio::join!(slow, batch);
        slow.unwrap();
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 3);
        let rows: Vec<i64> = db
            .read(|c| {
                let mut stmt = c.prepare("SELECT n FROM t ORDER BY n")?;
                let rows = stmt
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<i64>, _>>()?;
                Ok::<_, DbError>(rows)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![0, 1, 2, 4, 5, 7, 8, 10]);
        db.close().await;
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        let panicked = db
            .write(|_| -> Result<(), DbError> { panic!("boom") })
            .await;
        assert!(matches!(panicked, Err(DbError::Panicked)));
        let ok = db
            .write(|c| {
                c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map_err(DbError::from)
            })
            .await;
        assert_eq!(ok.unwrap(), 1);
        db.close().await;
    }
}
