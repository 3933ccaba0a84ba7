//! The job queue: a Redis Stream with one consumer group when `REDIS_URL` is set, else a bounded
//! in-memory queue with the same retry and dead-letter rules (not durable).
//!
//! Redis keys (`<prefix>` = `notify.key_prefix`):
//! - `<prefix>:jobs` — stream, field `job` = JSON [`Job`]; group [`GROUP`]. Workers read with
//!   `XREADGROUP` (first their own pending list from id `0`, then `>`), take over entries idle
//!   longer than `notify.claim_idle_ms` with `XAUTOCLAIM`, and `XACK` when done.
//! - `<prefix>:retry` — sorted set of failed jobs (attempts + 1) scored by due time; a Lua
//!   script moves due ones back to the stream atomically, run by whichever worker polls.
//! - `<prefix>:dead` — stream of jobs past `notify.max_attempts` (`XADD` + `XACK` in one `MULTI`).
//!
//! Never `MAXLEN`: on Redis 7 it deletes entries that were handed out but not acknowledged. The
//! stream is trimmed only with `XTRIM MINID` below the oldest entry any group still needs, and
//! memory is bounded by refusing to enqueue above `notify.queue_max` (the PostgreSQL outbox
//! holds the overflow).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;

mod memory;
mod stream;

use super::{Job, NotifyError};
use crate::redis_link::RedisLink;
use crate::telemetry::names;
use crate::util::clock::now_ms;
pub use memory::MemoryQueue;
pub use stream::RedisQueue;

/// The consumer group every worker of every node joins.
pub const GROUP: &str = "livechat-workers";

/// Longest retry delay, whatever the attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// A consumer with nothing pending and idle this long is removed from the group (live ones
/// touch their entry every fetch, i.e. at least twice a second).
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(3600);

/// Dead letters moved per page of a re-queue.
const REQUEUE_PAGE: usize = 500;

/// A job handed to a worker, with what is needed to settle it.
#[derive(Debug)]
pub struct Delivery {
    /// The job as stored (its `attempts` counts earlier failures).
    pub job: Job,
    handle: Handle,
}

#[derive(Debug)]
enum Handle {
    /// Stream entry id, acknowledged when settled.
    Stream(String),
    /// In-memory: nothing to acknowledge but the in-flight count.
    Memory,
}

/// How a delivery ended.
#[derive(Debug)]
pub enum Outcome {
    /// Delivered (or nothing to deliver, e.g. the user has no e-mail address any more).
    Done,
    /// Failed; retried with backoff, or dead-lettered after `notify.max_attempts`.
    Failed(String),
}

/// A dead-lettered job as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Entry id in the dead-letter stream.
    pub id: String,
    /// The job, with `attempts` and `last_error`.
    #[serde(flatten)]
    pub job: Job,
    /// When it was dead-lettered, ms since the epoch.
    pub dead_at_ms: u64,
}

/// Where the worker reads next. Starts on its own pending list (entries handed to a previous
/// process with the same consumer name and never acknowledged).
#[derive(Debug)]
pub struct Cursor(Option<String>);

impl Default for Cursor {
    fn default() -> Self {
        Cursor(Some("0".into()))
    }
}

/// The queue.
pub enum Queue {
    /// Durable: Redis Stream + consumer group.
    Redis(RedisQueue),
    /// Bounded, in this process only.
    Memory(MemoryQueue),
}

/// First retry after `base_ms`, doubling per attempt up to an hour, with "equal jitter"
/// (a uniform half of the delay is random) so failed jobs of one burst do not retry in lockstep.
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let full = base_ms.saturating_mul(1u64 << exp).min(MAX_BACKOFF.as_millis() as u64).max(1);
    let half = full / 2;
    Duration::from_millis(full - half + rand::rng().random_range(0..=half))
}

impl Queue {
    /// A Redis-backed queue; nothing is contacted until first use.
    pub fn redis(link: Arc<RedisLink>, prefix: &str, cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        Queue::Redis(RedisQueue::new(link, prefix, cap, max_attempts, base_ms))
    }

    /// A bounded in-memory queue.
    pub fn memory(cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        Queue::Memory(MemoryQueue::new(cap, max_attempts, base_ms))
    }

