//! The markets resource: list, read, create, replace, patch, delete. Handlers parse into
//! domain types, call one service method and map the result; ETags are the market version.

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
    market_models::{
        CreateMarketBody, MarketEnvelope, MarketListEnvelope, MarketSort, MarketStatusView,
        PatchMarketBody, ReplaceMarketBody, SortOrder,
    },
    rendered::{MemoSizes, RenderMemo, Rendered},
    security::BearerAuth,
    ApiTags,
};
use crate::{
    domain::{
        market::{ListQuery, Market, MarketChanges, MarketPage, NewMarket},
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
    /// Markets as sent, kept while the read cache hands out the same market.
    items: Option<RenderMemo<i64, Market, MarketEnvelope>>,
}

impl MarketsApi {
    /// The markets API over `markets`, keeping as many rendered markets and list pages as the
    /// read cache keeps (none when it is off: every value is new then, nothing would be reused).
    pub fn new(markets: Arc<MarketService>, memo: Option<MemoSizes>) -> Self {
        MarketsApi {
            markets,
            pages: memo.map(|m| RenderMemo::new(m.pages)),
            items: memo.map(|m| RenderMemo::new(m.markets)),
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
        /// The market's version in quotes; send it back in `If-Match` / `If-None-Match`.
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
        /// The market's new version in quotes.
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
        /// The market's version in quotes.
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

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The version an `If-Match` header demands: `None` for absent or `*`; an unparseable tag can
/// match no version, so it becomes `-1` (and a 412).
fn if_match_version(header: Option<&str>) -> Option<i64> {
    let value = header?.trim();
    if value == "*" {
        return None;
    }
    Some(parse_tag(value).unwrap_or(-1))
}

fn parse_tag(tag: &str) -> Option<i64> {
    let tag = tag.trim();
    tag.strip_prefix("W/")
        .unwrap_or(tag)
        .strip_prefix('"')?
        .strip_suffix('"')?
        .parse()
        .ok()
}

/// True when an `If-None-Match` header lists `version` (weak comparison) or is `*`.
fn none_match_hits(header: &str, version: i64) -> bool {
    header
        .split(',')
        .any(|t| t.trim() == "*" || parse_tag(t) == Some(version))
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
    /// Returns the market with an `ETag`; with a matching `If-None-Match`, answers 304.
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
        match if_none_match.0.as_deref() {
            Some(h) if none_match_hits(h, market.version) => {
                Ok(MarketResponse::NotModified(etag(market.version)))
            }
            _ => {
                let tag = etag(market.version);
                let body = RenderMemo::render(self.items.as_ref(), id.0, market, |m| {
                    MarketEnvelope::new(m.clone().into())
                })
                .await;
                Ok(MarketResponse::Ok(body, tag, CACHE_CONTROL.into()))
            }
        }
    }

    /// Create a market
    ///
    /// Creates a market in the caller's name. Outcomes default to YES/NO.
    #[oai(path = "/", method = "post", operation_id = "create_market")]
    async fn create_market(
        &self,
        auth: BearerAuth,
        body: JsonBody<CreateMarketBody>,
    ) -> Result<CreatedMarket, ApiError> {
        let market =
            NewMarket::parse(body.0.into_input(auth.0.user_id), OffsetDateTime::now_utc())?;
        let market = self.markets.create(&auth.0, market).await?;
        let (location, tag) = (format!("/api/markets/{}", market.id), etag(market.version));
        Ok(CreatedMarket::Created(
            Json(MarketEnvelope::new(market.into())),
            location,
            tag,
        ))
    }

    /// Replace a market's editable fields
    ///
    /// Sets name, description and close time; omitted nullable fields are cleared. Only active
    /// markets can be edited, by their creator, a moderator or an admin. With `If-Match`, a stale version gets 412.
    #[oai(path = "/:id", method = "put", operation_id = "replace_market")]
    async fn replace_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag the change is based on.
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
    /// can be edited, by their creator, a moderator or an admin. With `If-Match`, a stale version gets 412.
    #[oai(path = "/:id", method = "patch", operation_id = "update_market")]
    async fn update_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag the change is based on.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: JsonBody<PatchMarketBody>,
    ) -> Result<UpdatedMarket, ApiError> {
        self.change(&auth.0, id.0, if_match.0.as_deref(), body.0.into())
            .await
    }

    /// Delete a market
    ///
    /// Only a market without stakes can be deleted, by its creator, a moderator or an admin. With `If-Match`, a stale version gets 412.
    #[oai(path = "/:id", method = "delete", operation_id = "delete_market")]
    async fn delete_market(
        &self,
        auth: BearerAuth,
        /// Market id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// The ETag the deletion is based on.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<DeletedMarket, ApiError> {
        self.markets
            .delete(&auth.0, id.0, if_match_version(if_match.0.as_deref()))
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
            .update(actor, id, changes, if_match_version(if_match))
            .await?;
        let tag = etag(market.version);
        Ok(UpdatedMarket::Ok(
            Json(MarketEnvelope::new(market.into())),
            tag,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip_and_compare_weakly() {
        assert_eq!(parse_tag(&etag(7)), Some(7));
        assert_eq!(parse_tag("W/\"7\""), Some(7));
        assert!(none_match_hits("\"3\", W/\"7\"", 7));
        assert!(none_match_hits("*", 1));
        assert!(!none_match_hits("\"8\"", 7));
        assert_eq!(if_match_version(Some("*")), None);
        assert_eq!(if_match_version(Some("garbage")), Some(-1));
        assert_eq!(if_match_version(None), None);
    }
}
