//! Password hashing with Argon2id (`Argon2::default()`, the OWASP minimum), off the async
//! runtime and bounded in concurrency: each hash takes ~19 MiB and tens of milliseconds, so
//! unbounded hashing is a way to exhaust the server.

use std::sync::Arc;

use argon2::{
    password_hash::{
        rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    },
    Argon2,
};
use tokio::sync::Semaphore;

use crate::{error::AppError, telemetry::spawn_blocking_in_span};

/// Hashes and verifies passwords.
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash of a random password: logins for unknown users verify against it, so they take
    /// as long as logins with a wrong password (no user enumeration by timing).
    dummy: Arc<String>,
}

/// Hashes `password` now, on the current thread (for startup and command-line tools).
pub fn hash_blocking(password: &str) -> Result<String, AppError> {
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("password hashing failed: {e}")))
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

impl Passwords {
    /// A hasher running at most `max_concurrent` hashes at once.
    pub fn new(max_concurrent: usize) -> Result<Self, AppError> {
        let dummy = hash_blocking(&uuid::Uuid::new_v4().to_string())?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes `password` (PHC string format).
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("shutting down".into()))?;
        spawn_blocking_in_span(move || hash_blocking(&password))
            .await
            .map_err(|e| AppError::Internal(format!("hashing task failed: {e}")))?
    }

    /// True when `password` matches `hash`. With no hash (unknown user) it verifies against a
    /// dummy and returns false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AppError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable("shutting down".into()))?;
        let dummy = self.dummy.clone();
        spawn_blocking_in_span(move || match hash {
            Some(hash) => verify_blocking(&password, &hash),
            None => {
                verify_blocking(&password, &dummy);
                false
            }
        })
        .await
        .map_err(|e| AppError::Internal(format!("verification task failed: {e}")))
    }
}
