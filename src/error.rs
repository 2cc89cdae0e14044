//! `AppError`: the service-level vocabulary of failure. It says *what* went wrong; the API
//! layer (`api/error.rs`, the only place) decides which HTTP status that is.

use crate::domain::FieldError;

/// A failure a service reports to its caller.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The input is invalid; every problem is listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The caller is not authenticated (no, invalid or expired credentials).
    #[error("unauthenticated: {0}")]
    Unauthorized(String),
    /// The caller is authenticated but not allowed to do this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The named resource does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the resource's current state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason (`market_not_active`).
        code: &'static str,
        /// What conflicts, for a human.
        message: String,
    },
    /// The client's `If-Match` precondition does not hold.
    #[error("the resource has changed (current version {current})")]
    PreconditionFailed {
        /// The version the resource has now.
        current: i64,
    },
    /// The request is well-formed but refers to something that cannot be used.
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable reason (`unknown_outcome`).
        code: &'static str,
        /// What cannot be processed, per field.
        message: String,
        /// The offending fields.
        details: Vec<FieldError>,
    },
    /// The client holds as many open event streams as it may.
    #[error("too many open event streams (at most {limit} per client)")]
    TooManyStreams {
        /// Streams one client may hold.
        limit: usize,
    },
    /// A dependency (the database) cannot serve now; retrying later may succeed.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// Not allowed, with the reason.
    pub fn forbidden(why: impl Into<String>) -> Self {
        AppError::Forbidden(why.into())
    }

    /// A conflict with a machine code.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        AppError::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<Vec<FieldError>> for AppError {
    fn from(details: Vec<FieldError>) -> Self {
        AppError::Validation(details)
    }
}
