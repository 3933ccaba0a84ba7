//! A worker: reads jobs, delivers up to `notify.worker_concurrency` at once, settles outcomes in
//! batches (one `MULTI` per batch: acks, retries, dead letters).
//!
//! One fetch loop per process feeds deliveries; it only asks for as many jobs as it has free
//! slots, so nothing waits in this process unowned. A fetch is never abandoned half-way (a
//! dropped `XREADGROUP` would still hand its entries to this consumer, stranding them until
//! `XAUTOCLAIM`), so the loop checks for shutdown between fetches, each bounded by [`BLOCK`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::queue::{Cursor, Delivery, Outcome, Queue};
use super::sinks::Sinks;

/// Longest wait for new jobs in one fetch; also the longest shutdown delay it causes.
const BLOCK: Duration = Duration::from_millis(500);
/// How often due retries are moved back to the stream (their delay's precision).
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// How often the stream is trimmed and the depth gauges updated.
const MAINTAIN_EVERY: Duration = Duration::from_secs(2);
/// How long in-flight deliveries may finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(3);
/// Outcomes settled in one round trip at most.
const SETTLE_MAX: usize = 512;
/// Bound on one settle round trip.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// A set of workers of one process sharing one consumer name.
pub struct Worker {
    queue: Arc<Queue>,
    sinks: Arc<Sinks>,
    consumer: String,
    concurrency: usize,
    claim_idle: Duration,
}

impl Worker {
    /// A worker; it takes over jobs other consumers left unacknowledged for `claim_idle`.
    pub fn new(
        queue: Arc<Queue>,
        sinks: Arc<Sinks>,
        consumer: String,
        concurrency: usize,
        claim_idle: Duration,
    ) -> Self {
        Self { queue, sinks, consumer, concurrency: concurrency.max(1), claim_idle }
    }

    /// Runs until `cancel`, then lets deliveries in flight finish (within a grace) and settles them.
    pub async fn run(self, cancel: CancellationToken) {
        let (tx, rx) = mpsc::channel::<(Delivery, Outcome)>(self.concurrency * 2);
        let settler = tokio::spawn(settle_loop(self.queue.clone(), rx));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let mut cursor = Cursor::default();
        // At start, at once: jobs a crashed predecessor left behind.
        let mut next_claim = Instant::now();
        let mut next_promote = Instant::now();
        let mut next_maintain = Instant::now();
        let mut failing = false;
        let mut backoff = Duration::from_millis(100);
        // Looking twice per idle period bounds a dead consumer's jobs' wait to 1.5 × claim_idle.
        let claim_every = (self.claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));

        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                _ = cancel.cancelled() => break,
            };
            let Ok(first) = first else { break };
            if cancel.is_cancelled() {
                break;
            }
            let mut free = vec![first];
            while free.len() < self.concurrency {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => free.push(p),
                    Err(_) => break,
                }
            }

            let round = async {
                let now = Instant::now();
                if now >= next_promote {
                    next_promote = now + PROMOTE_EVERY;
                    self.queue.promote_due().await?;
                }
                if now >= next_maintain {
                    next_maintain = now + MAINTAIN_EVERY;
                    self.queue.maintain().await?;
                }
                let mut got = Vec::new();
                if now >= next_claim {
                    next_claim = now + claim_every;
                    got = self.queue.reclaim(&self.consumer, free.len(), self.claim_idle).await?;
                }
                if got.is_empty() {
                    got = self.queue.fetch(&self.consumer, free.len(), BLOCK, &mut cursor).await?;
                }
                Ok::<_, super::NotifyError>(got)
            };
            match round.await {
                Ok(got) => {
                    if failing {
                        tracing::info!("Notification queue reachable again.");
                        failing = false;
                    }
                    backoff = Duration::from_millis(100);
                    for d in got {
                        let Some(permit) = free.pop() else { break };
                        let sinks = self.sinks.clone();
                        let tx = tx.clone();
                        let max_attempts = self.queue.max_attempts();
                        tracker.spawn(async move {
                            let outcome = deliver(&sinks, &d, max_attempts).await;
                            let _ = tx.send((d, outcome)).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Notification queue unavailable; retrying.");
                        failing = true;
                    }
                    drop(free);
                    let _ = tokio::time::timeout(backoff, cancel.cancelled()).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }

        tracker.close();
        if tokio::time::timeout(GRACE, tracker.wait()).await.is_err() {
            tracing::warn!("Deliveries still running at shutdown; their jobs stay queued and are retried later.");
        }
        drop(tx);
        let _ = settler.await;
    }
}

async fn deliver(sinks: &Sinks, d: &Delivery, max_attempts: u32) -> Outcome {
    match sinks.deliver(&d.job).await {
        Ok(()) => {
            tracing::debug!(job_id = %d.job.job_id, "Notification delivered.");
            Outcome::Done
        }
        Err(e) => {
            let attempt = d.job.attempts + 1;
            if attempt >= max_attempts {
                tracing::warn!(job_id = %d.job.job_id, attempt, error = %e, "Notification failed for the last time; dead-lettered.");
            } else {
                tracing::debug!(job_id = %d.job.job_id, attempt, error = %e, "Notification failed; will retry.");
            }
            Outcome::Failed(e.to_string())
        }
    }
}

/// Settles finished deliveries in batches; a batch that fails to settle is tried again (its jobs
/// are still pending in Redis, so at worst they are delivered again after `claim_idle_ms`).
async fn settle_loop(queue: Arc<Queue>, mut rx: mpsc::Receiver<(Delivery, Outcome)>) {
    let mut batch: Vec<(Delivery, Outcome)> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut open = true;
    loop {
        if batch.is_empty() {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(x) => batch.push(x),
                None => return,
            }
        }
        while open && batch.len() < SETTLE_MAX {
            match rx.try_recv() {
                Ok(x) => batch.push(x),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let r = match tokio::time::timeout(SETTLE_TIMEOUT, queue.settle(&batch)).await {
            Ok(r) => r,
            Err(_) => Err(super::NotifyError::Redis("settle timed out".into())),
        };
        match r {
            Ok(()) => {
                batch.clear();
                backoff = Duration::from_millis(100);
            }
            Err(e) if !open => {
                tracing::warn!(error = %e, jobs = batch.len(), "Cannot settle at shutdown; these jobs will be delivered again.");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "Cannot settle deliveries; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
