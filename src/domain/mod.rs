//! Plain domain types with `parse()` constructors: a value that exists past the API layer is
//! valid. No I/O here.

pub mod authority;
pub mod market;
pub mod precondition;
pub mod search;
pub mod text;
pub mod trading;
pub mod user;

use std::fmt;

use market::MarketStatus;

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
}

/// One page of a list and the number of rows matching in all.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows on this page, in order.
    pub items: Vec<T>,
    /// Rows matching in all.
    pub total: u64,
}

/// Validated paging of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Paging {
    /// Page size, `1..=market::PAGE_MAX`.
    pub limit: u32,
    /// Rows to skip, `0..=market::OFFSET_MAX`.
    pub offset: u64,
}

impl Paging {
    /// Validates `limit` (default [`market::PAGE_DEFAULT`]) and `offset` (default 0).
    pub fn parse(limit: Option<u32>, offset: Option<u64>) -> Result<Self, Vec<FieldError>> {
        let mut p = Problems::default();
        let limit = limit.unwrap_or(market::PAGE_DEFAULT);
        if !(1..=market::PAGE_MAX).contains(&limit) {
            p.add(
                "limit",
                format!("must be between 1 and {}", market::PAGE_MAX),
            );
        }
        let offset = offset.unwrap_or(0);
        if offset > market::OFFSET_MAX {
            p.add("offset", format!("must be at most {}", market::OFFSET_MAX));
        }
        p.finish(Paging { limit, offset })
    }
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
