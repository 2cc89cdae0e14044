//! Tokio workers: each claims a due job, runs its handler (in a task of its own, bounded by a
//! timeout, so a panic or a hang is a failed run, not a dead worker), records the outcome, and
//! otherwise sleeps until woken by an enqueue, the next due time, or the poll interval.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use time::OffsetDateTime;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    domain::job::{Claimed, Job, JobStatus},
    repo::JobRepository,
};

/// Runs jobs. Must be idempotent: a job can run more than once.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Does the job's work; `Ok` carries an optional result kept with the job, `Err` a message
    /// kept as its `last_error`.
    async fn run(&self, job: &Job) -> Result<Option<Value>, String>;
}

/// Worker settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Jobs run at once (one worker task each); 0 runs none (jobs wait in the table).
    pub workers: usize,
    /// Longest sleep between looks at the table when nothing wakes a worker.
    pub poll: Duration,
    /// Longest a run may take before it is cancelled and counted as failed.
    pub timeout: Duration,
}

/// The running workers.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `config.workers` workers over the jobs in `queue`.
    pub fn start(
        queue: Arc<dyn JobRepository>,
        handler: Arc<dyn Handler>,
        config: WorkerConfig,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = (0..config.workers)
            .map(|n| {
                let worker = Worker {
                    n,
                    queue: queue.clone(),
                    handler: handler.clone(),
                    config,
                    stopped: stopped.clone(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Workers { stop, tasks }
    }

    /// Stops claiming, lets running jobs finish for up to `wait`, then cancels what is still
    /// running (those jobs keep their lease and run again once it has run out). Jobs not
    /// started stay queued.
    pub async fn shutdown(self, wait: Duration) {
        let _ = self.stop.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures_join(self.tasks);
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("jobs still running at shutdown were cancelled; they will run again");
            aborts.iter().for_each(|a| a.abort());
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

struct Worker {
    n: usize,
    queue: Arc<dyn JobRepository>,
    handler: Arc<dyn Handler>,
    config: WorkerConfig,
    stopped: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        while !*self.stopped.borrow() {
            match self.queue.claim().await {
                Ok(Some(claimed)) => {
                    // More may be due: let another idle worker look too.
                    self.queue.wake();
                    self.execute(claimed).await;
                }
                Ok(None) => {
                    let sleep = self.until_due().await;
                    let queue = self.queue.clone();
                    tokio::select! {
                        _ = queue.woken() => {}
                        _ = tokio::time::sleep(sleep) => {}
                        _ = self.stopped.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = self.n, error = %e, "claiming a job failed");
                    tokio::select! {
                        _ = tokio::time::sleep(self.config.poll) => {}
                        _ = self.stopped.changed() => {}
                    }
                }
            }
        }
    }

    /// Time until the next job is due, at most the poll interval.
    async fn until_due(&self) -> Duration {
        match self.queue.next_due().await {
            Ok(Some(due)) => {
                let wait = due - OffsetDateTime::now_utc();
                // A little past the due time, so the claim finds it due.
                let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
                (wait + Duration::from_millis(2)).min(self.config.poll)
            }
            _ => self.config.poll,
        }
    }

    async fn execute(&self, claimed: Claimed) {
        let job = claimed.job.clone();
        let span = tracing::info_span!("job", job.id = job.id, job.kind = %job.kind);
        let handler = self.handler.clone();
        let started = std::time::Instant::now();
        let mut task = tokio::spawn(tracing::Instrument::instrument(
            async move { handler.run(&job).await },
            span.clone(),
        ));
        let outcome = tokio::select! {
            joined = &mut task => match joined {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err("the handler panicked".to_owned()),
                Err(_) => Err("the run was cancelled".to_owned()),
            },
            _ = tokio::time::sleep(self.config.timeout) => {
                task.abort();
                Err(format!("timed out after {} s", self.config.timeout.as_secs_f64()))
            }
        };
        let record = async {
            let job = &claimed.job;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match outcome {
                Ok(result) => match self.queue.succeed(&claimed, result).await {
                    Ok(true) if job.every.is_some() => tracing::debug!(ms, "periodic job ran"),
                    Ok(true) => tracing::info!(attempt = job.attempts, ms, "job succeeded"),
                    Ok(false) => tracing::warn!("job finished after its lease ran out"),
                    Err(e) => tracing::error!(error = %e, "recording a job's success failed"),
                },
                Err(error) => match self.queue.fail(&claimed, &error).await {
                    Ok(Some(JobStatus::Dead)) => {
                        tracing::error!(attempt = job.attempts, error, "job is dead")
                    }
                    Ok(_) => {
                        tracing::warn!(attempt = job.attempts, error, "job failed; will retry")
                    }
                    Err(e) => tracing::error!(error = %e, "recording a job's failure failed"),
                },
            }
        };
        tracing::Instrument::instrument(record, span).await;
    }
}
