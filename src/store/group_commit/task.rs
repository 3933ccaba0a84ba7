//! One writer task: drains its queue, commits batches, reports them through the sink.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::Committed;
use super::sql::{Limits, WriterConn};
use super::{CommitSink, Failure, Request, Settings, RETRY_AFTER_MS};
use crate::error::{ApiError, StoreError};
use crate::model::RoomEvent;
use crate::store::Store;
use crate::telemetry::names;
use crate::util::Backoff;

/// The writer task.
pub struct Batcher<S: CommitSink> {
    rx: mpsc::Receiver<Request<S::Reply>>,
    batch_max: usize,
    /// Writes taken off the channel at most: with the channel's own capacity this makes
    /// `storage.queue_max` the real bound on queued writes, also while PostgreSQL is away.
    pending_max: usize,
    depth: Arc<AtomicU64>,
    committer: Committer,
    report: Report<S>,
}

/// A committed batch not yet reported: its requests and what the statements returned.
type Ready<R> = Option<(Vec<Request<R>>, Committed)>;

/// The writer's side that talks to PostgreSQL.
struct Committer {
    store: Store,
    timeout: Duration,
    limits: Limits,
    /// Dedicated connection (not from the pool): statements prepared once, pipelined.
    conn: Option<WriterConn>,
}

/// The writer's side that reports committed batches through the sink.
struct Report<S: CommitSink> {
    sink: Arc<S>,
    /// Write notification outbox rows in each batch.
    outbox: bool,
    /// Woken after a commit that wrote outbox rows.
    committed: Arc<tokio::sync::Notify>,
    /// Rooms of batches whose outcome was unknown, reported once a commit succeeds again
    /// (PostgreSQL answers, so whatever did commit is visible).
    unconfirmed: Vec<i64>,
}

impl<S: CommitSink> Batcher<S> {
    pub(super) fn new(
        rx: mpsc::Receiver<Request<S::Reply>>,
        store: Store,
        sink: Arc<S>,
        settings: &Settings,
        depth: Arc<AtomicU64>,
        committed: Arc<tokio::sync::Notify>,
    ) -> Self {
        let pending_max = (settings.queue_max / settings.writers.max(1)).max(settings.batch_max).max(1);
        let limits = Limits { outbox: settings.outbox, reactions_max: settings.reactions_max };
        Self {
            rx,
            batch_max: settings.batch_max.max(1),
            pending_max,
            depth,
            committer: Committer { store, timeout: settings.timeout, limits, conn: None },
            report: Report { sink, outbox: settings.outbox, committed, unconfirmed: Vec::new() },
        }
    }

    /// Runs until `drain` is cancelled, then commits everything still queued and returns.
    ///
    /// While backlogged (full batches), a committed batch is reported while the next one is
    /// being committed (its statements are sent first), so encoding and publishing its events
    /// is off the writer's serial cycle (BENCHMARKS.md, "One statement per batch"); otherwise
    /// it is reported at once. Reports still go out in commit order, from this one task.
    pub async fn run(mut self, drain: CancellationToken) {
        let mut pending: VecDeque<Request<S::Reply>> = VecDeque::new();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let mut closed = false;
        let mut ready: Ready<S::Reply> = None;
        loop {
            if !closed && drain.is_cancelled() {
                // New writes now get `unavailable` at once; what is queued still commits.
                self.rx.close();
                closed = true;
            }
            if pending.is_empty() {
                self.report.flush(ready.take());
                tokio::select! {
                    r = self.rx.recv() => match r {
                        Some(r) => pending.push_back(r),
                        None => return,
                    },
                    _ = drain.cancelled(), if !closed => continue,
                }
            }
            while pending.len() < self.pending_max {
                match self.rx.try_recv() {
                    Ok(r) => pending.push_back(r),
                    Err(_) => break,
                }
            }
            self.expire(&mut pending);
            if pending.is_empty() {
                continue;
            }
            let n = pending.len().min(self.batch_max);
            let batch: Vec<Request<S::Reply>> = pending.drain(..n).collect();
            if n < self.batch_max {
                // Not backlogged: latency first, the previous batch is reported before this one
                // is sent (the overlap's yield would put it behind every ready connection task).
                self.report.flush(ready.take());
            }
            ready = self.commit_batch(batch, ready.take(), &mut pending, &mut backoff).await;
        }
    }

    /// Commits one batch while reporting the previous one; returns it committed (to report),
    /// or puts it back (retry) or refuses it (unknown).
    async fn commit_batch(
        &mut self,
        batch: Vec<Request<S::Reply>>,
        previous: Ready<S::Reply>,
        pending: &mut VecDeque<Request<S::Reply>>,
        backoff: &mut Backoff,
    ) -> Ready<S::Reply> {
        let report = &mut self.report;
        // The commit is polled first and queues its statements; the report yields once so
        // the connection's task (possibly on this same worker thread) sends them before it.
        let flush = async {
            if previous.is_some() {
                tokio::task::yield_now().await;
            }
            report.flush(previous)
        };
        let (out, ()) = tokio::join!(biased; self.committer.commit(&batch), flush);
        match out {
            Ok(done) => {
                backoff.reset();
                self.depth.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                return Some((batch, done));
            }
            Err(Failure::Retry(e)) => {
                tracing::warn!(error = %e, rows = batch.len(), "Batch not committed; will retry.");
                metrics::counter!(names::STORAGE_BATCH_RETRIES_TOTAL).increment(1);
                for r in batch.into_iter().rev() {
                    pending.push_front(r);
                }
                // Keep accepting (bounded) and expiring while PostgreSQL is away.
                backoff.wait().await;
            }
            Err(Failure::Unknown(e)) => {
                tracing::error!(error = %e, rows = batch.len(), "Commit outcome unknown; answering unavailable.");
                self.depth.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                self.report.unknown(batch);
            }
        }
        None
    }

