//! Schemas of the markets resource: the market view and the create / replace / patch bodies,
//! with their limits declared as schema constraints.

use poem_openapi::{
    types::{Example, MaybeUndefined},
    Enum, Object,
};
use time::{macros::datetime, OffsetDateTime};

use super::{
    envelope::{envelope, ListMeta},
    text::{Omittable, Text},
    trading_models::StakeBody,
};
use crate::domain::market::{Market, MarketChanges, MarketStatus, NewMarketInput, SortKey};

/// Where a market is in its life: `active -> closed -> resolved`, or `active|closed -> cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum MarketStatusView {
    /// Open for stakes.
    Active,
    /// No more stakes; awaiting resolution.
    Closed,
    /// Settled; payouts made.
    Resolved,
    /// Called off; stakes refunded.
    Cancelled,
}

impl From<MarketStatus> for MarketStatusView {
    fn from(s: MarketStatus) -> Self {
        match s {
            MarketStatus::Active => Self::Active,
            MarketStatus::Closed => Self::Closed,
            MarketStatus::Resolved => Self::Resolved,
            MarketStatus::Cancelled => Self::Cancelled,
        }
    }
}

impl From<MarketStatusView> for MarketStatus {
    fn from(s: MarketStatusView) -> Self {
        match s {
            MarketStatusView::Active => Self::Active,
            MarketStatusView::Closed => Self::Closed,
            MarketStatusView::Resolved => Self::Resolved,
            MarketStatusView::Cancelled => Self::Cancelled,
        }
    }
}

/// Sort column of a market list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum MarketSort {
    /// Total staked (default order: descending).
    Volume,
    /// Creation time (default order: descending; the default sort).
    CreatedAt,
    /// Close time, markets without one last (default order: ascending).
    CloseTime,
    /// Name, case-insensitive (default order: ascending).
    Name,
}

