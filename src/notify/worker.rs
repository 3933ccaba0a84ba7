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
use crate::util::Backoff;

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
        let mut schedule = Schedule::new(self.claim_idle);
        let mut failing = false;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
            match self.round(&mut schedule, free.len()).await {
                Ok(got) => {
                    if failing {
                        tracing::info!("Notification queue reachable again.");
                        failing = false;
                    }
                    backoff.reset();
                    for (d, permit) in got.into_iter().zip(free) {
                        let (sinks, tx, max_attempts) = (self.sinks.clone(), tx.clone(), self.queue.max_attempts());
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
                    let _ = tokio::time::timeout(backoff.next_delay(), cancel.cancelled()).await;
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

    /// One round: the periodic chores that are due, then up to `max` jobs (taken over from dead
    /// consumers first, else new or this consumer's own pending ones).
    async fn round(&self, s: &mut Schedule, max: usize) -> Result<Vec<Delivery>, super::NotifyError> {
        let now = Instant::now();
        if now >= s.next_promote {
            s.next_promote = now + PROMOTE_EVERY;
            self.queue.promote_due().await?;
        }
        if now >= s.next_maintain {
            s.next_maintain = now + MAINTAIN_EVERY;
            self.queue.maintain().await?;
        }
        let mut got = Vec::new();
        if now >= s.next_claim {
            s.next_claim = now + s.claim_every;
            got = self.queue.reclaim(&self.consumer, max, self.claim_idle).await?;
        }
        if got.is_empty() {
            got = self.queue.fetch(&self.consumer, max, BLOCK, &mut s.cursor).await?;
        }
        Ok(got)
    }
}

/// When a worker next runs each periodic chore, and where its reads stand.
struct Schedule {
    cursor: Cursor,
    next_claim: Instant,
    next_promote: Instant,
    next_maintain: Instant,
    /// Looking twice per idle period bounds a dead consumer's jobs' wait to 1.5 × claim_idle.
    claim_every: Duration,
}

impl Schedule {
    /// Everything due at once: at start, jobs a crashed predecessor left behind come first.
    fn new(claim_idle: Duration) -> Self {
        let now = Instant::now();
        Self {
            cursor: Cursor::default(),
            next_claim: now,
            next_promote: now,
            next_maintain: now,
            claim_every: (claim_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(5)),
        }
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
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
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
                backoff.reset();
            }
            Err(e) if !open => {
                tracing::warn!(error = %e, jobs = batch.len(), "Cannot settle at shutdown; these jobs will be delivered again.");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "Cannot settle deliveries; retrying.");
                backoff.wait().await;
            }
        }
    }
}
