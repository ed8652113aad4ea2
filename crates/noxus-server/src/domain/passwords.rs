//! Dashboard passwords: argon2id with a random salt, PHC strings at rest.
//!
//! argon2 is deliberately slow (tens of milliseconds of CPU and 19 MiB per
//! call), and anyone can make the server run it by posting the login form.
//! On a request path it therefore runs through [`PasswordPool`]: on
//! tokio's blocking threads, a few at a time, and refused when the queue is
//! too long, so that password work can never stall the API.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, Semaphore};

/// The longest email address (RFC 5321's path limit), in bytes. Longer ones
/// are refused before any lookup, hashing or throttle.
pub const MAX_EMAIL_BYTES: usize = 254;

/// The longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// How long a request waits for a hashing slot before it is refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Hashes a password (argon2id, default parameters). Blocks for the whole
/// hash: on a request path use [`PasswordPool::hash`].
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
}

/// Checks a password against a stored hash. Blocks for the whole check: on
/// a request path use [`PasswordPool::verify`].
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Why password work was not done.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Every slot stayed busy for [`QUEUE_WAIT`]: try again in a moment (503).
    #[error("The server is busy; try again in a moment")]
    Busy,
    /// Longer than [`MAX_PASSWORD_BYTES`] (422).
    #[error("Passwords are at most {MAX_PASSWORD_BYTES} characters long")]
    TooLong,
    /// The hash could not be made (500).
    #[error("password hashing failed")]
    Internal(#[source] anyhow::Error),
}

/// Runs argon2 on blocking threads, at most `concurrency` at a time. Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct PasswordPool {
    permits: Arc<Semaphore>,
    queue_wait: Duration,
    /// The hash unknown emails are checked against, so that they cost what
    /// a wrong password costs.
    dummy: Arc<OnceCell<String>>,
}

impl PasswordPool {
    /// A pool of `concurrency` slots (at least 1); a request waits at most
    /// `queue_wait` for one.
    pub fn new(concurrency: usize, queue_wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_wait,
            dummy: Arc::new(OnceCell::new()),
        }
    }

    /// The default number of slots: half the CPUs, at least one, so that
    /// password work leaves the other half to the API.
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get() / 2)
            .unwrap_or(1)
            .max(1)
    }

    /// Runs `work` on a blocking thread once a slot is free. The slot is
    /// held until `work` returns, even if the caller stops waiting (a
    /// client that disconnects does not free the CPU it made us spend).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit =
            tokio::time::timeout(self.queue_wait, Arc::clone(&self.permits).acquire_owned())
                .await
                .map_err(|_| PasswordError::Busy)?
                .map_err(|_| PasswordError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| PasswordError::Internal(anyhow::anyhow!("password task failed: {e}")))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let password = SecretString::from(password);
        self.run(move || hash_password(password.expose_secret()))
            .await?
            .map_err(PasswordError::Internal)
    }

    /// Checks `password` against `stored`, or, for an unknown account
    /// (`None`), against a dummy hash so that it takes as long. Always
    /// `false` for `None`.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<String>,
    ) -> Result<bool, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let known = stored.is_some();
        let stored = match stored {
            Some(stored) => stored,
            None => self.dummy_hash().await?,
        };
        let password = SecretString::from(password);
        let matches = self
            .run(move || verify_password(password.expose_secret(), &stored))
            .await?;
        Ok(matches && known)
    }

    async fn dummy_hash(&self) -> Result<String, PasswordError> {
        self.dummy
            .get_or_try_init(|| async {
                let random: String = rand::thread_rng()
                    .sample_iter(&Alphanumeric)
                    .take(24)
                    .map(char::from)
                    .collect();
                self.hash(&random).await
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash_password("correct horse").expect("hash");
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &stored));
        assert!(!verify_password("wrong", &stored));
        assert!(!verify_password("x", "not a hash"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_never_runs_more_hashes_at_once_than_its_slots() {
        let pool = PasswordPool::new(2, Duration::from_secs(60));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let pool = pool.clone();
            let running = Arc::clone(&running);
            let most = Arc::clone(&most);
            tasks.spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task").expect("a slot within a minute");
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} at once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_pool_refuses_after_the_wait_and_keeps_slots_of_abandoned_work() {
        let pool = PasswordPool::new(1, Duration::from_millis(50));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = tokio::sync::oneshot::channel::<()>();
        // A caller that starts work and then stops waiting for it.
        let abandoned = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move || {
                    let _ = started.send(());
                    let _ = released.recv();
                })
                .await
            }
        });
        has_started.await.expect("the work started");
        abandoned.abort();
        // The slot stays taken while the work runs.
        assert!(matches!(pool.run(|| ()).await, Err(PasswordError::Busy)));
        release.send(()).expect("release");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while pool.run(|| ()).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the slot came back");
        }
    }

    #[tokio::test]
    async fn over_long_passwords_are_refused_without_hashing() {
        let pool = PasswordPool::new(1, Duration::from_secs(1));
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            pool.hash(&long).await,
            Err(PasswordError::TooLong)
        ));
        assert!(!pool.verify(&long, None).await.expect("no hashing needed"));
        let stored = pool.hash("correct horse").await.expect("hash");
        assert!(pool
            .verify("correct horse", Some(stored.clone()))
            .await
            .expect("verify"));
        assert!(!pool.verify("wrong", Some(stored)).await.expect("verify"));
        assert!(!pool.verify("anything", None).await.expect("verify"));
    }
}
