//! Who may change or settle a market once other users' money is on it.
//!
//! A market's creator, a moderator or an admin may edit, close, resolve or cancel it. Once a
//! user other than the creator holds a stake on it, the creator's rights shrink, because
//! from then on an edit or a resolution by the creator can move other people's money:
//! - its **name, description and close time are frozen** for the creator (the description
//!   holds the resolution criteria, so rewriting it changes what others bet on); outcomes
//!   can never be edited after creation. Moderators and admins may still edit them. A change
//!   that sets a field to the value it already has is not a change.
//! - only **moderators and admins may resolve it**: otherwise a creator could stake with a
//!   second account and resolve in its favour, minting credits from everyone else.
//! - the creator may still **close** it early (no money moves) and **cancel** it (every stake
//!   is refunded, so nobody loses).
//!
//! While only the creator's own money is on the market, the creator keeps every right. These
//! are pure functions: the repository evaluates them inside the transaction that makes the
//! change, on the market and positions as that transaction reads them, so a stake committed
//! just before an edit or a resolution always counts.

use super::{
    market::{Market, MarketChanges},
    trading::PositionStake,
    user::{Actor, Permission},
    Rejection,
};

/// How an actor may act on a market, once allowed to modify it at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Standing {
    /// A moderator or an admin: every right on every market.
    Staff,
    /// The market's creator: every right until others stake on it.
    Creator,
}

impl Standing {
    /// The actor's standing towards a market created by `creator_id`; `None` when the actor
    /// may not modify it (not its creator, not a moderator or admin).
    pub fn of(actor: &Actor, creator_id: i64) -> Option<Self> {
        if actor.can(Permission::Delete) {
            Some(Standing::Staff)
        } else if actor.may_modify(creator_id) {
            Some(Standing::Creator)
        } else {
            None
        }
    }
}

/// True when someone other than `creator_id` holds one of `positions`.
pub fn others_have_staked(creator_id: i64, positions: &[PositionStake]) -> bool {
    positions.iter().any(|p| p.user_id != creator_id)
}

/// Checks that `changes` by `standing` touch no frozen field of `market` (as read inside the
/// writing transaction). Close times are compared at the stored precision, milliseconds.
pub fn check_edit(
    standing: Standing,
    market: &Market,
    others_staked: bool,
    changes: &MarketChanges,
) -> Result<(), Rejection> {
    if standing == Standing::Staff || !others_staked {
        return Ok(());
    }
    let millis = |t: time::OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    let mut fields = Vec::new();
    if changes.name.as_ref().is_some_and(|n| *n != market.name) {
        fields.push("name");
    }
    if changes
        .description
        .as_ref()
        .is_some_and(|d| *d != market.description)
    {
        fields.push("description");
    }
    if changes
        .close_time
        .is_some_and(|t| t.map(millis) != market.close_time.map(millis))
    {
        fields.push("close_time");
    }
    if fields.is_empty() {
        Ok(())
    } else {
        Err(Rejection::Frozen { fields })
    }
}

/// Checks that `standing` may resolve a market (cancelling, which refunds everyone, and
/// closing are always allowed to whoever may modify it).
pub fn check_resolution(standing: Standing, others_staked: bool) -> Result<(), Rejection> {
    if standing == Standing::Creator && others_staked {
        Err(Rejection::ResolutionReserved)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        market::{MarketStatus, Outcome},
        user::{Role, UserSummary},
    };
    use time::{Duration, OffsetDateTime};

    fn market() -> Market {
        let now = OffsetDateTime::now_utc();
        Market {
            id: 1,
            name: "Will it rain?".into(),
            description: Some("Met office".into()),
            creator: UserSummary {
                id: 7,
                username: "c".into(),
            },
            status: MarketStatus::Active,
            outcomes: vec![Outcome {
                label: "YES".into(),
                pool: 5,
            }],
            close_time: Some(now + Duration::days(1)),
            resolution: None,
            volume: 5,
            version: 2,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn standing_follows_role_then_ownership() {
        let actor = |user_id, role| Actor { user_id, role };
        assert_eq!(
            Standing::of(&actor(7, Role::User), 7),
            Some(Standing::Creator)
        );
        assert_eq!(Standing::of(&actor(8, Role::User), 7), None);
        assert_eq!(
            Standing::of(&actor(8, Role::Moderator), 7),
            Some(Standing::Staff)
        );
        assert_eq!(
            Standing::of(&actor(7, Role::Admin), 7),
            Some(Standing::Staff)
        );
    }

    #[test]
    fn others_staking_freezes_the_creators_edits_of_changed_fields_only() {
        let m = market();
        let rename = MarketChanges {
            name: Some("Will it pour?".into()),
            description: Some(m.description.clone()),
            close_time: Some(None),
        };
        assert_eq!(check_edit(Standing::Creator, &m, false, &rename), Ok(()));
        assert_eq!(check_edit(Standing::Staff, &m, true, &rename), Ok(()));
        assert_eq!(
            check_edit(Standing::Creator, &m, true, &rename),
            Err(Rejection::Frozen {
                fields: vec!["name", "close_time"]
            })
        );
        let same = MarketChanges {
            name: Some(m.name.clone()),
            description: Some(m.description.clone()),
            close_time: Some(m.close_time),
        };
        assert_eq!(check_edit(Standing::Creator, &m, true, &same), Ok(()));
    }

    #[test]
    fn only_staff_resolve_once_others_have_staked() {
        let own = [PositionStake {
            user_id: 7,
            outcome: 0,
            amount: 5,
        }];
        let shared = [
            own[0].clone(),
            PositionStake {
                user_id: 8,
                outcome: 1,
                amount: 5,
            },
        ];
        assert!(!others_have_staked(7, &own));
        assert!(others_have_staked(7, &shared));
        assert_eq!(check_resolution(Standing::Creator, false), Ok(()));
        assert_eq!(
            check_resolution(Standing::Creator, true),
            Err(Rejection::ResolutionReserved)
        );
        assert_eq!(check_resolution(Standing::Staff, true), Ok(()));
    }
}