    /// Whether jobs live only in this process.
    pub fn is_memory(&self) -> bool {
        matches!(self, Queue::Memory(_))
    }

    /// Enqueues `jobs` as one unit, or refuses all of them with [`NotifyError::Full`] when the
    /// queue already holds `notify.queue_max` jobs. `force` skips that check: the relay uses it
    /// for the later chunks of one batch, so a batch is never half-enqueued by the cap (the
    /// overshoot is bounded by one relay batch).
    pub async fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Redis(q) => q.enqueue(jobs, force).await?,
            Queue::Memory(q) => q.enqueue(jobs, force)?,
        }
        metrics::counter!(names::NOTIFY_JOBS_ENQUEUED_TOTAL).increment(jobs.len() as u64);
        Ok(())
    }

    /// Up to `max` jobs for `consumer`, waiting at most `block` when there are none.
    pub async fn fetch(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
        cursor: &mut Cursor,
    ) -> Result<Vec<Delivery>, NotifyError> {
        match self {
            Queue::Redis(q) => q.fetch(consumer, max, block, cursor).await,
            Queue::Memory(q) => Ok(q.fetch(max, block).await),
        }
    }

    /// Takes over up to `max` jobs handed to other consumers and idle for `min_idle`.
    pub async fn reclaim(&self, consumer: &str, max: usize, min_idle: Duration) -> Result<Vec<Delivery>, NotifyError> {
        match self {
            Queue::Redis(q) => q.reclaim(consumer, max, min_idle).await,
            // One process: nothing can be abandoned by another consumer.
            Queue::Memory(_) => Ok(Vec::new()),
        }
    }

    /// Moves retries that are due back to the queue.
    pub async fn promote_due(&self) -> Result<usize, NotifyError> {
        match self {
            Queue::Redis(q) => q.promote_due().await,
            Queue::Memory(q) => Ok(q.promote_due()),
        }
    }

    /// Applies the outcomes of finished deliveries: acknowledge, schedule a retry, or
    /// dead-letter. Each job's move and acknowledgement happen atomically.
    pub async fn settle(&self, done: &[(Delivery, Outcome)]) -> Result<(), NotifyError> {
        if done.is_empty() {
            return Ok(());
        }
        match self {
            Queue::Redis(q) => q.settle(done).await?,
            Queue::Memory(q) => q.settle(done),
        }
        let now = now_ms();
        for (d, outcome) in done {
            match outcome {
                Outcome::Done => {
                    metrics::counter!(names::NOTIFY_JOBS_DELIVERED_TOTAL, "sink" => d.job.sink.as_str()).increment(1);
                    if d.job.enqueued_at_ms > 0 {
                        let secs = now.saturating_sub(d.job.enqueued_at_ms) as f64 / 1000.0;
                        metrics::histogram!(names::NOTIFY_DELIVERY_SECONDS).record(secs);
                    }
                }
                Outcome::Failed(_) if d.job.attempts + 1 >= self.max_attempts() => {
                    metrics::counter!(names::NOTIFY_JOBS_DEAD_LETTERED_TOTAL).increment(1);
                }
                Outcome::Failed(_) => metrics::counter!(names::NOTIFY_JOBS_RETRIED_TOTAL).increment(1),
            }
        }
        Ok(())
    }

    /// Deliveries tried before a job is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        match self {
            Queue::Redis(q) => q.max_attempts,
            Queue::Memory(q) => q.max_attempts,
        }
    }

    /// Housekeeping: trims acknowledged entries (`XTRIM MINID`) and updates the depth gauges.
    /// Returns the jobs waiting (queued, in flight, or due for retry later).
    pub async fn maintain(&self) -> Result<u64, NotifyError> {
        let (depth, dead) = match self {
            Queue::Redis(q) => q.maintain().await?,
            Queue::Memory(q) => q.depth(),
        };
        metrics::gauge!(names::NOTIFY_QUEUE_DEPTH).set(depth as f64);
        metrics::gauge!(names::NOTIFY_DEAD_LETTERS).set(dead as f64);
        Ok(depth)
    }

    /// The newest `limit` dead letters, and how many there are in all.
    pub async fn dead_letters(&self, limit: usize) -> Result<(Vec<DeadLetter>, u64), NotifyError> {
        match self {
            Queue::Redis(q) => q.dead_letters(limit).await,
            Queue::Memory(q) => Ok(q.dead_letters(limit)),
        }
    }

    /// Moves dead letters back to the queue with their attempts reset: those whose `job_id` is
    /// listed, or all of them with `None`. Returns how many were moved.
    pub async fn requeue(&self, job_ids: Option<&[String]>) -> Result<usize, NotifyError> {
        let wanted: Option<HashSet<&str>> = job_ids.map(|ids| ids.iter().map(String::as_str).collect());
        match self {
            Queue::Redis(q) => q.requeue(wanted.as_ref()).await,
            Queue::Memory(q) => Ok(q.requeue(wanted.as_ref())),
        }
    }
}

