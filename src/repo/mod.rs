//! Data access behind traits. Each method is one SQL statement or one transaction and returns
//! domain types; a failure is a [`RepoError`].
//!
//! The traits are engine-neutral: markets, search, users, sessions and trading here, the job
//! queue in `jobs.rs` ([`JobRepository`]), bulk demo data in `seed.rs` ([`SeedRepository`]), and
//! the engine as a whole in `store.rs` ([`Engine`], [`Backup`], and [`Storage`], the bundle an
//! opened engine hands to `app.rs`). Each engine is a folder: [`sqlite`] today, a second one
//! beside it; `app.rs` opens one and wraps its markets and trading in the cache decorators of
//! [`cached`]. Writes whose follow-up work must not be lost take the jobs the service decided on
//! and insert them in their own transaction; rules both engines apply are pure functions in
//! [`crate::domain`].

pub mod cached;
mod changes;
mod events;
mod jobs;
pub mod postgres;
mod seed;
pub mod sqlite;
mod store;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;

pub use changes::{Change, ChangeFeed, ChangeHandler};
pub use events::EventRepository;
pub use jobs::JobRepository;
pub use seed::{DemoEnd, DemoMarket, SeedRepository};
pub use store::{Backup, BackupCopy, Engine, Storage, StoreError, SCHEMA_VERSION};
pub use webhooks::{Dispatched, Render, WebhookRepository};

use crate::domain::{
    authority::Standing,
    job::NewJob,
    market::{ListQuery, Market, MarketChanges, MarketPage, NewMarket},
    user::{Role, User},
};

/// A repository failure, in terms a service can act on.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// No row with that key.
    #[error("not found")]
    NotFound,
    /// A unique or primary-key constraint was violated.
    #[error("already exists: {0}")]
    Duplicate(String),
    /// A referenced row does not exist.
    #[error("a referenced row does not exist")]
    MissingReference,
    /// A CHECK or NOT NULL constraint was violated.
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The row's version is not the expected one (optimistic concurrency).
    #[error("version mismatch (current {current})")]
    VersionMismatch {
        /// The row's version now.
        current: i64,
    },
    /// A rule checked inside the transaction refused the change.
    #[error("refused: {0:?}")]
    Refused(crate::domain::Rejection),
    /// The database cannot serve now (busy, full, read-only, shutting down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corruption.
    #[error("database error: {0}")]
    Internal(String),
}

/// The jobs a new market enqueues in its own transaction: the service's decision, made from
/// the market as inserted (only the transaction knows its id).
pub type NewMarketJobs = fn(&Market) -> Vec<NewJob>;

/// Markets and their outcomes.
#[async_trait]
pub trait MarketRepository: Send + Sync {
    /// One page of markets matching `query`, outcomes and creators included, with the total.
    async fn list(&self, query: ListQuery) -> Result<Arc<MarketPage>, RepoError>;
    /// One market by id (shared: a cached market is handed out, not copied).
    async fn get(&self, id: i64) -> Result<Option<Arc<Market>>, RepoError>;
    /// Inserts a market with its outcomes (and its creator's initial stake) and enqueues the
    /// jobs `jobs` names for it, all in one transaction, so a crash cannot lose them; returns
    /// the market as stored.
    async fn create(&self, market: NewMarket, jobs: NewMarketJobs) -> Result<Market, RepoError>;
    /// Applies `changes` by an actor of `standing` if the market is still at
    /// `expected_version` and the change touches no field frozen for it
    /// ([`authority::check_edit`](crate::domain::authority::check_edit), decided in the same
    /// transaction); bumps the version and enqueues `jobs` (the service's decision) in the
    /// same transaction.
    async fn update(
        &self,
        id: i64,
        expected_version: i64,
        changes: MarketChanges,
        standing: Standing,
        jobs: Vec<NewJob>,
    ) -> Result<Market, RepoError>;
    /// Deletes the market if it is still at `expected_version`.
    async fn delete(&self, id: i64, expected_version: i64) -> Result<(), RepoError>;
}

