//! The retry rule of the job queue, shared by every engine: exponential backoff with jitter
//! after a failed run, then `dead` once the allowed runs are used up (a periodic job instead
//! waits for its next period).

use std::time::Duration;

use rand::Rng;

use super::job::{Job, QueueConfig};

/// The delay before retrying after failed run number `attempt` (1-based): `base * 2^(attempt-1)`
/// capped at `max`, then jittered down by up to a quarter, so retries of many jobs that failed
/// together spread out while each delay still exceeds the one before (until the cap).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(30));
    let delay = doubled.min(max);
    delay.mul_f64(rand::rng().random_range(0.75..=1.0))
}

/// What a failed run of a job leads to, before the store looks for a newer queued job with the
/// same key (which supersedes it: the job is then `dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long until it may run again.
    pub delay: Duration,
    /// Every allowed run is used up (a periodic job then starts over at its next period).
    pub exhausted: bool,
    /// It ends `dead`: exhausted and not periodic.
    pub dead: bool,
}

/// The retry rule: after a backoff, or at the next period once a periodic job has used up its
/// runs, or never (`dead`) once any other job has.
pub fn after_failure(job: &Job, config: &QueueConfig) -> Retry {
    let exhausted = job.attempts >= job.max_attempts;
    let delay = match job.every {
        Some(every) if exhausted => every,
        _ => backoff(job.attempts, config.backoff, config.backoff_max),
    };
    Retry {
        delay,
        exhausted,
        dead: exhausted && job.every.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::job::{JobKind, JobStatus};

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let (base, max) = (Duration::from_millis(1000), Duration::from_secs(10));
        for _ in 0..100 {
            let d: Vec<Duration> = (1..=6).map(|a| backoff(a, base, max)).collect();
            assert!((750..=1000).contains(&d[0].as_millis()), "{d:?}");
            assert!((1500..=2000).contains(&d[1].as_millis()), "{d:?}");
            assert!((3000..=4000).contains(&d[2].as_millis()), "{d:?}");
            assert!(d[..4].windows(2).all(|w| w[0] < w[1]), "{d:?}");
            assert!(d[4..]
                .iter()
                .all(|d| (7500..=10_000).contains(&d.as_millis())));
        }
        assert!(backoff(200, base, max) <= max);
    }

    #[test]
    fn a_failed_run_backs_off_then_ends_dead_or_waits_for_its_next_period() {
        let config = QueueConfig {
            backoff: Duration::from_secs(1),
            ..QueueConfig::default()
        };
        let now = OffsetDateTime::UNIX_EPOCH;
        let job = |attempts, every| Job {
            id: 1,
            kind: JobKind::Backup,
            payload: Value::Null,
            status: JobStatus::Running,
            attempts,
            max_attempts: 3,
            run_at: now,
            last_error: None,
            result: None,
            owner_id: None,
            every,
            created_at: now,
            updated_at: now,
            finished_at: None,
        };
        let early = after_failure(&job(2, None), &config);
        assert!(!early.exhausted && !early.dead);
        assert!((1500..=2000).contains(&early.delay.as_millis()));
        let last = after_failure(&job(3, None), &config);
        assert!(last.exhausted && last.dead);
        let hour = Duration::from_secs(3600);
        let periodic = after_failure(&job(3, Some(hour)), &config);
        assert_eq!(
            periodic,
            Retry {
                delay: hour,
                exhausted: true,
                dead: false
            }
        );
    }
}
