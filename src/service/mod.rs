//! Business rules: who may do what, lifecycle transitions, what a write invalidates, which jobs
//! a write enqueues. Services speak domain types and [`AppError`] and
//! depend on the repository traits only; they know nothing of HTTP or of the storage engine.

pub mod auth;
pub mod authenticator;
pub mod events;
pub mod jobs;
pub mod markets;
pub mod passwords;
pub mod search;
pub mod tokens;
pub mod trading;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use crate::{
    domain::{market::MarketStatus, FieldError, Rejection},
    error::AppError,
    repo::RepoError,
};

/// A change this process made to a market, told once committed: what the vector index, which
/// keeps each market's status and drops deleted ones, reads its writes with (other processes'
/// changes reach it through the storage's change feed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketChanged {
    /// Its status is now this.
    Status(i64, MarketStatus),
    /// It was deleted.
    Deleted(i64),
}

/// Told of each [`MarketChanged`].
pub type MarketListener = Arc<dyn Fn(MarketChanged) + Send + Sync>;

/// What a refusal means to a client.
fn refused(rejection: Rejection) -> AppError {
    match rejection {
        Rejection::InsufficientFunds { balance } => AppError::conflict(
            "insufficient_funds",
            format!("the balance ({balance} credits) does not cover the stake"),
        ),
        Rejection::NotActive { status } => AppError::conflict(
            "market_not_active",
            format!(
                "the market is {} and no longer open for this",
                status.as_str()
            ),
        ),
        Rejection::PastCloseTime => {
            AppError::conflict("market_closed", "the market's close time has passed")
        }
        Rejection::UnknownOutcome { outcomes } => AppError::Unprocessable {
            code: "unknown_outcome",
            message: "the market has no such outcome".into(),
            details: vec![FieldError::new(
                "outcome",
                format!(
                    "must be an outcome index from 0 to {}",
                    outcomes.saturating_sub(1)
                ),
            )],
        },
        Rejection::IdempotencyKeyReused => AppError::Unprocessable {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used with a different request".into(),
            details: vec![FieldError::new(
                "Idempotency-Key",
                "already used for another request body",
            )],
        },
        Rejection::LastAdmin => {
            AppError::conflict("last_admin", "the last admin cannot be demoted")
        }
        Rejection::Frozen { fields } => AppError::conflict(
            "market_frozen",
            format!(
                "other users have staked on this market, so its creator can no longer change \
                 its {}; a moderator or an admin can",
                fields.join(", ")
            ),
        ),
        Rejection::ResolutionReserved => AppError::forbidden(
            "other users have staked on this market, so only a moderator or an admin may \
             resolve it; its creator may still close it or cancel it (which refunds every stake)",
        ),
        Rejection::TooManyWebhooks { limit } => AppError::conflict(
            "webhook_limit",
            format!("a user may hold {limit} webhook subscriptions; delete one first"),
        ),
        Rejection::UnknownMarkets { ids } => AppError::Unprocessable {
            code: "unknown_markets",
            message: "the subscription names markets that do not exist".into(),
            details: vec![FieldError::new(
                "markets",
                format!(
                    "no market has the id{} {}",
                    if ids.len() == 1 { "" } else { "s" },
                    ids.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )],
        },
    }
}

impl From<RepoError> for AppError {
    /// The default reading of a repository failure; services handle the cases whose meaning
    /// depends on context (a missing reference, a duplicate) before falling back to this.
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound => AppError::NotFound("resource"),
            RepoError::Duplicate(what) => {
                AppError::conflict("duplicate", format!("already exists: {what}"))
            }
            RepoError::MissingReference => AppError::Unprocessable {
                code: "unprocessable",
                message: "a referenced resource does not exist".into(),
                details: vec![],
            },
            RepoError::Refused(rejection) => refused(rejection),
            RepoError::VersionMismatch { current } => AppError::PreconditionFailed { current },
            RepoError::Constraint(what) => {
                AppError::Internal(format!("constraint violated: {what}"))
            }
            RepoError::Unavailable(why) => AppError::Unavailable(why),
            RepoError::Internal(why) => AppError::Internal(why),
        }
    }
}
