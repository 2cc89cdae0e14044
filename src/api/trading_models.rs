//! Schemas of stakes, positions and the ledger.

use poem_openapi::{types::Example, Enum, Object};
use time::{macros::datetime, OffsetDateTime};

use super::{
    envelope::{envelope, ListMeta},
    market_models::{MarketStatusView, UserSummaryView},
};
use crate::domain::trading::{Bet, LedgerEntry, MarketPosition, UserPosition};

/// A stake: credits on one outcome.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct StakeBody {
    /// Index of the outcome (0-based, as in the market's `outcomes`).
    #[oai(validator(maximum(value = "9")))]
    pub outcome: u32,
    /// Credits to stake, 1 to 1,000,000,000; must not exceed the caller's balance.
    #[oai(validator(minimum(value = "1"), maximum(value = "1000000000")))]
    pub amount: i64,
}

impl Example for StakeBody {
    fn example() -> Self {
        StakeBody {
            outcome: 0,
            amount: 50,
        }
    }
}

/// A market's final outcome.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct ResolveBody {
    /// Index of the winning outcome.
    #[oai(validator(maximum(value = "9")))]
    pub outcome: u32,
}

impl Example for ResolveBody {
    fn example() -> Self {
        ResolveBody { outcome: 0 }
    }
}

/// A recorded stake.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct BetView {
    /// Bet id.
    pub id: i64,
    /// Market staked on.
    pub market_id: i64,
    /// Outcome index.
    pub outcome: u32,
    /// Credits staked.
    pub amount: i64,
    /// The caller's balance right after this stake.
    pub balance_after: i64,
    /// When it was placed.
    pub created_at: OffsetDateTime,
}

impl From<Bet> for BetView {
    fn from(b: Bet) -> Self {
        BetView {
            id: b.id,
            market_id: b.market_id,
            outcome: b.outcome,
            amount: b.amount,
            balance_after: b.balance_after,
            created_at: b.created_at,
        }
    }
}

impl Example for BetView {
    fn example() -> Self {
        BetView {
            id: 901,
            market_id: 42,
            outcome: 0,
            amount: 50,
            balance_after: 950,
            created_at: datetime!(2026-11-02 09:30 UTC),
        }
    }
}

/// A staker's position on one outcome of a market.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PositionView {
    /// The staker.
    pub user: UserSummaryView,
    /// Outcome index.
    pub outcome: u32,
    /// Credits staked in all.
    pub amount: i64,
    /// Credits paid back when the market settled (`null` while it has not).
    #[oai(nullable)]
    pub payout: Option<i64>,
    /// Last stake or settlement.
    pub updated_at: OffsetDateTime,
}

impl From<MarketPosition> for PositionView {
    fn from(p: MarketPosition) -> Self {
        PositionView {
            user: UserSummaryView {
                id: p.user.id,
                username: p.user.username,
            },
            outcome: p.outcome,
            amount: p.amount,
            payout: p.payout,
            updated_at: p.updated_at,
        }
    }
}

impl Example for PositionView {
    fn example() -> Self {
        PositionView {
            user: UserSummaryView {
                id: 7,
                username: "alice".into(),
            },
            outcome: 0,
            amount: 50,
            payout: None,
            updated_at: datetime!(2026-11-02 09:30 UTC),
        }
    }
}

/// One of the caller's positions, with its market.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct MyPositionView {
    /// Market id.
    pub market_id: i64,
    /// Market name.
    pub market_name: String,
    /// Market status.
    pub market_status: MarketStatusView,
    /// Outcome index.
    pub outcome: u32,
    /// Outcome label.
    pub outcome_label: String,
    /// Credits staked in all.
    pub amount: i64,
    /// Credits paid back when the market settled (`null` while it has not).
    #[oai(nullable)]
    pub payout: Option<i64>,
    /// Last stake or settlement.
    pub updated_at: OffsetDateTime,
}

impl From<UserPosition> for MyPositionView {
    fn from(p: UserPosition) -> Self {
        MyPositionView {
            market_id: p.market_id,
            market_name: p.market_name,
            market_status: p.market_status.into(),
            outcome: p.outcome,
            outcome_label: p.outcome_label,
            amount: p.amount,
            payout: p.payout,
            updated_at: p.updated_at,
        }
    }
}

impl Example for MyPositionView {
    fn example() -> Self {
        MyPositionView {
            market_id: 42,
            market_name: "Will the Riverside bridge reopen before 2027-06-01?".into(),
            market_status: MarketStatusView::Active,
            outcome: 0,
            outcome_label: "YES".into(),
            amount: 50,
            payout: None,
            updated_at: datetime!(2026-11-02 09:30 UTC),
        }
    }
}

/// Why a balance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum LedgerKind {
    /// Credits granted (sign-up).
    #[oai(rename = "GRANT")]
    Grant,
    /// A stake (negative).
    #[oai(rename = "STAKE")]
    Stake,
    /// Winnings of a resolved market.
    #[oai(rename = "PAYOUT")]
    Payout,
    /// A stake returned (cancellation, or nobody backed the winner).
    #[oai(rename = "REFUND")]
    Refund,
}

/// One balance change; a user's balance is the sum of its entries.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct LedgerEntryView {
    /// Entry id (increasing).
    pub id: i64,
    /// Why.
    pub kind: LedgerKind,
    /// Signed credits (stakes are negative).
    pub amount: i64,
    /// The market involved, if any.
    #[oai(nullable)]
    pub market_id: Option<i64>,
    /// When.
    pub created_at: OffsetDateTime,
}

impl From<LedgerEntry> for LedgerEntryView {
    fn from(e: LedgerEntry) -> Self {
        let kind = match e.kind.as_str() {
            "STAKE" => LedgerKind::Stake,
            "PAYOUT" => LedgerKind::Payout,
            "REFUND" => LedgerKind::Refund,
            _ => LedgerKind::Grant,
        };
        LedgerEntryView {
            id: e.id,
            kind,
            amount: e.amount,
            market_id: e.market_id,
            created_at: e.created_at,
        }
    }
}

impl Example for LedgerEntryView {
    fn example() -> Self {
        LedgerEntryView {
            id: 3,
            kind: LedgerKind::Stake,
            amount: -50,
            market_id: Some(42),
            created_at: datetime!(2026-11-02 09:30 UTC),
        }
    }
}

envelope!(
    /// A recorded stake.
    BetEnvelope { data: BetView }
);
envelope!(
    /// A page of a market's positions.
    PositionListEnvelope { data: Vec<PositionView>, meta: ListMeta }
);
envelope!(
    /// A page of the caller's positions.
    MyPositionListEnvelope { data: Vec<MyPositionView>, meta: ListMeta }
);
envelope!(
    /// A page of the caller's ledger.
    LedgerEnvelope { data: Vec<LedgerEntryView>, meta: ListMeta }
);