/// A dead-lettered job back to a fresh start.
fn revived(mut job: Job) -> Job {
    job.attempts = 0;
    job.last_error = None;
    job.enqueued_at_ms = now_ms();
    job
}

/// The job after one more failed attempt.
fn failed(job: &Job, error: &str) -> Job {
    let mut j = job.clone();
    j.attempts += 1;
    j.last_error = Some(error.chars().take(500).collect());
    j
}

/// A job's stored form. Never an empty job: a job that cannot be encoded is an error.
fn to_json(job: &Job) -> Result<String, NotifyError> {
    serde_json::to_string(job).map_err(|e| NotifyError::Encode(format!("job {}: {e}", job.job_id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::SinkKind;

    fn job(n: i64) -> Job {
        Job {
            job_id: Job::id_for(n, 2, SinkKind::Log),
            sink: SinkKind::Log,
            user_id: 2,
            room_id: 1,
            message_id: n,
            sender_id: 1,
            preview: "hi".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            mention: false,
            attempts: 0,
            enqueued_at_ms: 0,
            last_error: None,
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for attempt in 1..6u32 {
            let full = 100u64 << (attempt - 1);
            for _ in 0..50 {
                let d = backoff(100, attempt).as_millis() as u64;
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} not in [{}, {full}]", full / 2);
            }
        }
        assert!(backoff(500, 40) <= MAX_BACKOFF);
    }

    #[tokio::test]
    async fn memory_queue_cap_retry_and_dead_letter() {
        let q = Queue::memory(2, 2, 1);
        q.enqueue(&[job(1), job(2)], false).await.unwrap();
        assert!(matches!(q.enqueue(&[job(3)], false).await, Err(NotifyError::Full)));
        // forced chunks of a batch already admitted go in
        q.enqueue(&[job(3)], true).await.unwrap();
        let mut cur = Cursor::default();
        let got = q.fetch("c", 10, Duration::from_millis(10), &mut cur).await.unwrap();
        assert_eq!(got.len(), 3);
        let outcomes: Vec<_> = got
            .into_iter()
            .map(|d| {
                let o = if d.job.message_id == 1 { Outcome::Done } else { Outcome::Failed("boom".into()) };
                (d, o)
            })
            .collect();
        q.settle(&outcomes).await.unwrap();
        // two retries, due within a few ms
        let mut again = Vec::new();
        for _ in 0..100 {
            again.extend(q.fetch("c", 10, Duration::from_millis(20), &mut cur).await.unwrap());
            if again.len() == 2 {
                break;
            }
        }
        assert_eq!(again.len(), 2);
        assert!(again.iter().all(|d| d.job.attempts == 1 && d.job.last_error.as_deref() == Some("boom")));
        let outcomes: Vec<_> = again.into_iter().map(|d| (d, Outcome::Failed("still".into()))).collect();
        q.settle(&outcomes).await.unwrap();
        let (dead, total) = q.dead_letters(10).await.unwrap();
        assert_eq!(total, 2);
        assert!(dead.iter().all(|d| d.job.attempts == 2));
        let ids = vec![dead[0].job.job_id.clone()];
        assert_eq!(q.requeue(Some(&ids)).await.unwrap(), 1);
        let back = q.fetch("c", 10, Duration::from_millis(10), &mut cur).await.unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].job.attempts, 0);
        assert_eq!(q.requeue(None).await.unwrap(), 1);
    }
}
