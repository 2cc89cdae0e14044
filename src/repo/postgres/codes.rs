//! PostgreSQL errors mapped to [`RepoError`] by SQLSTATE, once: the one place that knows what
//! a code means for a caller.

use tokio_postgres::error::SqlState;

use crate::repo::RepoError;

/// Classifies a driver error: constraint violations by kind, the database unreachable,
/// restarting, overloaded or read-only as `Unavailable` (503, and retried by nobody but the
/// client), anything else as `Internal`.
pub fn classify(e: tokio_postgres::Error) -> RepoError {
    let Some(state) = e.code() else {
        // No SQLSTATE: the connection failed or closed, or a row did not convert.
        return if e.is_closed() || io_error(&e) {
            RepoError::Unavailable(format!("the database connection failed: {e}"))
        } else {
            RepoError::Internal(e.to_string())
        };
    };
    let detail = e
        .as_db_error()
        .map(|d| match d.constraint() {
            Some(c) => format!("{} ({c})", d.message()),
            None => d.message().to_owned(),
        })
        .unwrap_or_else(|| e.to_string());
    match *state {
        SqlState::UNIQUE_VIOLATION => RepoError::Duplicate(detail),
        SqlState::FOREIGN_KEY_VIOLATION => RepoError::MissingReference,
        SqlState::CHECK_VIOLATION
        | SqlState::NOT_NULL_VIOLATION
        | SqlState::EXCLUSION_VIOLATION => RepoError::Constraint(detail),
        _ if unavailable(state) => RepoError::Unavailable(detail),
        _ => RepoError::Internal(format!("{}: {detail}", state.code())),
    }
}

/// States that say the database cannot serve now, not that the request or agora is wrong.
fn unavailable(state: &SqlState) -> bool {
    let code = state.code();
    // 08: connection exceptions; 53: insufficient resources (disk full, too many
    // connections); 57: operator intervention (shutdown, restart, a statement timeout).
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || *state == SqlState::READ_ONLY_SQL_TRANSACTION
        || *state == SqlState::LOCK_NOT_AVAILABLE
        || *state == SqlState::T_R_SERIALIZATION_FAILURE
        || *state == SqlState::T_R_DEADLOCK_DETECTED
}

fn io_error(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// True when running the transaction again can succeed: it was chosen as a deadlock victim,
/// failed to serialize, or lost a race to insert a bet with the same idempotency key (the
/// retry finds the winner's bet and replays it).
pub(crate) fn retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(s) if *s == SqlState::T_R_DEADLOCK_DETECTED => true,
        Some(s) if *s == SqlState::T_R_SERIALIZATION_FAILURE => true,
        Some(s) if *s == SqlState::UNIQUE_VIOLATION => e
            .as_db_error()
            .and_then(|d| d.constraint())
            .is_some_and(|c| c == "bets_idempotency"),
        _ => false,
    }
}
