//! The outbox and the market history, read back ([`crate::domain::event`] says what they hold).
//! Events and history rows are appended by the markets' and trading's own transactions in each
//! engine; this trait is what the event stream, the webhooks and the history endpoints read.

use std::time::Duration;

use async_trait::async_trait;

use super::RepoError;
use crate::domain::event::{Event, EventBounds, HistoryRow};

/// Events and history.
#[async_trait]
pub trait EventRepository: Send + Sync {
    /// Events after `seq`, oldest first, at most `limit`; with `markets`, only theirs.
    async fn after(
        &self,
        seq: i64,
        markets: Option<Vec<i64>>,
        limit: u32,
    ) -> Result<Vec<Event>, RepoError>;
    /// The newest sequence number and how far events were pruned.
    async fn bounds(&self) -> Result<EventBounds, RepoError>;
    /// Deletes events older than `age` (oldest first, in batches) and records how far it went;
    /// returns how many.
    async fn prune(&self, age: Duration) -> Result<u64, RepoError>;
    /// For each of `boundaries` (Unix milliseconds), the market's last history row before it.
    async fn history_at(
        &self,
        market_id: i64,
        boundaries: Vec<i64>,
    ) -> Result<Vec<Option<HistoryRow>>, RepoError>;
}
