//! Password hashing with Argon2id (`Argon2::default()`, the OWASP minimum) on a small pool
//! of dedicated threads. Each hash touches ~19 MiB and takes tens of milliseconds: unbounded
//! hashing is a way to exhaust the server, and hashing on tokio's blocking pool spreads those
//! 19 MiB over every blocking thread's allocator arena (64 concurrent logins grew the process
//! to 1.2 GB here). Dedicated threads keep both the concurrency and the memory bounded.

use std::sync::{mpsc, Arc, Mutex};

use argon2::{
    password_hash::{
        rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    },
    Argon2,
};
use tokio::sync::oneshot;

use crate::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords.
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
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
    /// A hasher running at most `threads` hashes at once (the rest wait in line).
    pub fn new(threads: usize) -> Result<Self, AppError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("agora-hash-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .map_err(|e| AppError::Internal(format!("cannot start a hashing thread: {e}")))?;
        }
        // The dummy is hashed on the pool too, so no other thread's allocator keeps its memory.
        let (tx, rx) = mpsc::channel();
        jobs.send(Box::new(move || {
            let _ = tx.send(hash_blocking(&uuid::Uuid::new_v4().to_string()));
        }))
        .map_err(|_| AppError::Internal("the hashing threads stopped".into()))?;
        let dummy = rx
            .recv()
            .map_err(|_| AppError::Internal("the hashing threads stopped".into()))??;
        Ok(Passwords {
            jobs,
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(span.in_scope(f));
            }))
            .map_err(|_| AppError::Unavailable("password hashing has stopped".into()))?;
        rx.await
            .map_err(|_| AppError::Internal("a hashing job failed".into()))
    }

    /// Hashes `password` (PHC string format).
    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// True when `password` matches `hash`. With no hash (unknown user) it verifies against a
    /// dummy and returns false, taking the same time.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, AppError> {
        let dummy = self.dummy.clone();
        self.run(move || match hash {
            Some(hash) => verify_blocking(&password, &hash),
            None => {
                verify_blocking(&password, &dummy);
                false
            }
        })
        .await
    }
}
