//! agora's jobs: index a market's text for search, reindex every market, close markets past
//! their close time (periodic), back the database up, forget old finished jobs (periodic). Each
//! is idempotent.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{Handler, Job, NewJob, Queue};
use crate::{
    db::backup,
    service::{search::SearchService, trading::TradingService},
};

/// Embed a market's text and store its vector (payload `{"market_id": N}`).
pub const INDEX_MARKET: &str = "index_market";
/// Enqueue `index_market` for every market.
pub const REINDEX_MARKETS: &str = "reindex_markets";
/// Close every active market whose close time has passed (periodic).
pub const CLOSE_DUE_MARKETS: &str = "close_due_markets";
/// Back the database up into the backup directory (on request, or periodic).
pub const BACKUP: &str = "backup";
/// Delete jobs that ended longer ago than the retention (periodic).
pub const PRUNE_JOBS: &str = "prune_jobs";

/// Where backups go.
#[derive(Debug, Clone)]
pub struct Backups {
    /// The live database.
    pub db_file: PathBuf,
    /// The backup directory.
    pub dir: PathBuf,
    /// Backups kept.
    pub keep: usize,
}

/// A backup requested by `owner`; one waits at a time.
pub fn backup(owner: i64) -> NewJob {
    NewJob::new(BACKUP, json!({}))
        .owned_by(owner)
        .dedupe(BACKUP.to_owned())
}

/// The job that (re)indexes market `market_id`, readable by `owner`; one waits per market.
pub fn index_market(market_id: i64, owner: i64) -> NewJob {
    NewJob::new(INDEX_MARKET, json!({ "market_id": market_id }))
        .owned_by(owner)
        .dedupe(format!("{INDEX_MARKET}:{market_id}"))
}

/// The job that reindexes every market, for `owner`.
pub fn reindex_markets(owner: i64) -> NewJob {
    NewJob::new(REINDEX_MARKETS, json!({}))
        .owned_by(owner)
        .dedupe(REINDEX_MARKETS.to_owned())
}

/// Runs agora's job kinds.
pub struct AgoraJobs {
    trading: Arc<TradingService>,
    search: Arc<SearchService>,
    backups: Backups,
    queue: Arc<Queue>,
    retention: Duration,
}

impl AgoraJobs {
    /// Handlers over the services they use.
    pub fn new(
        trading: Arc<TradingService>,
        search: Arc<SearchService>,
        backups: Backups,
        queue: Arc<Queue>,
        retention: Duration,
    ) -> Self {
        AgoraJobs {
            trading,
            search,
            backups,
            queue,
            retention,
        }
    }

    async fn backup(&self) -> Result<Value, String> {
        let Backups { db_file, dir, keep } = self.backups.clone();
        tokio::task::spawn_blocking(move || {
            let dest = dir.join(backup::file_name(OffsetDateTime::now_utc()));
            let done = backup::backup(&db_file, &dest).map_err(|e| e.to_string())?;
            let pruned = backup::prune(&dir, keep.max(1)).map_err(|e| e.to_string())?;
            tracing::info!(path = %done.path.display(), bytes = done.bytes, pruned, "backed up");
            Ok(json!({
                "path": done.path.display().to_string(),
                "bytes": done.bytes,
                "integrity": "ok",
                "pruned": pruned,
            }))
        })
        .await
        .map_err(|_| "the backup panicked".to_owned())?
    }
}

#[async_trait::async_trait]
impl Handler for AgoraJobs {
    async fn run(&self, job: &Job) -> Result<Option<Value>, String> {
        match job.kind.as_str() {
            INDEX_MARKET => {
                let id = job.payload["market_id"]
                    .as_i64()
                    .ok_or("the payload lacks an integer market_id")?;
                let outcome = self
                    .search
                    .index_market(id)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(
                    json!({ "market_id": id, "outcome": outcome.as_str() }),
                ))
            }
            REINDEX_MARKETS => {
                let n = self
                    .search
                    .enqueue_reindex(job.owner_id, false)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({ "enqueued": n })))
            }
            CLOSE_DUE_MARKETS => {
                let n = self.trading.close_due().await.map_err(|e| e.to_string())?;
                if n > 0 {
                    tracing::info!(markets = n, "closed markets past their close time");
                }
                Ok(Some(json!({ "closed": n })))
            }
            BACKUP => self.backup().await.map(Some),
            PRUNE_JOBS => {
                let n = self
                    .queue
                    .prune_finished(self.retention)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({ "deleted": n })))
            }
            other => Err(format!("no handler for job kind `{other}`")),
        }
    }
}
