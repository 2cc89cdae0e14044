//! Staking, market lifecycle (close, resolve, cancel), positions and the ledger.

use std::sync::Arc;

use poem_openapi::{
    param::{Header, Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};

use super::{
    body::JsonBody,
    error::ApiError,
    market_models::MarketEnvelope,
    security::BearerAuth,
    trading_models::{
        BetEnvelope, LedgerEnvelope, MyPositionListEnvelope, PositionListEnvelope, ResolveBody,
        StakeBody,
    },
    ApiTags,
};
use crate::{
    domain::{
        paging::lists,
        trading::{parse_idempotency_key, Stake},
        Paging,
    },
    service::trading::{TradingService, Transition},
};

/// Trading API.
pub struct TradingApi {
    /// Staking and settlement.
    pub trading: Arc<TradingService>,
}

/// A placed stake.
#[derive(ApiResponse)]
pub enum StakeCreated {
    /// The bet. A retry with the same `Idempotency-Key` and body returns the original bet
    /// (and moves no money).
    #[oai(status = 201)]
    Created(
        Json<BetEnvelope>,
        /// `true` when this response repeats an earlier request with the same key.
        #[oai(header = "Idempotent-Replayed")]
        bool,
    ),
}

#[OpenApi]
impl TradingApi {
    /// Stake on an outcome
    ///
    /// Debits the caller's balance and adds the stake to the outcome's pool, in one
    /// transaction. 409 when the balance does not cover it or the market is not open. Send an
    /// `Idempotency-Key` to make retries safe: the same key with the same body returns the
    /// original bet; with another body, 422.
    #[oai(
        path = "/api/markets/:id/positions",
        method = "post",
        operation_id = "create_position",
        tag = "ApiTags::Positions"
    )]
    async fn create_position(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// A client-chosen key (1 to 255 visible ASCII characters) identifying this stake
        /// across retries.
        #[oai(name = "Idempotency-Key", validator(min_length = 1, max_length = 255))]
        #[allow(unused_variables)]
        idempotency_key: Header<Option<String>>,
        body: JsonBody<StakeBody>,
        req: &poem::Request,
    ) -> Result<StakeCreated, ApiError> {
        // Read from the raw headers: the typed parameter above documents the header, but it
        // reads only the first value and takes a non-ASCII one for no header at all.
        let key = parse_idempotency_key(
            req.headers()
                .get_all("idempotency-key")
                .iter()
                .map(|v| v.as_bytes()),
        )?;
        let stake = Stake::parse(body.0.outcome, body.0.amount)?;
        let placed = self.trading.stake(&auth.0, id.0, stake, key).await?;
        Ok(StakeCreated::Created(
            Json(BetEnvelope::new(placed.bet.into())),
            placed.replayed,
        ))
    }

    /// List a market's positions
    ///
    /// Every staker's position per outcome, largest first, with the staker (loaded in the same
    /// query).
    #[oai(
        path = "/api/markets/:id/positions",
        method = "get",
        operation_id = "list_market_positions",
        tag = "ApiTags::Positions"
    )]
    async fn list_market_positions(
        &self,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<PositionListEnvelope>, ApiError> {
        let list = lists::market_positions(id.0);
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self.trading.market_positions(id.0, paging.clone()).await?;
        Ok(Json(PositionListEnvelope::from_page(page, &paging)))
    }

    /// List the caller's positions
    ///
    /// The caller's positions, most recently changed first, each with its market (loaded in
    /// the same query).
    #[oai(
        path = "/api/me/positions",
        method = "get",
        operation_id = "list_my_positions",
        tag = "ApiTags::Positions"
    )]
    async fn list_my_positions(
        &self,
        auth: BearerAuth,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<MyPositionListEnvelope>, ApiError> {
        let list = lists::user_positions(auth.0.user_id);
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self.trading.my_positions(&auth.0, paging.clone()).await?;
        Ok(Json(MyPositionListEnvelope::from_page(page, &paging)))
    }

    /// List the caller's ledger
    ///
    /// Every change to the caller's balance, newest first: the balance is the sum of all
    /// entries.
    #[oai(
        path = "/api/me/ledger",
        method = "get",
        operation_id = "list_my_ledger",
        tag = "ApiTags::Users"
    )]
    async fn list_my_ledger(
        &self,
        auth: BearerAuth,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<LedgerEnvelope>, ApiError> {
        let list = lists::ledger(auth.0.user_id);
        let paging = Paging::parse(limit.0, offset.0, cursor.0.as_deref(), &list)
            .map_err(ApiError::invalid_parameters)?;
        let page = self.trading.my_ledger(&auth.0, paging.clone()).await?;
        Ok(Json(LedgerEnvelope::from_page(page, &paging)))
    }

    /// Close a market
    ///
    /// Stops staking on an active market (creator, moderator or admin). Markets also close
    /// by themselves at their close time.
    #[oai(
        path = "/api/markets/:id/close",
        method = "post",
        operation_id = "close_market",
        tag = "ApiTags::Markets"
    )]
    async fn close_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
    ) -> Result<Json<MarketEnvelope>, ApiError> {
        let market = self
            .trading
            .transition(&auth.0, id.0, Transition::Close)
            .await?;
        Ok(Json(MarketEnvelope::new(market.into())))
    }

    /// Resolve a market
    ///
    /// Declares the winning outcome of an active or closed market and, in the same
    /// transaction, pays its stakers the whole pool pro rata (integer credits; leftover credits
    /// go one each to the largest fractional shares). With no stake on the winner, everyone is
    /// refunded. Creator, moderator or admin, except that once another user has staked, only a
    /// moderator or an admin may resolve it (403 for the creator, who may still close or cancel
    /// it); a settled market gets 409.
    #[oai(
        path = "/api/markets/:id/resolve",
        method = "post",
        operation_id = "resolve_market",
        tag = "ApiTags::Markets"
    )]
    async fn resolve_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        body: JsonBody<ResolveBody>,
    ) -> Result<Json<MarketEnvelope>, ApiError> {
        let market = self
            .trading
            .transition(&auth.0, id.0, Transition::Resolve(body.0.outcome))
            .await?;
        Ok(Json(MarketEnvelope::new(market.into())))
    }

    /// Cancel a market
    ///
    /// Calls off an active or closed market and refunds every stake in the same transaction.
    /// Creator (even after others have staked: nobody loses), moderator or admin; a settled
    /// market gets 409.
    #[oai(
        path = "/api/markets/:id/cancel",
        method = "post",
        operation_id = "cancel_market",
        tag = "ApiTags::Markets"
    )]
    async fn cancel_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
    ) -> Result<Json<MarketEnvelope>, ApiError> {
        let market = self
            .trading
            .transition(&auth.0, id.0, Transition::Cancel)
            .await?;
        Ok(Json(MarketEnvelope::new(market.into())))
    }
}
