//! Trading rules: who may stake, close, resolve and cancel, and what each reads.
//!
//! Lifecycle rule: a market's creator, a moderator or an admin may close, resolve or cancel
//! it (the same people who may edit it), except that once users other than the creator have
//! staked, only a moderator or an admin may resolve it (403 for the creator; see
//! [`crate::domain::authority`]). The checks that depend on state (market open, balance,
//! forward-only status, who has staked) run inside the writing transaction.

use std::sync::Arc;

use super::{users::require, MarketChanged, MarketListener};
use crate::{
    domain::{
        authority::Standing,
        market::{Market, MarketStatus},
        trading::{LedgerEntry, MarketPosition, Placed, Stake, UserPosition},
        user::{Actor, Permission},
        Page, Paging,
    },
    error::AppError,
    repo::{MarketRepository, RepoError, TradingRepository},
};

/// Staking, settlement and positions.
pub struct TradingService {
    trading: Arc<dyn TradingRepository>,
    markets: Arc<dyn MarketRepository>,
    listener: Option<MarketListener>,
}

/// A lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Stop taking stakes.
    Close,
    /// Pay the pool to this outcome's stakers.
    Resolve(u32),
    /// Refund every stake.
    Cancel,
}

fn market_not_found(e: RepoError) -> AppError {
    match e {
        RepoError::NotFound => AppError::NotFound("market"),
        other => other.into(),
    }
}

impl TradingService {
    /// The service over its repositories.
    pub fn new(trading: Arc<dyn TradingRepository>, markets: Arc<dyn MarketRepository>) -> Self {
        Self {
            trading,
            markets,
            listener: None,
        }
    }

    /// The service, telling `listener` of every status it changes.
    pub fn telling(mut self, listener: MarketListener) -> Self {
        self.listener = Some(listener);
        self
    }

    fn told(&self, id: i64, status: MarketStatus) {
        if let Some(listener) = &self.listener {
            listener(MarketChanged::Status(id, status));
        }
    }

    /// Stakes credits on an outcome of an open market.
    pub async fn stake(
        &self,
        actor: &Actor,
        market_id: i64,
        stake: Stake,
        idempotency_key: Option<String>,
    ) -> Result<Placed, AppError> {
        require(actor, Permission::Write)?;
        self.trading
            .stake(actor.user_id, market_id, stake, idempotency_key)
            .await
            .map_err(|e| match e {
                RepoError::MissingReference => {
                    AppError::Unauthorized("the account no longer exists".into())
                }
                other => market_not_found(other),
            })
    }

    /// Moves a market along its lifecycle (creator, moderator or admin; resolving a market
    /// others have staked on: moderator or admin).
    pub async fn transition(
        &self,
        actor: &Actor,
        market_id: i64,
        step: Transition,
    ) -> Result<Market, AppError> {
        let market = self
            .markets
            .get(market_id)
            .await?
            .ok_or(AppError::NotFound("market"))?;
        let standing = Standing::of(actor, market.creator.id).ok_or_else(|| {
            AppError::forbidden(
                "only the market's creator, a moderator or an admin may close, resolve or cancel it",
            )
        })?;
        let result = match step {
            Transition::Close => self.trading.close(market_id).await,
            Transition::Resolve(outcome) => {
                self.trading.resolve(market_id, outcome, standing).await
            }
            Transition::Cancel => self.trading.cancel(market_id).await,
        };
        let market = result.map_err(market_not_found)?;
        self.told(market.id, market.status);
        Ok(market)
    }

    /// Closes every market whose close time has passed (the periodic sweep).
    pub async fn close_due(&self) -> Result<usize, AppError> {
        let closed = self.trading.close_due().await?;
        for id in &closed {
            self.told(*id, MarketStatus::Closed);
        }
        Ok(closed.len())
    }

    /// The positions on a market.
    pub async fn market_positions(
        &self,
        market_id: i64,
        paging: Paging,
    ) -> Result<Page<MarketPosition>, AppError> {
        self.markets
            .get(market_id)
            .await?
            .ok_or(AppError::NotFound("market"))?;
        Ok(self.trading.market_positions(market_id, paging).await?)
    }

    /// The caller's positions.
    pub async fn my_positions(
        &self,
        actor: &Actor,
        paging: Paging,
    ) -> Result<Page<UserPosition>, AppError> {
        require(actor, Permission::Read)?;
        Ok(self.trading.user_positions(actor.user_id, paging).await?)
    }

    /// The caller's ledger.
    pub async fn my_ledger(
        &self,
        actor: &Actor,
        paging: Paging,
    ) -> Result<Page<LedgerEntry>, AppError> {
        require(actor, Permission::Read)?;
        Ok(self.trading.ledger(actor.user_id, paging).await?)
    }
}
