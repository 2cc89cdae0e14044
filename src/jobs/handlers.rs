//! agora's jobs: index a market's text for search, reindex every market, close markets past
//! their close time (periodic), back the database up, forget old finished jobs (periodic),
//! forget old events and webhook deliveries (periodic), send a webhook delivery. Each is
//! idempotent (a delivery already answered is not sent again).

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::{json, Value};

use super::Handler;
use crate::{
    domain::job::{Job, JobKind},
    repo::WebhookRepository,
    repo::{Backup, EventRepository, JobRepository},
    service::{search::SearchService, trading::TradingService, webhooks::WebhookService},
};

/// Where backups go.
#[derive(Clone)]
pub struct Backups {
    /// What takes them.
    pub store: Arc<dyn Backup>,
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
    events: Option<EventPruning>,
    webhooks: Option<Arc<WebhookService>>,
}

/// What the `prune_events` job deletes, and past what age.
struct EventPruning {
    events: Arc<dyn EventRepository>,
    webhooks: Arc<dyn WebhookRepository>,
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
            events: None,
            webhooks: None,
        }
    }

    /// Also prunes events of `events`, and finished deliveries of `webhooks`, older than
    /// `retention`.
    pub fn pruning_events(
        mut self,
        events: Arc<dyn EventRepository>,
        webhooks: Arc<dyn WebhookRepository>,
        retention: Duration,
    ) -> Self {
        self.events = Some(EventPruning {
            events,
            webhooks,
            retention,
        });
        self
    }

    /// Also sends webhook deliveries with `webhooks`.
    pub fn delivering(mut self, webhooks: Arc<WebhookService>) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    async fn backup(&self) -> Result<Value, String> {
        let Backups { store, dir, keep } = &self.backups;
        let (done, pruned) = store
            .backup_into(dir.clone(), (*keep).max(1))
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(path = %done.path.display(), bytes = done.bytes, pruned, "backed up");
        Ok(json!({
            "path": done.path.display().to_string(),
            "bytes": done.bytes,
            "integrity": "ok",
            "pruned": pruned,
        }))
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
            JobKind::IndexMarkets => {
                let ids: Vec<i64> = job.payload["market_ids"]
                    .as_array()
                    .and_then(|ids| ids.iter().map(serde_json::Value::as_i64).collect())
                    .ok_or("the payload lacks an array of integer market_ids")?;
                let counts = self
                    .search
                    .index_markets(&ids)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({
                    "markets": ids.len(),
                    "embedded": counts.embedded,
                    "unchanged": counts.unchanged,
                    "superseded": counts.superseded,
                })))
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
            JobKind::PruneEvents => {
                let Some(EventPruning {
                    events,
                    webhooks,
                    retention,
                }) = &self.events
                else {
                    return Ok(Some(json!({ "deleted": 0, "deliveries_deleted": 0 })));
                };
                let n = events.prune(*retention).await.map_err(|e| e.to_string())?;
                let d = webhooks
                    .prune(*retention)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some(json!({ "deleted": n, "deliveries_deleted": d })))
            }
            JobKind::DeliverWebhook => {
                let id = job.payload["delivery_id"]
                    .as_i64()
                    .ok_or("the payload lacks an integer delivery_id")?;
                let Some(webhooks) = &self.webhooks else {
                    return Err("webhooks are not delivered by this process".into());
                };
                let last = job.attempts >= job.max_attempts;
                webhooks.deliver(id, job.attempts, last).await.map(Some)
            }
            JobKind::Other(other) => Err(format!("no handler for job kind `{other}`")),
        }
    }
}
