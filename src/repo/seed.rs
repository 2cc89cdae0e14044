//! Bulk demo data for `agora seed`: thousands of users and markets per transaction, each
//! written the way the API would have written it (stakes checked, settlements paid), so the
//! seeded database keeps every invariant. What the demo data is, `seed.rs` decides.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::RepoError;
use crate::domain::trading::Stake;

/// How a demo market ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoEnd {
    /// Still open.
    Active,
    /// Closed to stakes.
    Closed,
    /// Resolved to this outcome, paid out.
    Resolved(u32),
    /// Cancelled, refunded.
    Cancelled,
}

/// A demo market and its history.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoMarket {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Creator.
    pub creator_id: i64,
    /// Outcome labels.
    pub outcomes: Vec<String>,
    /// When it was created (and last changed).
    pub created_at: OffsetDateTime,
    /// Its close time, set once its history is written.
    pub close_time: Option<OffsetDateTime>,
    /// Stakes placed while it was open, in order, by user id; one its user cannot afford is
    /// skipped.
    pub stakes: Vec<(i64, Stake)>,
    /// Where it ends up.
    pub end: DemoEnd,
    /// Its search vector (name and description embedded by the model given with it).
    pub vector: Vec<f32>,
}

/// Writes demo data in bulk.
#[async_trait]
pub trait SeedRepository: Send + Sync {
    /// Creates `count` users named `demo<N>`, N counting on from the highest user id, with role
    /// user, `password_hash` and a GRANT of `grant` credits each, created at `now`, in one
    /// transaction; returns the first one's id.
    async fn demo_users(
        &self,
        count: u32,
        password_hash: String,
        grant: i64,
        now: OffsetDateTime,
    ) -> Result<i64, RepoError>;
    /// Stores `markets` in one transaction, each created, staked on, moved to its end (settled
    /// when resolved or cancelled, by staff) and indexed with its vector of `model`.
    async fn demo_markets(&self, markets: Vec<DemoMarket>, model: String) -> Result<(), RepoError>;
}
