//! Plain domain types with `parse()` constructors: a value that exists past the API layer is
//! valid. No I/O here.

pub mod authority;
pub mod event;
pub mod job;
pub mod market;
pub mod paging;
pub mod precondition;
pub mod retry;
pub mod search;
pub mod staking;
pub mod text;
pub mod trading;
pub mod user;
pub mod webhook;

use std::fmt;

use market::MarketStatus;
pub use paging::{Page, Paging};

/// One invalid field of a request: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the client sent it (`name`, `outcomes[2]`, `limit`).
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why the database refused a change; decided inside the transaction that would have made it,
/// so the check and the change cannot be separated by a concurrent write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The caller's balance does not cover the stake.
    InsufficientFunds {
        /// The balance now.
        balance: i64,
    },
    /// The market no longer takes stakes (or can no longer change this way).
    NotActive {
        /// Its status.
        status: MarketStatus,
    },
    /// The market's close time has passed.
    PastCloseTime,
    /// The market has no outcome with this index.
    UnknownOutcome {
        /// How many outcomes it has.
        outcomes: u32,
    },
    /// The `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused,
    /// The change would leave no admin.
    LastAdmin,
    /// Users other than the creator have staked, so the creator may no longer change these
    /// fields (see [`authority`]).
    Frozen {
        /// The frozen fields the change would alter.
        fields: Vec<&'static str>,
    },
    /// Users other than the creator have staked, so only a moderator or an admin may resolve
    /// the market (see [`authority`]).
    ResolutionReserved,
    /// The user already holds as many webhook subscriptions as one may.
    TooManyWebhooks {
        /// The limit.
        limit: u64,
    },
    /// A webhook subscription names markets that do not exist.
    UnknownMarkets {
        /// Those ids.
        ids: Vec<i64>,
    },
}

/// Collects field errors while a value is parsed, so a client learns every problem at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Records a problem with `field`.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// How many problems are recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, else every recorded problem.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    /// Parses a required text field: trimmed, `min..=max` characters, no control characters.
    pub fn text(&mut self, field: &str, raw: &str, min: usize, max: usize) -> String {
        let value = raw.trim();
        let len = value.chars().count();
        if len < min || len > max {
            self.add(
                field,
                format!("must be {min} to {max} characters long (after trimming)"),
            );
        } else if value
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            self.add(field, "must not contain control characters");
        }
        value.to_owned()
    }
}
