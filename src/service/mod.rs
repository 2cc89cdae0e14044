//! Business rules: who may do what, lifecycle transitions, what a write invalidates. Services
//! speak domain types and [`AppError`](crate::error::AppError); they know nothing of HTTP.

pub mod auth;
pub mod markets;
pub mod passwords;
pub mod tokens;
pub mod users;

use crate::{error::AppError, repo::RepoError};

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
                message: "a referenced resource does not exist".into(),
                details: vec![],
            },
            RepoError::VersionMismatch { current } => AppError::PreconditionFailed { current },
            RepoError::Constraint(what) => {
                AppError::Internal(format!("constraint violated: {what}"))
            }
            RepoError::Unavailable(why) => AppError::Unavailable(why),
            RepoError::Internal(why) => AppError::Internal(why),
        }
    }
}