    /// Answers `unavailable` to requests past their deadline.
    fn expire(&self, pending: &mut VecDeque<Request<S::Reply>>) {
        let now = Instant::now();
        let before = pending.len();
        pending.retain(|r| {
            if r.deadline <= now {
                self.report.unavailable(&r.reply, "storage is slow or down; retry with the same client_msg_id");
                false
            } else {
                true
            }
        });
        let expired = (before - pending.len()) as u64;
        if expired > 0 {
            self.depth.fetch_sub(expired, Ordering::Relaxed);
        }
    }

    /// Rooms of the writes queued on this task's channel, in order (tests of the partition).
    #[cfg(test)]
    pub(super) fn queued_rooms(&mut self) -> Vec<i64> {
        let mut rooms = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            rooms.push(r.write.room_id());
        }
        rooms
    }
}

impl Committer {
    /// One attempt under `storage.write_timeout_ms`. A connection whose outcome is unknown
    /// (broken, or silent past the deadline) is dropped: the next batch opens a new one.
    async fn commit<R>(&mut self, batch: &[Request<R>]) -> Result<Committed, Failure> {
        let started = std::time::Instant::now();
        let out = match tokio::time::timeout(self.timeout, self.try_commit(batch)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Unknown(StoreError::Unavailable("commit timed out".into()))),
        };
        if matches!(out, Err(Failure::Unknown(_))) {
            self.conn = None;
        }
        metrics::histogram!(names::STORAGE_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(names::STORAGE_BATCH_ROWS).record(batch.len() as f64);
        out
    }

    async fn try_commit<R>(&mut self, batch: &[Request<R>]) -> Result<Committed, Failure> {
        if self.conn.as_ref().is_some_and(WriterConn::is_closed) {
            self.conn = None;
        }
        let conn = match self.conn.take() {
            Some(c) => c,
            None => WriterConn::open(&self.store).await.map_err(Failure::Retry)?,
        };
        let out = conn.commit(batch, self.limits).await;
        self.conn = Some(conn);
        out
    }
}

impl<S: CommitSink> Report<S> {
    /// Reports a committed batch, if any; then the rooms of earlier unknown outcomes, as a
    /// commit succeeded since.
    fn flush(&mut self, ready: Ready<S::Reply>) {
        let Some((batch, done)) = ready else { return };
        self.finish(batch, done);
        if !self.unconfirmed.is_empty() {
            // Kept sorted and deduplicated as it grows.
            self.sink.unconfirmed(&std::mem::take(&mut self.unconfirmed));
        }
    }

    /// After COMMIT: report the new rows (published in seq order), then answer the submitters.
    fn finish(&self, batch: Vec<Request<S::Reply>>, done: Committed) {
        let messages = done.new.iter().filter(|(_, e)| matches!(e, RoomEvent::Message(_))).count() as u64;
        metrics::counter!(names::STORAGE_MESSAGES_COMMITTED_TOTAL).increment(messages);
        metrics::counter!(names::STORAGE_EVENTS_COMMITTED_TOTAL).increment(done.new.len() as u64 - messages);
        if self.outbox && messages > 0 {
            self.committed.notify_one();
        }
        if !done.new.is_empty() {
            let (positions, new): (Vec<usize>, Vec<RoomEvent>) = done.new.into_iter().unzip();
            self.sink.events(&new);
            for (pos, e) in positions.into_iter().zip(&new) {
                if !matches!(e, RoomEvent::Message(_)) {
                    self.sink.accepted(&batch[pos].reply, e);
                }
            }
        }
        if !done.receipts.is_empty() {
            let receipts: Vec<_> = done.receipts.into_iter().map(|(_, r)| r).collect();
            self.sink.receipts(&receipts);
        }
        for (pos, m) in &done.repeats {
            self.sink.repeat(&batch[*pos].reply, m);
        }
        for (pos, err) in &done.failed {
            self.sink.failed(&batch[*pos].reply, err);
        }
    }

    /// A batch whose COMMIT outcome is unknown: its submitters answered `unavailable`, its
    /// rooms remembered (bounded: a room appears once however many batches failed).
    fn unknown(&mut self, batch: Vec<Request<S::Reply>>) {
        self.unconfirmed.extend(batch.iter().map(|r| r.write.room_id()));
        self.unconfirmed.sort_unstable();
        self.unconfirmed.dedup();
        for r in batch {
            self.unavailable(&r.reply, "storage did not confirm the write; retry with the same client_msg_id");
        }
    }

    fn unavailable(&self, reply: &S::Reply, why: &str) {
        metrics::counter!(names::STORAGE_UNAVAILABLE_TOTAL).increment(1);
        self.sink.failed(reply, &ApiError::unavailable(why, RETRY_AFTER_MS));
    }
}
