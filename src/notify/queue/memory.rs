//! The in-memory queue (no `REDIS_URL`): the same retry and dead-letter rules, bounded, and
//! lost with the process.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::{backoff, failed, revived, DeadLetter, Delivery, Handle, Outcome};
use crate::notify::{Job, NotifyError};
use crate::util::clock::now_ms;
use crate::util::lock;

/// The in-memory queue: same retry and dead-letter rules, bounded, lost with the process.
pub struct MemoryQueue {
    state: Mutex<MemState>,
    wake: tokio::sync::Notify,
    cap: usize,
    pub(super) max_attempts: u32,
    base_ms: u64,
}

#[derive(Default)]
struct MemState {
    ready: VecDeque<Job>,
    /// (due ms, tie-breaker) → job.
    retry: BTreeMap<(u64, u64), Job>,
    inflight: usize,
    dead: VecDeque<DeadLetter>,
    seq: u64,
}

impl MemState {
    pub(super) fn depth(&self) -> usize {
        self.ready.len() + self.retry.len() + self.inflight
    }

    pub(super) fn promote(&mut self, now: u64) -> usize {
        let later = self.retry.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.retry, later);
        let n = due.len();
        self.ready.extend(due.into_values());
        n
    }
}

impl MemoryQueue {
    /// An empty queue of at most `cap` jobs (ready, in flight or waiting for a retry).
    pub(super) fn new(cap: usize, max_attempts: u32, base_ms: u64) -> Self {
        MemoryQueue {
            state: Mutex::new(MemState::default()),
            wake: tokio::sync::Notify::new(),
            cap,
            max_attempts,
            base_ms,
        }
    }

    pub(super) fn enqueue(&self, jobs: &[Job], force: bool) -> Result<(), NotifyError> {
        let mut s = lock(&self.state);
        if !force && s.depth() >= self.cap {
            return Err(NotifyError::Full);
        }
        let now = now_ms();
        s.ready.extend(jobs.iter().cloned().map(|mut j| {
            j.enqueued_at_ms = now;
            j
        }));
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    pub(super) fn take(&self, max: usize) -> (Vec<Delivery>, Option<u64>) {
        let mut s = lock(&self.state);
        s.promote(now_ms());
        let n = max.min(s.ready.len());
        let out: Vec<Delivery> = s.ready.drain(..n).map(|job| Delivery { job, handle: Handle::Memory }).collect();
        s.inflight += out.len();
        (out, s.retry.keys().next().map(|k| k.0))
    }

    pub(super) async fn fetch(&self, max: usize, block: Duration) -> Vec<Delivery> {
        let (got, next_due) = self.take(max);
        if !got.is_empty() {
            return got;
        }
        // Wake on an enqueue, on the next retry falling due, or after `block`.
        let until_due = next_due.map(|d| Duration::from_millis(d.saturating_sub(now_ms()))).unwrap_or(block);
        let _ = tokio::time::timeout(block.min(until_due), self.wake.notified()).await;
        self.take(max).0
    }

    pub(super) fn promote_due(&self) -> usize {
        lock(&self.state).promote(now_ms())
    }

    pub(super) fn settle(&self, done: &[(Delivery, Outcome)]) {
        let mut s = lock(&self.state);
        let now = now_ms();
        for (d, outcome) in done {
            s.inflight = s.inflight.saturating_sub(1);
            let Outcome::Failed(err) = outcome else { continue };
            let job = failed(&d.job, err);
            s.seq += 1;
            let seq = s.seq;
            if job.attempts >= self.max_attempts {
                if s.dead.len() >= self.cap {
                    // Bounded like everything else here; the oldest goes first.
                    tracing::warn!("In-memory dead letters are full; dropping the oldest.");
                    s.dead.pop_front();
                }
                s.dead.push_back(DeadLetter { id: format!("mem-{seq}"), job, dead_at_ms: now });
            } else {
                let due = now + backoff(self.base_ms, job.attempts).as_millis() as u64;
                s.retry.insert((due, seq), job);
            }
        }
    }

    pub(super) fn depth(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.depth() as u64, s.dead.len() as u64)
    }

    pub(super) fn dead_letters(&self, limit: usize) -> (Vec<DeadLetter>, u64) {
        let s = lock(&self.state);
        (s.dead.iter().rev().take(limit).cloned().collect(), s.dead.len() as u64)
    }

    pub(super) fn requeue(&self, wanted: Option<&HashSet<&str>>) -> usize {
        let mut s = lock(&self.state);
        let (back, keep): (Vec<DeadLetter>, Vec<DeadLetter>) =
            s.dead.drain(..).partition(|d| wanted.is_none_or(|w| w.contains(d.job.job_id.as_str())));
        s.dead = keep.into();
        let n = back.len();
        s.ready.extend(back.into_iter().map(|d| revived(d.job)));
        drop(s);
        if n > 0 {
            self.wake.notify_one();
        }
        n
    }
}
