//! The outbox and market history on SQLite (migration 10): appended inside the writing
//! transactions of markets and trading, read by [`SqliteEventRepository`]. The single writer
//! commits in the order AUTOINCREMENT hands out sequence numbers, so a reader that has seen
//! `seq` N never finds a smaller one appear later.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::{from_millis, to_millis};
use crate::{
    db::Db,
    domain::event::{minute_of, Event, EventBounds, HistoryRow, NewEvent},
    repo::{EventRepository, RepoError},
};

/// Rows deleted by one write of the pruning job.
const PRUNE_BATCH: i64 = 10_000;

/// Appends `event` in the caller's transaction; returns its sequence number.
pub(crate) fn append(conn: &Connection, event: &NewEvent) -> Result<i64, RepoError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO events (kind, market_id, data, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING seq",
        )?
        .query_row(
            params![
                event.kind.as_str(),
                event.market_id,
                event.data.to_string(),
                to_millis(OffsetDateTime::now_utc())
            ],
            |r| r.get(0),
        )?)
}

/// Records a market's pools and volume after a stake at `now_ms` (the minute's row, replaced).
pub(crate) fn record_history(
    conn: &Connection,
    market_id: i64,
    pools: &[i64],
    volume: i64,
    now_ms: i64,
) -> Result<(), RepoError> {
    conn.prepare_cached(
        "INSERT INTO market_history (market_id, minute, pools, volume) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (market_id, minute) DO UPDATE SET pools = excluded.pools, volume = excluded.volume",
    )?
    .execute(params![
        market_id,
        minute_of(now_ms),
        HistoryRow::encode_pools(pools),
        volume
    ])?;
    Ok(())
}

/// Forgets a deleted market's history (in the deleting transaction).
pub(crate) fn forget_history(conn: &Connection, market_id: i64) -> Result<(), RepoError> {
    conn.prepare_cached("DELETE FROM market_history WHERE market_id = ?1")?
        .execute([market_id])?;
    Ok(())
}

pub(super) fn event_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let data: String = r.get(3)?;
    Ok(Event {
        seq: r.get(0)?,
        kind: r.get(1)?,
        market_id: r.get(2)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        created_at: from_millis(r.get(4)?),
    })
}

/// Events and history on SQLite.
pub struct SqliteEventRepository {
    db: Arc<Db>,
}

impl SqliteEventRepository {
    /// A repository over `db`.
    pub fn new(db: Arc<Db>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl EventRepository for SqliteEventRepository {
    async fn after(
        &self,
        seq: i64,
        markets: Option<Vec<i64>>,
        limit: u32,
    ) -> Result<Vec<Event>, RepoError> {
        self.db
            .read(move |conn| {
                let rows = match &markets {
                    None => conn
                        .prepare_cached(
                            "SELECT seq, kind, market_id, data, created_at FROM events
                              WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                        )?
                        .query_map(params![seq, limit], event_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                    Some(ids) => conn
                        .prepare_cached(
                            "SELECT seq, kind, market_id, data, created_at FROM events
                              WHERE seq > ?1 AND market_id IN (SELECT value FROM json_each(?3))
                              ORDER BY seq LIMIT ?2",
                        )?
                        .query_map(
                            params![seq, limit, serde_json::to_string(ids).unwrap_or_default()],
                            event_from_row,
                        )?
                        .collect::<rusqlite::Result<Vec<_>>>()?,
                };
                Ok(rows)
            })
            .await
    }

    async fn bounds(&self) -> Result<EventBounds, RepoError> {
        self.db
            .read(|conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT (SELECT coalesce(max(seq), 0) FROM events), pruned_through
                           FROM event_state WHERE id = 1",
                    )?
                    .query_row([], |r| {
                        let (newest, pruned): (i64, i64) = (r.get(0)?, r.get(1)?);
                        Ok(EventBounds {
                            newest: newest.max(pruned),
                            pruned_through: pruned,
                        })
                    })?)
            })
            .await
    }

    async fn prune(&self, age: Duration) -> Result<u64, RepoError> {
        let cutoff = to_millis(OffsetDateTime::now_utc()) - age.as_millis() as i64;
        // The first event young enough to keep (or the next one to be written), found on a
        // reader: the scan reads only the events about to go (sequence numbers follow commit
        // time). `None`: there are no events.
        let keep_from: Option<i64> = self
            .db
            .read(move |conn| {
                Ok::<_, RepoError>(
                    conn.prepare_cached(
                        "SELECT coalesce(
                             (SELECT seq FROM events WHERE created_at >= ?1 ORDER BY seq LIMIT 1),
                             (SELECT max(seq) + 1 FROM events))",
                    )?
                    .query_row([cutoff], |r| r.get(0))?,
                )
            })
            .await?;
        let Some(keep_from) = keep_from else {
            return Ok(0);
        };
        let mut deleted = 0u64;
        loop {
            let n = self
                .db
                .write(move |conn| {
                    let last: Option<i64> = conn
                        .prepare_cached(
                            "SELECT max(seq) FROM (SELECT seq FROM events
                              WHERE seq < ?1 ORDER BY seq LIMIT ?2)",
                        )?
                        .query_row(params![keep_from, PRUNE_BATCH], |r| r.get(0))?;
                    let Some(last) = last else {
                        return Ok::<_, RepoError>(0);
                    };
                    let n = conn
                        .prepare_cached("DELETE FROM events WHERE seq <= ?1")?
                        .execute([last])?;
                    conn.prepare_cached(
                        "UPDATE event_state SET pruned_through = max(pruned_through, ?1) WHERE id = 1",
                    )?
                    .execute([last])?;
                    Ok(n as u64)
                })
                .await?;
            deleted += n;
            if n < PRUNE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }

    async fn history_at(
        &self,
        market_id: i64,
        boundaries: Vec<i64>,
    ) -> Result<Vec<Option<HistoryRow>>, RepoError> {
        self.db
            .read(move |conn| {
                let mut last = conn.prepare_cached(
                    "SELECT minute, pools, volume FROM market_history
                      WHERE market_id = ?1 AND minute < ?2 ORDER BY minute DESC LIMIT 1",
                )?;
                boundaries
                    .iter()
                    .map(|&b| {
                        let row = last
                            .query_row(params![market_id, b], |r| {
                                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                            })
                            .optional()?;
                        row.map(|(minute, pools, volume)| {
                            let pools = HistoryRow::decode_pools(&pools).ok_or_else(|| {
                                RepoError::Internal(format!("bad history pools {pools:?}"))
                            })?;
                            Ok(HistoryRow {
                                minute,
                                pools,
                                volume,
                            })
                        })
                        .transpose()
                    })
                    .collect()
            })
            .await
    }
}
