//! The outbox and market history on PostgreSQL (migration 2), appended inside the writing
//! transactions of markets and trading, read by [`PgEventRepository`].
//!
//! A sequence hands out numbers when they are asked for, not in commit order: two transactions
//! that took 5 and 6 may commit 6 first, and a reader past 6 would never see 5. So [`append`]
//! first takes one transaction-scoped advisory lock ([`EVENT_LOCK`]), which is held until
//! commit: the transactions that append events take their numbers and commit one at a time,
//! in order. Every append is the last statement of its transaction but the history row of the
//! market the transaction already has locked, so the lock is held for the commit alone (and no
//! transaction waits for it while holding a lock another one under it needs). A transaction
//! that rolls back after taking a number leaves a gap; numbers only ever grow.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{now_ms, transaction, Conn, Pg, TxError};
use crate::{
    domain::event::{minute_of, Event, EventBounds, HistoryRow, NewEvent},
    repo::{from_millis, EventRepository, RepoError},
};

/// Any number, the same in every agora: the advisory lock that orders appends.
const EVENT_LOCK: i64 = 0x6167_6f72_615f_6576; // "agora_ev"

/// Rows deleted by one statement of the pruning job.
const PRUNE_BATCH: i64 = 10_000;

/// Appends `event` in the caller's transaction (taking the append lock first).
pub(super) async fn append(c: &Conn<'_>, event: &NewEvent) -> Result<(), TxError> {
    c.exec("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOCK])
        .await?;
    c.exec(
        "INSERT INTO events (kind, market_id, data, created_at) VALUES ($1, $2, $3, $4)",
        &[
            &event.kind.as_str(),
            &event.market_id,
            &event.data.to_string(),
            &now_ms(),
        ],
    )
    .await?;
    Ok(())
}

/// The statement that records a market's pools and volume after a stake (the minute's row,
/// replaced), and its parameters' order: market, minute, pools, volume.
pub(super) const RECORD_HISTORY: &str =
    "INSERT INTO market_history (market_id, minute, pools, volume) VALUES ($1, $2, $3, $4)
     ON CONFLICT (market_id, minute) DO UPDATE SET pools = excluded.pools, volume = excluded.volume";

/// The minute and pools text of a history row written at `now_ms`.
pub(super) fn history_key(now_ms: i64, pools: &[i64]) -> (i64, String) {
    (minute_of(now_ms), HistoryRow::encode_pools(pools))
}

pub(super) fn event_from_row(r: &Row) -> Result<Event, TxError> {
    let data: String = r.try_get(3)?;
    Ok(Event {
        seq: r.try_get(0)?,
        kind: r.try_get(1)?,
        market_id: r.try_get(2)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        created_at: from_millis(r.try_get(4)?),
    })
}

/// Events and history on PostgreSQL.
pub struct PgEventRepository {
    pg: Arc<Pg>,
}

impl PgEventRepository {
    pub(super) fn new(pg: Arc<Pg>) -> Self {
        Self { pg }
    }
}

#[async_trait]
impl EventRepository for PgEventRepository {
    async fn after(
        &self,
        seq: i64,
        markets: Option<Vec<i64>>,
        limit: u32,
    ) -> Result<Vec<Event>, RepoError> {
        super::read(&self.pg, |client| async move {
            let c = Conn::client(&client);
            let limit = i64::from(limit);
            let rows = match &markets {
                None => {
                    c.rows(
                        "SELECT seq, kind, market_id, data, created_at FROM events
                          WHERE seq > $1 ORDER BY seq LIMIT $2",
                        &[&seq, &limit],
                    )
                    .await?
                }
                Some(ids) => {
                    c.rows(
                        "SELECT seq, kind, market_id, data, created_at FROM events
                          WHERE seq > $1 AND market_id = ANY($3) ORDER BY seq LIMIT $2",
                        &[&seq, &limit, ids],
                    )
                    .await?
                }
            };
            rows.iter().map(event_from_row).collect()
        })
        .await
    }

    async fn bounds(&self) -> Result<EventBounds, RepoError> {
        super::read(&self.pg, |client| async move {
            let row = Conn::client(&client)
                .one(
                    "SELECT (SELECT coalesce(max(seq), 0) FROM events), pruned_through
                       FROM event_state WHERE id = 1",
                    &[],
                )
                .await?;
            let (newest, pruned): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            Ok(EventBounds {
                newest: newest.max(pruned),
                pruned_through: pruned,
            })
        })
        .await
    }

    async fn prune(&self, age: Duration) -> Result<u64, RepoError> {
        let cutoff = now_ms() - age.as_millis() as i64;
        let mut deleted = 0u64;
        loop {
            let n = transaction(&self.pg, |c| {
                Box::pin(async move {
                    // The oldest batch, up to the first event young enough to keep (numbers
                    // follow commit time).
                    let last: Option<i64> = c
                        .one(
                            "SELECT max(seq) FROM (
                                 SELECT seq FROM events
                                  WHERE seq < coalesce(
                                      (SELECT seq FROM events WHERE created_at >= $1 ORDER BY seq LIMIT 1),
                                      (SELECT max(seq) + 1 FROM events))
                                  ORDER BY seq LIMIT $2) oldest",
                            &[&cutoff, &PRUNE_BATCH],
                        )
                        .await?
                        .try_get(0)?;
                    let Some(last) = last else {
                        return Ok(0);
                    };
                    let n = c.exec("DELETE FROM events WHERE seq <= $1", &[&last]).await?;
                    c.exec(
                        "UPDATE event_state SET pruned_through = greatest(pruned_through, $1) WHERE id = 1",
                        &[&last],
                    )
                    .await?;
                    Ok(n)
                })
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
        super::read(&self.pg, |client| async move {
            let rows = Conn::client(&client)
                .rows(
                    "SELECT h.minute, h.pools, h.volume
                       FROM unnest($2::bigint[]) WITH ORDINALITY AS b(at, i)
                       LEFT JOIN LATERAL (
                           SELECT minute, pools, volume FROM market_history
                            WHERE market_id = $1 AND minute < b.at
                            ORDER BY minute DESC LIMIT 1) h ON true
                      ORDER BY b.i",
                    &[&market_id, &boundaries],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let Some(minute) = r.try_get::<_, Option<i64>>(0)? else {
                        return Ok(None);
                    };
                    let pools: String = r.try_get(1)?;
                    let pools = HistoryRow::decode_pools(&pools).ok_or_else(|| {
                        RepoError::Internal(format!("bad history pools {pools:?}"))
                    })?;
                    Ok(Some(HistoryRow {
                        minute,
                        pools,
                        volume: r.try_get(2)?,
                    }))
                })
                .collect()
        })
        .await
    }
}
