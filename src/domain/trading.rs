//! Staking and settlement: validated stakes, why a stake or settlement can be refused, and the
//! parimutuel payout rule.

use time::OffsetDateTime;

use super::{FieldError, Problems};

/// Smallest stake, in credits.
pub const STAKE_MIN: i64 = 1;
/// Largest single stake, in credits.
pub const STAKE_MAX: i64 = 1_000_000_000;
/// Longest `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;

/// A validated stake request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stake {
    /// Index of the outcome staked on.
    pub outcome: u32,
    /// Credits staked.
    pub amount: i64,
}

impl Stake {
    /// Validates the amount (the outcome is checked against the market in the transaction).
    pub fn parse(outcome: u32, amount: i64) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        if !(STAKE_MIN..=STAKE_MAX).contains(&amount) {
            p.add(
                "amount",
                format!("must be between {STAKE_MIN} and {STAKE_MAX} credits"),
            );
        }
        p.finish(Stake { outcome, amount })
    }

    /// A fingerprint of the request, to tell an idempotent retry from a different request
    /// that reuses its key.
    pub fn fingerprint(&self, market_id: i64) -> String {
        format!(
            "market={market_id};outcome={};amount={}",
            self.outcome, self.amount
        )
    }
}

/// Validates the `Idempotency-Key` header values of one request: exactly one value of 1 to
/// 255 visible ASCII characters. Raw bytes in, so a value that is not ASCII (which a text
/// header reader would drop as absent) is refused like any other bad key, never ignored.
pub fn parse_idempotency_key<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<String>, Vec<FieldError>> {
    let refuse = |message: String| Err(vec![FieldError::new("Idempotency-Key", message)]);
    let mut values = values.into_iter();
    let Some(key) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return refuse("send one Idempotency-Key header, not several".into());
    }
    if (1..=IDEMPOTENCY_KEY_MAX).contains(&key.len()) && key.iter().all(u8::is_ascii_graphic) {
        // Visible ASCII is UTF-8.
        Ok(Some(String::from_utf8_lossy(key).into_owned()))
    } else {
        refuse(format!(
            "must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        ))
    }
}

/// One bet as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bet {
    /// Bet id.
    pub id: i64,
    /// Market staked on.
    pub market_id: i64,
    /// Who staked.
    pub user_id: i64,
    /// Outcome index.
    pub outcome: u32,
    /// Credits.
    pub amount: i64,
    /// The staker's balance right after this bet.
    pub balance_after: i64,
    /// When.
    pub created_at: OffsetDateTime,
}

/// The result of placing a stake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The bet (the original one when this was an idempotent retry).
    pub bet: Bet,
    /// True when the bet was recorded by an earlier request with the same key.
    pub replayed: bool,
}

/// A user's aggregated stake on one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionStake {
    /// Staker.
    pub user_id: i64,
    /// Outcome index.
    pub outcome: u32,
    /// Credits staked in all.
    pub amount: i64,
}

/// What settling a market pays each position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    /// Receiver.
    pub user_id: i64,
    /// Outcome of the position.
    pub outcome: u32,
    /// Credits paid back.
    pub amount: i64,
}

/// Parimutuel settlement: winners split the whole pool in proportion to their stakes. Each
/// gets `floor(pool * stake / winning_pool)`; the few credits that leaves over go one each to
/// the winners with the largest fractional parts (ties: larger stake, then lower user id), so
/// the payouts sum exactly to the pool. With no stake on `winner` (or `winner` = `None`,
/// cancellation), everyone gets its stake back. The repositories record each settlement (the
/// pool, the amount paid, the leftover credits and this rule's text) in `settlements`.
pub fn settle(positions: &[PositionStake], winner: Option<u32>) -> Settlement {
    let pool: i64 = positions.iter().map(|p| p.amount).sum();
    let winning: Vec<&PositionStake> = positions
        .iter()
        .filter(|p| Some(p.outcome) == winner)
        .collect();
    let winning_pool: i64 = winning.iter().map(|p| p.amount).sum();
    if winning_pool == 0 {
        let payouts = positions
            .iter()
            .map(|p| Payout {
                user_id: p.user_id,
                outcome: p.outcome,
                amount: p.amount,
            })
            .collect();
        return Settlement {
            payouts,
            pool,
            refunded: true,
            leftover: 0,
        };
    }
    let (pool, winning_pool) = (i128::from(pool), i128::from(winning_pool));
    let mut shares: Vec<(Payout, i128, i64)> = winning
        .iter()
        .map(|p| {
            let exact = pool * i128::from(p.amount);
            let base = (exact / winning_pool) as i64;
            (
                Payout {
                    user_id: p.user_id,
                    outcome: p.outcome,
                    amount: base,
                },
                exact % winning_pool,
                p.amount,
            )
        })
        .collect();
    let paid: i64 = shares.iter().map(|s| s.0.amount).sum();
    let leftover = (pool as i64 - paid) as usize;
    shares.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(b.2.cmp(&a.2))
            .then(a.0.user_id.cmp(&b.0.user_id))
    });
    for share in shares.iter_mut().take(leftover) {
        share.0.amount += 1;
    }
    let payouts = shares.into_iter().map(|s| s.0).collect();
    Settlement {
        payouts,
        pool: pool as i64,
        refunded: false,
        leftover: leftover as i64,
    }
}