/// A market's searchable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketText {
    /// The name.
    pub name: String,
    /// The description, if any.
    pub description: Option<String>,
}

impl MarketText {
    /// Name and description as one text, the embedder's input.
    pub fn joined(&self) -> String {
        match &self.description {
            Some(d) => format!("{}\n{d}", self.name),
            None => self.name.clone(),
        }
    }

    /// SHA-256 (hex) of the text as embedded by `model`: equal hashes need no new vector.
    pub fn content_hash(&self, model: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(model.as_bytes());
        h.update([0]);
        h.update(self.joined().as_bytes());
        hex::encode(h.finalize())
    }
}

/// Receives stored vectors: `(count, None)` once, then `(market id, Some((vector, the market's
/// status)))` each.
pub type VectorSink =
    Box<dyn for<'a> FnMut(i64, Option<(&'a [f32], crate::domain::market::MarketStatus)>) + Send>;

/// The search indexes: full text (FTS5, kept by triggers) and one vector per market.
#[async_trait]
pub trait SearchRepository: Send + Sync {
    /// Markets whose text has `term` (one word of
    /// [`keywords`](crate::domain::search::keywords), never query syntax) with their score for
    /// it, best first (names weigh double; higher is better, and a market's scores for several
    /// words add up to its rank for all of them), at most `limit`, filtered by `status` inside
    /// the query. The work is proportional to the number of markets that have the word.
    async fn term_matches(
        &self,
        term: String,
        status: Option<crate::domain::market::MarketStatus>,
        limit: u32,
    ) -> Result<Vec<(i64, f64)>, RepoError>;
    /// The status of each of `ids` that exists.
    async fn statuses(
        &self,
        ids: Vec<i64>,
    ) -> Result<std::collections::HashMap<i64, crate::domain::market::MarketStatus>, RepoError>;
    /// A market's text, the content hash of its stored vector for `model` if it has one, and
    /// its status.
    async fn text(
        &self,
        id: i64,
        model: String,
    ) -> Result<
        Option<(
            MarketText,
            Option<String>,
            crate::domain::market::MarketStatus,
        )>,
        RepoError,
    >;
    /// Stores `vector` (from `text`, by `model`) unless the market's text is no longer `text`
    /// (a later edit's job stores its own) or the market is gone; true when stored.
    async fn store_vector(
        &self,
        id: i64,
        model: String,
        text: MarketText,
        vector: Vec<f32>,
    ) -> Result<bool, RepoError>;
    /// The stored vector of a market for `model`, with the market's status.
    async fn vector(
        &self,
        id: i64,
        model: String,
    ) -> Result<Option<(Vec<f32>, crate::domain::market::MarketStatus)>, RepoError>;
    /// Passes every stored vector of `model` to `each`, one at a time, after telling it how
    /// many there are (`each(count, None)` first); returns how many.
    async fn each_vector(&self, model: String, each: VectorSink) -> Result<u64, RepoError>;
    /// Ids of every market (`missing_only`: of those without a vector of `model`), in id
    /// order: what a reindex enqueues jobs for.
    async fn markets_to_index(
        &self,
        model: String,
        missing_only: bool,
    ) -> Result<Vec<i64>, RepoError>;
}

