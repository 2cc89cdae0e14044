//! The stake rules: when a stake is taken, in the order they are checked. Pure, like
//! [`settle`](super::trading::settle): an engine reads what they need inside the transaction
//! that places the stake and writes only what they allow, so every engine refuses the same
//! stakes with the same [`Rejection`], in the same order.
//!
//! The order: an `Idempotency-Key` seen before ([`check_replay`]), then the market (it exists,
//! which the engine reports as not found; [`check_stake`]: active, before its close time, the
//! outcome exists), then the staker's balance ([`check_funds`]).

use time::OffsetDateTime;

use super::{market::MarketStatus, trading::Stake, Rejection};

/// What the stake rules read about a market.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StakeTarget {
    /// Its status.
    pub status: MarketStatus,
    /// When it stops taking stakes, if ever.
    pub close_time: Option<OffsetDateTime>,
    /// How many outcomes it has.
    pub outcomes: u32,
}

/// A request with an `Idempotency-Key` the staker used before: the same request (equal
/// [fingerprints](Stake::fingerprint)) is a replay of the earlier bet, another is refused.
pub fn check_replay(earlier_fingerprint: &str, fingerprint: &str) -> Result<(), Rejection> {
    if earlier_fingerprint == fingerprint {
        Ok(())
    } else {
        Err(Rejection::IdempotencyKeyReused)
    }
}

/// The market's rules for `stake` at `now`, in order: the market is active, its close time has
/// not come, and it has the outcome staked on.
pub fn check_stake(
    target: &StakeTarget,
    stake: &Stake,
    now: OffsetDateTime,
) -> Result<(), Rejection> {
    if target.status != MarketStatus::Active {
        return Err(Rejection::NotActive {
            status: target.status,
        });
    }
    if target.close_time.is_some_and(|t| t <= now) {
        return Err(Rejection::PastCloseTime);
    }
    check_outcome(target.outcomes, stake.outcome)
}

/// Outcome index `outcome` exists among a market's `outcomes` (a stake's, or a resolution's
/// winner).
pub fn check_outcome(outcomes: u32, outcome: u32) -> Result<(), Rejection> {
    if outcome < outcomes {
        Ok(())
    } else {
        Err(Rejection::UnknownOutcome { outcomes })
    }
}

/// The balance rule, checked last: `balance` covers `amount`; returns the balance after the
/// debit. An engine may apply it as a conditional debit (`... WHERE balance >= amount`, as
/// SQLite does) and call this with the balance it then finds for the rejection, or read the
/// balance first and call this to decide.
pub fn check_funds(balance: i64, amount: i64) -> Result<i64, Rejection> {
    if balance >= amount {
        Ok(balance - amount)
    } else {
        Err(Rejection::InsufficientFunds { balance })
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn target(status: MarketStatus, close_in: Option<Duration>, outcomes: u32) -> StakeTarget {
        StakeTarget {
            status,
            close_time: close_in.map(|d| OffsetDateTime::UNIX_EPOCH + d),
            outcomes,
        }
    }

    fn stake(outcome: u32) -> Stake {
        Stake { outcome, amount: 5 }
    }

    const NOW: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

    #[test]
    fn an_open_market_with_the_outcome_takes_the_stake() {
        let open = target(MarketStatus::Active, Some(Duration::SECOND), 2);
        assert_eq!(check_stake(&open, &stake(1), NOW), Ok(()));
        let undated = target(MarketStatus::Active, None, 2);
        assert_eq!(check_stake(&undated, &stake(0), NOW), Ok(()));
    }

    #[test]
    fn each_market_rule_refuses_on_its_own() {
        for status in [
            MarketStatus::Closed,
            MarketStatus::Resolved,
            MarketStatus::Cancelled,
        ] {
            let t = target(status, None, 2);
            assert_eq!(
                check_stake(&t, &stake(0), NOW),
                Err(Rejection::NotActive { status })
            );
        }
        for close_in in [Duration::ZERO, -Duration::SECOND] {
            let t = target(MarketStatus::Active, Some(close_in), 2);
            assert_eq!(
                check_stake(&t, &stake(0), NOW),
                Err(Rejection::PastCloseTime),
                "the close time itself is too late"
            );
        }
        let t = target(MarketStatus::Active, None, 2);
        assert_eq!(
            check_stake(&t, &stake(2), NOW),
            Err(Rejection::UnknownOutcome { outcomes: 2 })
        );
    }

    #[test]
    fn the_market_rules_refuse_in_order_status_close_time_outcome() {
        let closed_late_unknown = target(MarketStatus::Closed, Some(-Duration::SECOND), 2);
        assert!(matches!(
            check_stake(&closed_late_unknown, &stake(9), NOW),
            Err(Rejection::NotActive { .. })
        ));
        let late_unknown = target(MarketStatus::Active, Some(-Duration::SECOND), 2);
        assert_eq!(
            check_stake(&late_unknown, &stake(9), NOW),
            Err(Rejection::PastCloseTime)
        );
    }

    #[test]
    fn funds_cover_a_stake_up_to_the_whole_balance() {
        assert_eq!(check_funds(10, 10), Ok(0));
        assert_eq!(check_funds(10, 3), Ok(7));
        assert_eq!(
            check_funds(10, 11),
            Err(Rejection::InsufficientFunds { balance: 10 })
        );
    }

    #[test]
    fn a_reused_key_replays_the_same_request_and_refuses_another() {
        let (a, b) = (stake(0).fingerprint(1), stake(1).fingerprint(1));
        assert_eq!(check_replay(&a, &a), Ok(()));
        assert_eq!(check_replay(&a, &b), Err(Rejection::IdempotencyKeyReused));
    }
}
