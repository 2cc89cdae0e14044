//! SQLite error codes mapped by hand, once, to [`RepoError`].

use rusqlite::{ffi, Error, ErrorCode};

use crate::repo::RepoError;

/// Classifies a rusqlite error by its (extended) result code.
pub(crate) fn classify(e: Error) -> RepoError {
    match &e {
        Error::QueryReturnedNoRows => RepoError::NotFound,
        Error::SqliteFailure(err, msg) => {
            let detail = msg.clone().unwrap_or_else(|| err.to_string());
            match err.extended_code {
                ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    RepoError::Duplicate(detail)
                }
                ffi::SQLITE_CONSTRAINT_FOREIGNKEY => RepoError::MissingReference,
                ffi::SQLITE_CONSTRAINT_CHECK | ffi::SQLITE_CONSTRAINT_NOTNULL => {
                    RepoError::Constraint(detail)
                }
                _ => match err.code {
                    ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::DiskFull
                    | ErrorCode::ReadOnly
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen => RepoError::Unavailable(detail),
                    _ => RepoError::Internal(e.to_string()),
                },
            }
        }
        _ => RepoError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n INTEGER NOT NULL CHECK (n >= 0));
             CREATE TABLE c (p INTEGER REFERENCES p (id));
             INSERT INTO p VALUES (1, 'a', 0);",
        )
        .unwrap();
        c
    }

    fn run(sql: &str) -> RepoError {
        classify(db().execute(sql, []).unwrap_err())
    }

    #[test]
    fn unique_and_primary_key_violations_are_duplicates() {
        assert!(matches!(
            run("INSERT INTO p VALUES (2, 'a', 0)"),
            RepoError::Duplicate(_)
        ));
        assert!(matches!(
            run("INSERT INTO p VALUES (1, 'b', 0)"),
            RepoError::Duplicate(_)
        ));
    }

    #[test]
    fn foreign_key_violation_is_a_missing_reference() {
        assert!(matches!(
            run("INSERT INTO c VALUES (99)"),
            RepoError::MissingReference
        ));
    }

    #[test]
    fn check_and_not_null_violations_are_constraints() {
        assert!(matches!(
            run("INSERT INTO p VALUES (3, 'c', -1)"),
            RepoError::Constraint(_)
        ));
        assert!(matches!(
            run("INSERT INTO p VALUES (3, 'c', NULL)"),
            RepoError::Constraint(_)
        ));
    }

    #[test]
    fn no_rows_is_not_found_and_syntax_errors_are_internal() {
        let e = db()
            .query_row("SELECT id FROM p WHERE id = 9", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert!(matches!(classify(e), RepoError::NotFound));
        assert!(matches!(run("SELEC 1"), RepoError::Internal(_)));
    }

    #[test]
    fn writing_through_a_query_only_connection_is_unavailable() {
        let c = db();
        c.execute_batch("PRAGMA query_only = ON").unwrap();
        let e = c
            .execute("INSERT INTO p VALUES (5, 'e', 0)", [])
            .unwrap_err();
        assert!(matches!(classify(e), RepoError::Unavailable(_)));
    }
}
