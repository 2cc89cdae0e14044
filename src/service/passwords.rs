//! Password hashing with Argon2id (`Argon2::default()`, the OWASP minimum) on a small pool
//! of dedicated threads. Each hash touches ~19 MiB and takes tens of milliseconds: unbounded
//! hashing is a way to exhaust the server, and hashing on tokio's blocking pool spreads those
//! 19 MiB over every blocking thread's allocator arena (64 concurrent logins grew the process
//! to 1.2 GB here). Dedicated threads keep both the concurrency and the memory bounded; the
//! line in front of them is bounded too (beyond it a request gets 503 at once), and a job
//! whose caller already gave up (timed out, disconnected) is skipped.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc, Arc, Mutex,
    },
};

use argon2::{
    password_hash::{self, rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::oneshot;

use crate::error::AppError;

type Job = Box<dyn FnOnce() + Send>;

/// Hashes and verifies passwords.
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet started.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    /// A hash of a random password: logins for unknown users verify against it, so they take
    /// as long as logins with a wrong password (no user enumeration by timing).
    dummy: Arc<String>,
}

thread_local! {
    /// Argon2's working memory (~19 MiB), reused by a hashing thread from one hash to the next
    /// while hashes are waiting, and freed when none is.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of a reservation the system allocator always maps on its own (above glibc's 32 MiB
/// ceiling for its dynamic mmap threshold).
const ALWAYS_MAPPED: usize = 33 << 20;

/// Frees this thread's working memory. It is a mapping of its own (see [`argon2_into`]), so
/// it goes back to the system: an idle server does not keep ~19 MiB per hashing thread.
fn release_blocks() {
    BLOCKS.with(|blocks| *blocks.borrow_mut() = Vec::new());
}

/// Runs Argon2 with this thread's reusable working memory.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    BLOCKS.with(|blocks| {
        let mut blocks = blocks.borrow_mut();
        let needed = argon.params().block_count();
        if blocks.len() < needed {
            if blocks.capacity() < needed {
                // Reserved beyond glibc's largest dynamic mmap threshold (32 MiB), so the
                // allocation is always a mapping of its own and freeing it always returns it
                // to the system. Smaller, it would come from an allocator arena after the first
                // free (which raises the threshold), stay there when freed, and pile up one per
                // arena. Only the pages used (~19 MiB) become resident.
                *blocks = Vec::with_capacity(needed.max(ALWAYS_MAPPED / size_of::<Block>()));
            }
            blocks.resize(needed, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
    })
}

/// Hashes `password` now, on the current thread, into a PHC string (`$argon2id$v=19$...`).
pub fn hash_blocking(password: &str) -> Result<String, AppError> {
    let fail =
        |e: &dyn std::fmt::Display| AppError::Internal(format!("password hashing failed: {e}"));
    let argon = Argon2::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| fail(&e))?;
    let len = argon
        .params()
        .output_len()
        .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(len, |out| {
        argon2_into(&argon, password.as_bytes(), salt_bytes, out)
            .map_err(|_| password_hash::Error::Password)
    })
    .map_err(|e| fail(&e))?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::default().into()),
        params: ParamsString::try_from(argon.params()).map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// True when `password` matches the PHC string `hash` (compared in constant time).
fn verify_blocking(password: &str, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params);
    Output::init_with(expected.len(), |out| {
        argon2_into(&argon, password.as_bytes(), salt_bytes, out)
            .map_err(|_| password_hash::Error::Password)
    })
    .is_ok_and(|actual| actual == expected)
}

impl Passwords {
    /// A hasher running at most `threads` hashes at once, with at most `max_waiting` more
    /// waiting in line.
    pub fn new(threads: usize, max_waiting: usize) -> Result<Self, AppError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let waiting = Arc::new(AtomicUsize::new(0));
        for i in 0..threads.max(1) {
            let (queue, waiting) = (queue.clone(), waiting.clone());
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
                    if waiting.load(Ordering::Acquire) == 0 {
                        // Nothing waiting: give the working memory back before idling.
                        release_blocks();
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
            waiting,
            max_waiting,
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AppError::Unavailable(
                "too many password hashes are waiting".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let waiting = self.waiting.clone();
        self.jobs
            .send(Box::new(move || {
                waiting.fetch_sub(1, Ordering::AcqRel);
                if !tx.is_closed() {
                    let _ = tx.send(span.in_scope(f));
                }
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

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[test]
    fn hashes_interoperate_with_the_standard_argon2_api() {
        let ours = hash_blocking("correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err());

        let theirs = Argon2::default()
            .hash_password(b"battery staple", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_blocking("battery staple", &theirs));
        assert!(!verify_blocking("battery stapler", &theirs));
        assert!(!verify_blocking("battery staple", "not a hash"));
        assert!(verify_blocking("correct horse", &ours) && !verify_blocking("", &ours));
    }
}