impl From<MarketSort> for SortKey {
    fn from(s: MarketSort) -> Self {
        match s {
            MarketSort::Volume => SortKey::Volume,
            MarketSort::CreatedAt => SortKey::CreatedAt,
            MarketSort::CloseTime => SortKey::CloseTime,
            MarketSort::Name => SortKey::Name,
        }
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// A user as shown inside other resources.
#[derive(Debug, Clone, Object)]
pub struct UserSummaryView {
    /// User id.
    pub id: i64,
    /// Username.
    pub username: String,
}

/// One outcome of a market.
#[derive(Debug, Clone, Object)]
pub struct OutcomeView {
    /// Position of the outcome in the market (0-based).
    pub index: u32,
    /// The outcome's label.
    pub label: String,
    /// Credits staked on this outcome.
    pub pool: i64,
    /// Parimutuel probability: this pool over the total pool (uniform while nothing is staked).
    pub probability: f64,
}

/// A prediction market.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct MarketView {
    /// Market id.
    pub id: i64,
    /// The question.
    pub name: String,
    /// Resolution criteria and sources.
    #[oai(nullable)]
    pub description: Option<String>,
    /// Who created the market.
    pub creator: UserSummaryView,
    /// Lifecycle status.
    pub status: MarketStatusView,
    /// Outcomes in order, with pools and probabilities.
    pub outcomes: Vec<OutcomeView>,
    /// When staking stops (RFC 3339, UTC), if set.
    #[oai(nullable)]
    pub close_time: Option<OffsetDateTime>,
    /// Label of the winning outcome once resolved.
    #[oai(nullable)]
    pub resolution: Option<String>,
    /// Total credits staked.
    pub volume: i64,
    /// Bumped on every change; the `ETag` is `"<id>-<version>"`.
    pub version: i64,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Time of the last change.
    pub updated_at: OffsetDateTime,
}

impl From<Market> for MarketView {
    fn from(m: Market) -> Self {
        let probabilities = m.probabilities();
        let resolution = m
            .resolution
            .and_then(|i| m.outcomes.get(i))
            .map(|o| o.label.clone());
        MarketView {
            id: m.id,
            name: m.name,
            description: m.description,
            creator: UserSummaryView {
                id: m.creator.id,
                username: m.creator.username,
            },
            status: m.status.into(),
            outcomes: m
                .outcomes
                .into_iter()
                .zip(probabilities)
                .enumerate()
                .map(|(i, (o, probability))| OutcomeView {
                    index: i as u32,
                    label: o.label,
                    pool: o.pool,
                    probability,
                })
                .collect(),
            close_time: m.close_time,
            resolution,
            volume: m.volume,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl Example for MarketView {
    fn example() -> Self {
        let t = datetime!(2026-11-01 12:00 UTC);
        MarketView {
            id: 42,
            name: "Will the Riverside bridge reopen before 2027-06-01?".into(),
            description: Some(
                "Resolves YES if the city reports the bridge open to traffic before June 1, 2027."
                    .into(),
            ),
            creator: UserSummaryView {
                id: 7,
                username: "alice".into(),
            },
            status: MarketStatusView::Active,
            outcomes: vec![
                OutcomeView {
                    index: 0,
                    label: "YES".into(),
                    pool: 300,
                    probability: 0.75,
                },
                OutcomeView {
                    index: 1,
                    label: "NO".into(),
                    pool: 100,
                    probability: 0.25,
                },
            ],
            close_time: Some(datetime!(2027-05-31 23:59 UTC)),
            resolution: None,
            volume: 400,
            version: 3,
            created_at: t,
            updated_at: t,
        }
    }
}

envelope!(
    /// One market.
    MarketEnvelope { data: MarketView }
);
envelope!(
    /// A page of markets.
    MarketListEnvelope { data: Vec<MarketView>, meta: ListMeta }
);

/// A new market, created in the caller's name.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct CreateMarketBody {
    /// The question, 3 to 200 characters after trimming.
    #[oai(validator(min_length = 3, max_length = 200))]
    pub name: Text,
    /// Resolution criteria and sources, up to 5000 characters.
    #[oai(validator(max_length = 5000), nullable)]
    pub description: Option<Text>,
    /// 2 to 10 distinct labels (compared ignoring case, spacing and invisible characters), each
    /// 1 to 50 characters; default `["YES", "NO"]`.
    #[oai(validator(min_items = 2, max_items = 10, max_length = 50), nullable)]
    pub outcomes: Option<Vec<Text>>,
    /// When staking stops (RFC 3339); must be in the future.
    #[oai(nullable)]
    pub close_time: Option<OffsetDateTime>,
    /// The creator's first stake, placed in the same transaction (the market is not created
    /// if the stake is refused, e.g. for insufficient funds); left out: none.
    #[oai(skip_serializing_if_is_none)]
    pub initial_stake: Omittable<StakeBody>,
}

impl Example for CreateMarketBody {
    fn example() -> Self {
        CreateMarketBody {
            name: "Will the Riverside bridge reopen before 2027-06-01?".into(),
            description: Some(
                "Resolves YES if the city reports the bridge open to traffic before June 1, 2027."
                    .into(),
            ),
            outcomes: Some(vec!["YES".into(), "NO".into()]),
            close_time: Some(datetime!(2027-05-31 23:59 UTC)),
            initial_stake: Omittable(Some(StakeBody {
                outcome: 0,
                amount: 100,
            })),
        }
    }
}

impl CreateMarketBody {
    /// The domain input, created by `creator_id`.
    pub fn into_input(self, creator_id: i64) -> NewMarketInput {
        let b = self;
        NewMarketInput {
            name: b.name.into(),
            description: b.description.map(Into::into),
            creator_id,
            outcomes: b
                .outcomes
                .map(|labels| labels.into_iter().map(Into::into).collect()),
            close_time: b.close_time,
            initial_stake: b.initial_stake.0.map(|s| (s.outcome, s.amount)),
        }
    }
}

/// All editable fields of a market (PUT). Omitted nullable fields are cleared.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct ReplaceMarketBody {
    /// The question, 3 to 200 characters after trimming.
    #[oai(validator(min_length = 3, max_length = 200))]
    pub name: Text,
    /// Resolution criteria and sources, up to 5000 characters; omitted or null clears it.
    #[oai(validator(max_length = 5000), nullable)]
    pub description: Option<Text>,
    /// When staking stops (RFC 3339, future); omitted or null clears it.
    #[oai(nullable)]
    pub close_time: Option<OffsetDateTime>,
}

impl Example for ReplaceMarketBody {
    fn example() -> Self {
        let c = CreateMarketBody::example();
        ReplaceMarketBody {
            name: c.name,
            description: c.description,
            close_time: c.close_time,
        }
    }
}

impl From<ReplaceMarketBody> for MarketChanges {
    fn from(b: ReplaceMarketBody) -> Self {
        MarketChanges {
            name: Some(b.name.into()),
            description: Some(b.description.map(Into::into)),
            close_time: Some(b.close_time),
        }
    }
}

/// Some editable fields of a market (PATCH). Omitted fields stay; `null` clears a nullable one.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct PatchMarketBody {
    /// New question, 3 to 200 characters after trimming.
    #[oai(
        validator(min_length = 3, max_length = 200),
        skip_serializing_if_is_none
    )]
    pub name: Omittable<Text>,
    /// New description (up to 5000 characters), or `null` to clear it.
    #[oai(validator(max_length = 5000), nullable)]
    pub description: MaybeUndefined<Text>,
    /// New close time (RFC 3339, future), or `null` to clear it.
    #[oai(nullable)]
    pub close_time: MaybeUndefined<OffsetDateTime>,
}

impl Example for PatchMarketBody {
    fn example() -> Self {
        PatchMarketBody {
            name: Omittable(None),
            description: MaybeUndefined::Undefined,
            close_time: MaybeUndefined::Value(datetime!(2027-06-30 23:59 UTC)),
        }
    }
}

fn tri_state<T>(v: MaybeUndefined<T>) -> Option<Option<T>> {
    match v {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

impl From<PatchMarketBody> for MarketChanges {
    fn from(b: PatchMarketBody) -> Self {
        MarketChanges {
            name: b.name.0.map(Into::into),
            description: tri_state(b.description.map_value(Into::into)),
            close_time: tri_state(b.close_time),
        }
    }
}
