//! The markets resource: list, read, create, replace, patch, delete. Handlers parse into
//! domain types, call one service method and map the result. ETags are `"<id>-<version>"`
//! ([`Market::entity_tag`]); `If-Match` and `If-None-Match` are read by [`etag`].

use std::sync::Arc;

use poem_openapi::{
    param::{Header, Path, Query},
    payload::Json,
    ApiResponse, OpenApi,
};
use time::OffsetDateTime;

use super::{
    body::JsonBody,
    error::ApiError,
    etag, market_json,
    market_models::{
        CreateMarketBody, MarketEnvelope, MarketListEnvelope, MarketSort, MarketStatusView,
        PatchMarketBody, ReplaceMarketBody, SortOrder,
    },
    rendered::{RenderMemo, Rendered},
    security::BearerAuth,
    ApiTags,
};
use crate::{
    domain::{
        market::{ListQuery, MarketChanges, MarketPage, NewMarket},
        user::Actor,
    },
    service::markets::MarketService,
};

/// Markets API.
pub struct MarketsApi {
    /// The market use cases.
    markets: Arc<MarketService>,
    /// List pages as sent, kept while the read cache hands out the same page.
    pages: Option<RenderMemo<ListQuery, MarketPage, MarketListEnvelope>>,
}

impl MarketsApi {
    /// The markets API over `markets`, keeping `memo_pages` rendered list pages (as many as the
    /// read cache keeps; none when it is off: every value is new then, nothing would be reused).
    pub fn new(markets: Arc<MarketService>, memo_pages: Option<u64>) -> Self {
        MarketsApi {
            markets,
            pages: memo_pages.map(RenderMemo::new),
        }
    }
}

const CACHE_CONTROL: &str = "no-cache";

