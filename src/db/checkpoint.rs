//! The checkpointer thread: copies the WAL back into the database file off the writer.
//!
//! SQLite's automatic checkpoint runs inside the committing connection: every ~1000 WAL pages
//! the writer stops to copy them into the database file and fsync it, and every write queued
//! behind it waits. Here the writer's automatic checkpoint is off. This thread, on its own
//! connection, runs a `PASSIVE` checkpoint every [`POLL`] when something was committed since
//! the last one: it copies what is committed while the writer goes on appending.
//!
//! A passive checkpoint never waits for the writer, so under non-stop writes it never quite
//! reaches the end of the WAL, and the WAL only starts again from its beginning once it has.
//! When a checkpoint reports a WAL of [`RESTART_FRAMES`] or more, the thread asks the writer
//! to checkpoint once itself, between two group commits: it copies the few frames the
//! passive runs left, and the next transaction writes the WAL from its start. The file is cut
//! back to [`JOURNAL_SIZE_LIMIT`] bytes when that happens.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use rusqlite::Connection;

/// WAL frames (pages) past which the writer is asked to finish a checkpoint so the WAL can
/// restart: 32 MiB of 4 KiB pages. Tests use a small WAL to see it restart.
const RESTART_FRAMES: i64 = if cfg!(test) { 256 } else { 8192 };
/// Bytes the WAL file is truncated to when it restarts.
pub(super) const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;
/// How often the checkpointer looks for new commits.
const POLL: Duration = Duration::from_millis(if cfg!(test) { 10 } else { 100 });

/// What the writer and the checkpointer tell each other.
#[derive(Default)]
pub(super) struct WalState {
    /// Commits so far (the writer counts them).
    commits: AtomicU64,
    /// The WAL is long: the writer should checkpoint after its next commit.
    restart: AtomicBool,
    /// Transactions committed and the writes they carried (a metric: their ratio is the
    /// group commit's mean batch).
    committed_batches: AtomicU64,
    committed_writes: AtomicU64,
}

impl WalState {
    /// Called by the writer after each transaction, `writes` the writes a successful commit
    /// carried (0 when it rolled back or failed); true when it should checkpoint now.
    pub(super) fn committed(&self, writes: usize) -> bool {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if writes > 0 {
            self.committed_batches.fetch_add(1, Ordering::Relaxed);
            self.committed_writes
                .fetch_add(writes as u64, Ordering::Relaxed);
        }
        self.restart.swap(false, Ordering::Relaxed)
    }

    /// Transactions committed so far, and the writes they carried.
    pub(super) fn batches(&self) -> (u64, u64) {
        (
            self.committed_batches.load(Ordering::Relaxed),
            self.committed_writes.load(Ordering::Relaxed),
        )
    }
}

/// Handle to the checkpointer thread.
pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread checkpointing through `conn`, told of commits by `state`.
    pub(super) fn start(conn: Connection, state: Arc<WalState>) -> Self {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("agora-db-checkpoint".into())
            .spawn(move || run(&conn, &state, &stopped))
            .unwrap_or_else(|e| panic!("cannot start the database checkpoint thread: {e}"));
        Checkpointer { stop, thread }
    }

    /// Stops the thread (the writer's final checkpoint follows).
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(conn: &Connection, state: &WalState, stopped: &mpsc::Receiver<()>) {
    let mut seen = state.commits.load(Ordering::Relaxed);
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(POLL) {
        let commits = state.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        match checkpoint(conn) {
            Ok(frames) if frames >= RESTART_FRAMES => {
                state.restart.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
}

/// Runs one passive checkpoint; returns the number of frames in the WAL.
pub(super) fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use crate::db::{Db, DbError, DbOptions};

    async fn rows(db: &Db) -> i64 {
        db.read(|c| {
            c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .map_err(DbError::from)
        })
        .await
        .unwrap()
    }

    fn wal_bytes(dir: &std::path::Path) -> u64 {
        std::fs::metadata(dir.join("t.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Under writes that never pause for long, the WAL still restarts from its beginning, so
    /// its file stays near the restart size instead of growing with everything written.
    #[tokio::test]
    async fn the_wal_stays_bounded_under_continuous_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        db.write(|c| {
            c.execute_batch("CREATE TABLE t (n INTEGER NOT NULL, b BLOB NOT NULL)")
                .map_err(DbError::from)
        })
        .await
        .unwrap();
        // 64 writers, each adding 128 rows of 4 KB without pause: about 64 MiB through a WAL
        // that restarts at 1 MiB (256 pages) in tests, while a watcher notes its largest size.
        let db = Arc::new(db);
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (dir, done) = (dir.path().to_owned(), done.clone());
            tokio::spawn(async move {
                let mut largest = 0;
                while !done.load(Ordering::Relaxed) {
                    largest = largest.max(wal_bytes(&dir));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                largest
            })
        };
        let writers = (0..64).map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for n in 0..128 {
                    db.write(move |c| {
                        c.execute("INSERT INTO t VALUES (?1, zeroblob(4000))", [n])
                            .map_err(DbError::from)
                    })
                    .await
                    .unwrap();
                }
            })
        });
        for w in futures::future::join_all(writers).await {
            w.unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let largest = watcher.await.unwrap();
        // Unbounded, it would reach the 64 MiB written; bounded, it stays near the restart size
        // (a few MiB here). Half the total leaves room for a checkpointer starved of CPU by a
        // test run on two cores (11 and 18 MB were seen there), and still fails a WAL that grows
        // with everything written.
        assert!(
            largest < 32 * 1024 * 1024,
            "the WAL grew to {largest} bytes"
        );
        assert_eq!(rows(&db).await, 64 * 128);
        db.close().await;
        // Closing checkpoints everything and truncates the WAL; the rows are in the file.
        assert_eq!(wal_bytes(dir.path()), 0);
        let db = Db::open(&dir.path().join("t.db"), &DbOptions::default()).unwrap();
        assert_eq!(rows(&db).await, 64 * 128);
        db.close().await;
    }
}
