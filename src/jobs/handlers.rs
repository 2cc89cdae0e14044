//! agora's jobs: index a market's text for search, reindex every market, close markets past
//! their close time (periodic), back the database up, forget old finished jobs (periodic). Each
//! is idempotent.

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::Handler;
use crate::{
    db::backup,
    domain::job::{Job, JobKind},
    repo::JobRepository,
    service::{search::SearchService, trading::TradingService},
};

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

/// Runs agora's job kinds.
pub struct AgoraJobs {
    trading: Arc<TradingService>,
    search: Arc<SearchService>,
    backups: Backups,
    queue: Arc<dyn JobRepository>,
    retention: Duration,
}

impl AgoraJobs {
    /// Handlers over the services they use.
    pub fn new(
        trading: Arc<TradingService>,
        search: Arc<SearchService>,
        backups: Backups,
        queue: Arc<dyn JobRepository>,
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
        match &job.kind {
            JobKind::IndexMarket => {
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
            JobKind::ReindexMarkets => {
                let n = self
                    .search
                    .enqueue_reindex(job.owner_id, false)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({ "enqueued": n })))
            }
            JobKind::CloseDueMarkets => {
                let n = self.trading.close_due().await.map_err(|e| e.to_string())?;
                if n > 0 {
                    tracing::info!(markets = n, "closed markets past their close time");
                }
                Ok(Some(json!({ "closed": n })))
            }
            JobKind::Backup => self.backup().await.map(Some),
            JobKind::PruneJobs => {
                let n = self
                    .queue
                    .prune_finished(self.retention)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({ "deleted": n })))
            }
            JobKind::Other(other) => Err(format!("no handler for job kind `{other}`")),
        }
    }
}
