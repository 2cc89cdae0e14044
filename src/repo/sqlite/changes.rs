//! [`ChangeFeed`] on SQLite: the `market_changes` table (migration 9), filled by triggers in the
//! transaction of every change that matters to what a server keeps in memory, whoever wrote it:
//! this server, or `agora seed` and `agora users` run beside it on the same file (SQLite lets
//! several processes write one database; only one server may hold a data directory). The feed
//! reads the rows past the last it saw every [`POLL_EVERY`], hands them to the handler in order,
//! and deletes what it has read now and then (only the server reads them).
//!
//! Unlike PostgreSQL's announcements, these rows are written by the database itself in the
//! writing transaction, so nothing committed is missed, whichever process committed it and
//! however it ended; the server is told of its own changes too (applying one again is
//! harmless: the index and the cache load it once more).

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use rusqlite::params;

use crate::{
    db::{Db, DbError},
    repo::{Change, ChangeFeed, ChangeHandler},
};

/// How often the table is read: a change is followed within this (and the time to apply it).
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The most rows read at once; a poll that fills it is followed by the next at once.
const BATCH: i64 = 10_000;

/// How often the rows read are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Follows `market_changes`.
pub struct SqliteChangeFeed {
    db: Arc<Db>,
    connected: Arc<AtomicBool>,
}

impl SqliteChangeFeed {
    /// A feed over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self {
            db,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[async_trait]
impl ChangeFeed for SqliteChangeFeed {
    async fn follow(&self, handler: ChangeHandler) {
        // Everything committed before this is loaded by the server's start (after it calls
        // this), so only what comes later is followed.
        let mut cursor = match newest(&self.db).await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(error = %e, "reading the change table failed; following from its start");
                0
            }
        };
        self.connected.store(true, Ordering::Relaxed);
        let (db, connected) = (self.db.clone(), self.connected.clone());
        tokio::spawn(async move {
            let mut pruned = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(POLL_EVERY).await;
                loop {
                    match poll(&db, cursor).await {
                        Ok((last, changes, full)) => {
                            connected.store(true, Ordering::Relaxed);
                            cursor = last;
                            changes.into_iter().for_each(|change| handler(change));
                            if full {
                                continue;
                            }
                        }
                        Err(DbError::Closed) => return,
                        Err(e) => {
                            if connected.swap(false, Ordering::Relaxed) {
                                tracing::warn!(error = %e, "reading the change table failed; retrying");
                            }
                        }
                    }
                    break;
                }
                if pruned.elapsed() >= PRUNE_EVERY {
                    pruned = tokio::time::Instant::now();
                    if let Err(e) = prune(&db, cursor).await {
                        tracing::warn!(error = %e, "deleting read rows of the change table failed");
                    }
                }
            }
        });
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

async fn newest(db: &Db) -> Result<i64, DbError> {
    db.read(|conn| {
        Ok(conn.query_row(
            "SELECT coalesce(max(seq), 0) FROM market_changes",
            [],
            |r| r.get(0),
        )?)
    })
    .await
}

/// The changes past `cursor` (each market's kind once, in order), the last row's seq, and
/// whether the poll read as many rows as it may (more may wait).
async fn poll(db: &Db, cursor: i64) -> Result<(i64, Vec<Change>, bool), DbError> {
    db.read(move |conn| {
        let rows = conn
            .prepare_cached(
                "SELECT seq, market_id, kind FROM market_changes WHERE seq > ?1
                  ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![cursor, BATCH], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let full = rows.len() as i64 == BATCH;
        let (last, changes) = changes_of(cursor, rows);
        Ok((last, changes, full))
    })
    .await
}

/// The changes of `rows` (seq, market, kind) read past `cursor`, each once, in order, and the
/// last row's seq.
fn changes_of(cursor: i64, rows: Vec<(i64, i64, String)>) -> (i64, Vec<Change>) {
    let last = rows.last().map_or(cursor, |r| r.0);
    let mut seen = HashSet::new();
    let changes = rows
        .into_iter()
        .filter_map(|(_, id, kind)| {
            let change = match kind.as_str() {
                "m" => Change::Market(id),
                "s" => Change::Status(id),
                "d" => Change::MarketDeleted(id),
                "v" => Change::Vector(id),
                _ => return None,
            };
            seen.insert(change.clone()).then_some(change)
        })
        .collect();
    (last, changes)
}

/// Deletes the rows read, [`BATCH`] to a write (a seed of a million markets leaves two million:
/// one write deleting them all would hold the writer for seconds).
async fn prune(db: &Db, cursor: i64) -> Result<(), DbError> {
    loop {
        let deleted = db
            .write(move |conn| {
                Ok::<_, DbError>(conn.execute(
                    "DELETE FROM market_changes WHERE seq IN (
                         SELECT seq FROM market_changes WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
                    params![cursor, BATCH],
                )?)
            })
            .await?;
        if (deleted as i64) < BATCH {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbOptions;

    #[tokio::test]
    async fn the_feed_reads_what_any_writer_committed_and_prunes_what_it_read_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("agora.db"), &DbOptions::default()).unwrap();
        // Another writer's rows (as `agora seed` leaves them): more than one batch.
        let rows = BATCH * 2 + 500;
        db.write(move |conn| {
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                 INSERT INTO market_changes (market_id, kind) SELECT i, 'v' FROM n",
                [rows],
            )?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
        let (last, changes, full) = poll(&db, 0).await.unwrap();
        assert_eq!((last, changes.len(), full), (BATCH, BATCH as usize, true));
        assert_eq!(changes[0], Change::Vector(1));
        let (last, _, full) = poll(&db, BATCH * 2).await.unwrap();
        assert_eq!((last, full), (rows, false));
        assert_eq!(newest(&db).await.unwrap(), rows);
        prune(&db, rows - 1).await.unwrap();
        let left: i64 = db
            .read(|conn| {
                Ok::<_, DbError>(conn.query_row(
                    "SELECT count(*) FROM market_changes",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(left, 1, "every row read is deleted, the unread one kept");
        // Numbers are never used twice: a new row comes after every deleted one.
        assert_eq!(newest(&db).await.unwrap(), rows);
        db.close().await;
    }

    fn row(seq: i64, id: i64, kind: &str) -> (i64, i64, String) {
        (seq, id, kind.to_owned())
    }

    #[test]
    fn rows_become_changes_once_each_in_order() {
        let polled = changes_of(
            4,
            vec![
                row(5, 1, "m"),
                row(6, 1, "v"),
                row(7, 2, "s"),
                row(8, 1, "v"),
                row(9, 2, "d"),
                row(10, 3, "x"),
            ],
        );
        assert_eq!(
            polled,
            (
                10,
                vec![
                    Change::Market(1),
                    Change::Vector(1),
                    Change::Status(2),
                    Change::MarketDeleted(2)
                ]
            )
        );
        assert_eq!(changes_of(4, vec![]), (4, vec![]));
    }
}