/// How a market's pool is paid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// One payout per position that receives anything (losers are absent).
    pub payouts: Vec<Payout>,
    /// The whole pool; the payouts sum to it exactly.
    pub pool: i64,
    /// True when stakes were returned (cancellation, or no stake on the winner).
    pub refunded: bool,
    /// Credits handed out one each by the largest-remainder rule.
    pub leftover: i64,
}

/// The payout rule, as recorded with each settlement.
pub const PAYOUT_RULE: &str = "parimutuel: floor(pool * stake / winning_pool) each; leftover credits one each by largest \
remainder, ties by larger stake then lower user id; no winning stake or cancellation refunds every stake";

/// A user's position on one outcome of a market, with the staker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketPosition {
    /// Staker.
    pub user: super::user::UserSummary,
    /// Outcome index.
    pub outcome: u32,
    /// Credits staked in all.
    pub amount: i64,
    /// Credits paid back at settlement (`None` while unsettled).
    pub payout: Option<i64>,
    /// Last stake or settlement.
    pub updated_at: OffsetDateTime,
}

/// One of a user's positions, with the market it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPosition {
    /// Market id.
    pub market_id: i64,
    /// Market name.
    pub market_name: String,
    /// Market status.
    pub market_status: super::market::MarketStatus,
    /// Outcome index.
    pub outcome: u32,
    /// Outcome label.
    pub outcome_label: String,
    /// Credits staked in all.
    pub amount: i64,
    /// Credits paid back at settlement (`None` while unsettled).
    pub payout: Option<i64>,
    /// Last stake or settlement.
    pub updated_at: OffsetDateTime,
}

/// One balance change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Entry id (increasing).
    pub id: i64,
    /// `GRANT`, `STAKE`, `PAYOUT` or `REFUND`.
    pub kind: String,
    /// Signed credits (stakes are negative).
    pub amount: i64,
    /// The market involved, if any.
    pub market_id: Option<i64>,
    /// When.
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(user_id: i64, outcome: u32, amount: i64) -> PositionStake {
        PositionStake {
            user_id,
            outcome,
            amount,
        }
    }

    #[test]
    fn winners_split_the_whole_pool_pro_rata() {
        let payouts = settle(&[pos(1, 0, 30), pos(2, 0, 10), pos(3, 1, 60)], Some(0)).payouts;
        assert_eq!(
            payouts,
            vec![
                Payout {
                    user_id: 1,
                    outcome: 0,
                    amount: 75
                },
                Payout {
                    user_id: 2,
                    outcome: 0,
                    amount: 25
                }
            ]
        );
    }

    #[test]
    fn leftover_credits_go_to_the_largest_remainders_and_the_sum_is_exact() {
        let positions = [pos(1, 0, 1), pos(2, 0, 1), pos(3, 0, 1), pos(4, 1, 7)];
        let payouts = settle(&positions, Some(0)).payouts;
        assert_eq!(payouts.iter().map(|p| p.amount).sum::<i64>(), 10);
        let amounts: Vec<i64> = payouts.iter().map(|p| p.amount).collect();
        assert_eq!(amounts, vec![4, 3, 3], "ties broken by lower user id");
    }

    #[test]
    fn no_winning_stake_or_cancellation_refunds_everyone() {
        let positions = [pos(1, 0, 5), pos(2, 1, 7)];
        for winner in [Some(2), None] {
            let payouts = settle(&positions, winner).payouts;
            assert_eq!(
                payouts
                    .iter()
                    .map(|p| (p.user_id, p.amount))
                    .collect::<Vec<_>>(),
                vec![(1, 5), (2, 7)]
            );
        }
    }

    #[test]
    fn payouts_always_sum_to_the_pool() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            seed >> 33
        };
        for _ in 0..500 {
            let n = 1 + next() % 20;
            let positions: Vec<_> = (0..n)
                .map(|i| pos(i as i64, (next() % 3) as u32, 1 + (next() % 1000) as i64))
                .collect();
            let pool: i64 = positions.iter().map(|p| p.amount).sum();
            let payouts = settle(&positions, Some((next() % 3) as u32)).payouts;
            assert_eq!(payouts.iter().map(|p| p.amount).sum::<i64>(), pool);
            assert!(payouts.iter().all(|p| p.amount >= 0));
        }
    }

    #[test]
    fn stakes_and_keys_are_validated() {
        assert!(
            Stake::parse(0, 0).is_err()
                && Stake::parse(0, STAKE_MAX + 1).is_err()
                && Stake::parse(1, 5).is_ok()
        );
        let one = |key: &str| parse_idempotency_key([key.as_bytes()]);
        assert_eq!(one("abc-123"), Ok(Some("abc-123".into())));
        assert_eq!(parse_idempotency_key([]), Ok(None));
        assert!(one("").is_err() && one("a b").is_err() && one("ключ").is_err());
        assert!(parse_idempotency_key([b"k\xe9y".as_slice()]).is_err());
        assert!(one(&"k".repeat(256)).is_err());
        assert!(parse_idempotency_key([b"a".as_slice(), b"a".as_slice()]).is_err());
    }
}