/// A market, with its ETag.
#[derive(ApiResponse)]
// Built and turned into a response at once; boxing the body would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum MarketResponse {
    /// The market.
    #[oai(status = 200)]
    Ok(
        Rendered<MarketEnvelope>,
        /// The market's strong entity tag, `"<id>-<version>"`; send it back in `If-Match` /
        /// `If-None-Match`.
        #[oai(header = "ETag")]
        String,
        /// Clients may store the market but must revalidate it (`If-None-Match`) before use.
        #[oai(header = "Cache-Control")]
        String,
    ),
    /// `If-None-Match` matched: the client's copy is current.
    #[oai(status = 304)]
    NotModified(
        /// The current ETag.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A changed market, with its new ETag.
#[derive(ApiResponse)]
pub enum UpdatedMarket {
    /// The market as stored now.
    #[oai(status = 200)]
    Ok(
        Json<MarketEnvelope>,
        /// The market's new entity tag, `"<id>-<version>"`.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A created market.
#[derive(ApiResponse)]
pub enum CreatedMarket {
    /// The market as stored.
    #[oai(status = 201)]
    Created(
        Json<MarketEnvelope>,
        /// Path of the new market.
        #[oai(header = "Location")]
        String,
        /// The market's entity tag, `"<id>-<version>"`.
        #[oai(header = "ETag")]
        String,
    ),
}

/// A deleted market.
#[derive(ApiResponse)]
pub enum DeletedMarket {
    /// The market is gone.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/markets", tag = "ApiTags::Markets")]
impl MarketsApi {
    /// List markets
    ///
    /// Filters by status and creator, sorts, and pages with `limit` and either `offset` or
    /// `cursor`. Outcomes and creators are included. Ties in the sort column are broken by id
    /// (in the same direction). To walk a list, pass each page's `meta.next_cursor` as `cursor`
    /// with the same filters, sort and order: unlike an offset, a cursor page neither repeats
    /// nor skips markets when others are created or deleted in between.
    #[oai(path = "/", method = "get", operation_id = "list_markets")]
    #[allow(clippy::too_many_arguments)]
    async fn list_markets(
        &self,
        /// Only markets in this status.
        status: Query<Option<MarketStatusView>>,
        /// Only markets created by this user.
        #[oai(validator(minimum(value = "1")))]
        creator_id: Query<Option<i64>>,
        /// Sort column (default `created_at`).
        sort: Query<Option<MarketSort>>,
        /// Sort direction (default: descending for `volume` and `created_at`, else ascending).
        order: Query<Option<SortOrder>>,
        /// Page size, 1 to 100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// Rows to skip, up to 1,000,000 (default 0). Not with `cursor`.
        #[oai(validator(maximum(value = "1000000")))]
        offset: Query<Option<u64>>,
        /// Start after the last row of an earlier page: its `meta.next_cursor`, unchanged.
        /// Only with the filters, sort and order of that request; not with `offset`.
        #[oai(validator(max_length = 1024))]
        cursor: Query<Option<String>>,
    ) -> Result<Rendered<MarketListEnvelope>, ApiError> {
        let query = ListQuery::parse(
            status.0.map(Into::into),
            creator_id.0,
            sort.0.map(Into::into),
            order.0.map(|o| o == SortOrder::Desc),
            limit.0,
            offset.0,
            cursor.0.as_deref(),
        )
        .map_err(ApiError::invalid_parameters)?;
        let page = self.markets.list(query.clone()).await?;
        let paging = query.paging.clone();
        Ok(
            RenderMemo::render(self.pages.as_ref(), query, page, |page| {
                MarketListEnvelope::from_page(page.clone(), &paging)
            })
            .await,
        )
    }

    /// Get a market
    ///
    /// Returns the market with an `ETag`; with a matching `If-None-Match` (weak comparison, or
    /// `*`), answers 304.
    #[oai(path = "/:id", method = "get", operation_id = "get_market")]
    async fn get_market(
        &self,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// ETags the client already has.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<MarketResponse, ApiError> {
        let market = self.markets.get(id.0).await?;
        let tag = market.entity_tag();
        match if_none_match.0.as_deref() {
            Some(h) if etag::none_match_hits(h, &tag) => Ok(MarketResponse::NotModified(tag)),
            _ => {
                // Rendered on every read, not memoized: straight from the market it costs less
                // than a second cache lookup, and a miss (most reads over many markets) would
                // pay a memo insert on top.
                let body = Rendered::bytes(market_json::market_envelope(&market));
                Ok(MarketResponse::Ok(body, tag, CACHE_CONTROL.into()))
            }
        }
    }

    /// Create a market
    ///
    /// Creates a market in the caller's name. Outcomes default to YES/NO. Names and labels must
    /// show visible characters (spaces and invisible characters such as U+200B do not count)
    /// and may not contain bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F,
    /// U+061C); labels must differ ignoring case, spacing and invisible characters (422).
    #[oai(path = "/", method = "post", operation_id = "create_market")]
    async fn create_market(
        &self,
        auth: BearerAuth,
        body: JsonBody<CreateMarketBody>,
    ) -> Result<CreatedMarket, ApiError> {
        let market =
            NewMarket::parse(body.0.into_input(auth.0.user_id), OffsetDateTime::now_utc())?;
        let market = self.markets.create(&auth.0, market).await?;
        let (location, tag) = (format!("/api/markets/{}", market.id), market.entity_tag());
        Ok(CreatedMarket::Created(
            Json(MarketEnvelope::new(market.into())),
            location,
            tag,
        ))
    }

    /// Replace a market's editable fields
    ///
    /// Sets name, description and close time; omitted nullable fields are cleared. Only active
    /// markets can be edited, by their creator, a moderator or an admin. Once another user has
    /// staked, the creator can no longer change any of them (409 `market_frozen`); moderators
    /// and admins can. With `If-Match` (strong comparison, or `*`), a stale or weak tag gets 412.
    #[oai(path = "/:id", method = "put", operation_id = "replace_market")]
    async fn replace_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag(s) the change is based on (strong), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: JsonBody<ReplaceMarketBody>,
    ) -> Result<UpdatedMarket, ApiError> {
        self.change(&auth.0, id.0, if_match.0.as_deref(), body.0.into())
            .await
    }

    /// Update some of a market's fields
    ///
    /// Changes only the fields present; `null` clears a nullable field. Only active markets
    /// can be edited, by their creator, a moderator or an admin. Once another user has staked,
    /// the creator can no longer change name, description or close time (409 `market_frozen`;
    /// sending a field's current value is no change); moderators and admins can. With
    /// `If-Match` (strong comparison, or `*`), a stale or weak tag gets 412.
    #[oai(path = "/:id", method = "patch", operation_id = "update_market")]
    async fn update_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag(s) the change is based on (strong), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: JsonBody<PatchMarketBody>,
    ) -> Result<UpdatedMarket, ApiError> {
        self.change(&auth.0, id.0, if_match.0.as_deref(), body.0.into())
            .await
    }

    /// Delete a market
    ///
    /// Only a market without stakes can be deleted, by its creator, a moderator or an admin.
    /// With `If-Match` (strong comparison, or `*`), a stale or weak tag gets 412. Ids of
    /// deleted markets are never given to new ones.
    #[oai(path = "/:id", method = "delete", operation_id = "delete_market")]
    async fn delete_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag(s) the deletion is based on (strong), or `*`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<DeletedMarket, ApiError> {
        self.markets
            .delete(&auth.0, id.0, etag::if_match(if_match.0.as_deref()))
            .await?;
        Ok(DeletedMarket::NoContent)
    }
}

impl MarketsApi {
    async fn change(
        &self,
        actor: &Actor,
        id: i64,
        if_match: Option<&str>,
        changes: MarketChanges,
    ) -> Result<UpdatedMarket, ApiError> {
        let changes = MarketChanges::parse(changes, OffsetDateTime::now_utc())?;
        let market = self
            .markets
            .update(actor, id, changes, etag::if_match(if_match))
            .await?;
        let tag = market.entity_tag();
        Ok(UpdatedMarket::Ok(
            Json(MarketEnvelope::new(market.into())),
            tag,
        ))
    }
}
