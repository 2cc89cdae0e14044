//! The storage engine as a whole, beside its repositories: readiness and load (`/readyz`,
//! `/metrics`), closing at shutdown, and backups. [`Storage`] is what opening an engine gives
//! `app.rs`: every repository and probe of that engine, as trait objects.

use std::{path::PathBuf, sync::Arc};

use async_trait::async_trait;

use super::{
    ChangeFeed, EventRepository, JobRepository, MarketRepository, SearchRepository, SeedRepository,
    SessionRepository, TradingRepository, UserRepository, WebhookRepository,
};

/// The schema version this build serves (`/readyz` reports it).
pub use crate::db::SCHEMA_VERSION;

/// The engine's own state, not any one aggregate's.
#[async_trait]
pub trait Engine: Send + Sync {
    /// The schema version when the database accepts a write and its schema is the one this
    /// build serves; otherwise why not (readiness fails with it).
    async fn ready(&self) -> Result<i64, String>;
    /// Reads so far that found every connection busy and waited (a metric).
    fn pool_waits(&self) -> u64;
    /// On an engine whose writes share transactions (SQLite's single writer): the
    /// transactions committed so far and the writes they carried (metrics; their ratio is the
    /// mean batch of the group commit). `None` where each write is its own transaction.
    fn write_batches(&self) -> Option<(u64, u64)>;
    /// Lets the queued writes finish, then closes the database: the last step of a shutdown.
    async fn close(&self);
}

/// A checked copy of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupCopy {
    /// Where it is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Why a backup or a restore failed, in words for an operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Copies of the live database (`agora backup`, the `backup` job) and putting one back
/// (`agora restore`).
#[async_trait]
pub trait Backup: Send + Sync {
    /// Why this engine does not take backups, when it does not (every method then fails with
    /// it): the API refuses a backup at once rather than queue a job that cannot succeed.
    fn refusal(&self) -> Option<String> {
        None
    }
    /// Writes a consistent, checked copy of the live database to `dest` (which must not exist)
    /// while the server keeps serving.
    async fn backup_to(&self, dest: PathBuf) -> Result<BackupCopy, StoreError>;
    /// Backs up into `dir` under a name that sorts by time, then deletes all but the newest
    /// `keep` copies there; returns the copy and how many were deleted.
    async fn backup_into(
        &self,
        dir: PathBuf,
        keep: usize,
    ) -> Result<(BackupCopy, usize), StoreError>;
    /// Replaces the database with the copy at `from`, after checking it; refused while a
    /// server runs on it. Returns where the replaced database was kept.
    async fn restore_from(&self, from: PathBuf) -> Result<PathBuf, StoreError>;
}

/// One storage engine, opened: its repositories and probes.
#[derive(Clone)]
pub struct Storage {
    /// Readiness, load, shutdown.
    pub engine: Arc<dyn Engine>,
    /// Backups of this database.
    pub backup: Arc<dyn Backup>,
    /// Markets.
    pub markets: Arc<dyn MarketRepository>,
    /// Stakes and settlement.
    pub trading: Arc<dyn TradingRepository>,
    /// Accounts.
    pub users: Arc<dyn UserRepository>,
    /// Refresh tokens.
    pub sessions: Arc<dyn SessionRepository>,
    /// Search indexes.
    pub search: Arc<dyn SearchRepository>,
    /// The job queue.
    pub jobs: Arc<dyn JobRepository>,
    /// The outbox of events and the market history.
    pub events: Arc<dyn EventRepository>,
    /// Webhook subscriptions and deliveries.
    pub webhooks: Arc<dyn WebhookRepository>,
    /// Bulk demo data (`agora seed`).
    pub seed: Arc<dyn SeedRepository>,
    /// Changes other processes make, for an engine several processes can share (PostgreSQL);
    /// `None` where only one process can write (SQLite).
    pub changes: Option<Arc<dyn ChangeFeed>>,
}