/// Accounts.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user holding `grant` credits, recorded as a GRANT ledger entry (one
    /// transaction). A taken username (case-insensitively) is `Duplicate`.
    async fn create(
        &self,
        username: String,
        password_hash: String,
        role: Role,
        grant: i64,
    ) -> Result<User, RepoError>;
    /// One user by id.
    async fn get(&self, id: i64) -> Result<Option<User>, RepoError>;
    /// A user and its password hash, by username (case-insensitive), for logging in.
    async fn find_login(&self, username: String) -> Result<Option<(User, String)>, RepoError>;
    /// Changes a user's role; `None` when there is no such user.
    async fn set_role(&self, id: i64, role: Role) -> Result<Option<User>, RepoError>;
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is now used up and a new one stored in its family.
    Rotated {
        /// The account.
        user: User,
        /// The family (session id).
        family: String,
    },
    /// The token had already been rotated: someone replayed it, so its family is revoked.
    Reused {
        /// The revoked family.
        family: String,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Refresh tokens, stored as hashes and grouped in families (one per login).
#[async_trait]
pub trait SessionRepository: Send + Sync {
    /// Stores a new token (hash) starting or continuing `family`.
    async fn insert(
        &self,
        user_id: i64,
        token_hash: String,
        family: String,
        expires_at: time::OffsetDateTime,
    ) -> Result<(), RepoError>;
    /// In one transaction: uses up `old_hash` and stores `new_hash` in the same family; a
    /// token that was already used revokes its whole family.
    async fn rotate(
        &self,
        old_hash: String,
        new_hash: String,
        expires_at: time::OffsetDateTime,
    ) -> Result<Rotation, RepoError>;
    /// Revokes the family of `token_hash`; returns the family, `None` when the token is
    /// unknown.
    async fn revoke_family(&self, token_hash: String) -> Result<Option<String>, RepoError>;
    /// The user and current role behind session `family`, `None` when the family is unknown
    /// or revoked or its account is gone.
    async fn session_role(&self, family: String) -> Result<Option<(i64, Role)>, RepoError>;
}

/// Stakes, settlement and the reads that reconcile them. Each write is one transaction that
/// checks its rules (market open, balance sufficient, status forward-only) and makes every
/// change (balance, ledger, bet, position, pool, volume, status) or none. The rules are the
/// pure functions of [`staking`](crate::domain::staking) and
/// [`settle`](crate::domain::trading::settle), applied to what the transaction reads.
#[async_trait]
pub trait TradingRepository: Send + Sync {
    /// Places `stake` for `user_id`; with `idempotency_key`, a repeat of an earlier request
    /// returns its bet (and moves no money), a different request with the key is refused.
    async fn stake(
        &self,
        user_id: i64,
        market_id: i64,
        stake: crate::domain::trading::Stake,
        idempotency_key: Option<String>,
    ) -> Result<crate::domain::trading::Placed, RepoError>;
    /// Closes an active market to new stakes.
    async fn close(&self, market_id: i64) -> Result<Market, RepoError>;
    /// Resolves an active or closed market to `winner` and pays out the pool, if an actor of
    /// `standing` may resolve it ([`authority::check_resolution`](crate::domain::authority::check_resolution),
    /// decided on the positions the settlement pays).
    async fn resolve(
        &self,
        market_id: i64,
        winner: u32,
        standing: Standing,
    ) -> Result<Market, RepoError>;
    /// Cancels an active or closed market and refunds every stake.
    async fn cancel(&self, market_id: i64) -> Result<Market, RepoError>;
    /// Closes every active market whose close time has passed; returns their ids.
    async fn close_due(&self) -> Result<Vec<i64>, RepoError>;
    /// Positions on a market with their stakers, largest first (one statement per page).
    async fn market_positions(
        &self,
        market_id: i64,
        paging: crate::domain::Paging,
    ) -> Result<crate::domain::Page<crate::domain::trading::MarketPosition>, RepoError>;
    /// A user's positions with their markets, most recent first (one statement per page).
    async fn user_positions(
        &self,
        user_id: i64,
        paging: crate::domain::Paging,
    ) -> Result<crate::domain::Page<crate::domain::trading::UserPosition>, RepoError>;
    /// A user's ledger, newest first.
    async fn ledger(
        &self,
        user_id: i64,
        paging: crate::domain::Paging,
    ) -> Result<crate::domain::Page<crate::domain::trading::LedgerEntry>, RepoError>;
}

/// Unix milliseconds, the stored form of a time.
pub(crate) fn to_millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A stored time back as a UTC date-time (out-of-range values clamp to the epoch).
pub(crate) fn from_millis(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A vector as both engines store it: little-endian `f32`s.
pub fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector back (trailing bytes of a damaged blob are ignored).
pub fn decode_vector(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
