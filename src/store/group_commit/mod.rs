//! The group-commit writer for room events (messages, edits, deletes, reactions) and receipts.
//!
//! The store builds no frames and knows no connections: committed events, idempotent repeats
//! and refusals are reported through a [`CommitSink`] that the chat layer implements.
//!
//! One task drains everything queued and writes it in ONE transaction, then publishes the
//! committed rows to the bus. No timer: under light load a batch is one message and latency is
//! one round trip; under load batches grow to `storage.batch_max` while the previous one
//! commits. Every event takes its room's next seq (`UPDATE rooms ... RETURNING`), so seq order
//! is commit order for every kind; membership and authorship are checked in the same
//! statement, and the seq is reserved only if the room's `membership_version` is still the one
//! the check saw when the row lock is granted (else the write answers `unavailable`, retry):
//! a non-member's write is refused whatever a node has cached (README "Room events"). Durable
//! before visible: nothing is published before COMMIT.
//!
//! `storage.writers` such tasks run side by side, each on its own connection, and a room
//! always goes to the same one (`room_id % writers`). One writer leaves PostgreSQL idle while
//! its COMMIT waits for the WAL flush; two overlap one's flush with the other's inserts. The
//! partition keeps everything that orders a room (its seqs, its receipts, the order of one
//! connection's sends) on one task, so no cross-writer ordering is needed.

mod plan;
mod sql;
mod task;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Store;
use crate::error::{ApiError, StoreError};
use crate::model::{Message, ReceiptState, RoomEvent};
use crate::telemetry::names;

pub use task::Batcher;

/// What to write.
#[derive(Debug)]
pub enum Write {
    /// A new message.
    Message {
        /// Room (membership is checked at commit).
        room_id: i64,
        /// Author.
        sender_id: i64,
        /// Text.
        content: String,
        /// Idempotency key.
        client_msg_id: Option<String>,
        /// The message replied to: must be in the same room (else `not_found`).
        reply_to: Option<i64>,
        /// Users mentioned: those who are not members at commit are dropped.
        mentions: Vec<i64>,
    },
    /// Replace a message's content: its sender only, not once deleted.
    Edit {
        /// The message's room.
        room_id: i64,
        /// Who edits.
        user_id: i64,
        /// The message.
        message_id: i64,
        /// New text.
        content: String,
    },
    /// Erase a message's content (a tombstone stays).
    Delete {
        /// The message's room.
        room_id: i64,
        /// Who deletes: the sender (a member); `None` for a moderator (the admin API).
        user_id: Option<i64>,
        /// The message.
        message_id: i64,
    },
    /// Add or remove a reaction.
    React {
        /// The message's room.
        room_id: i64,
        /// Who reacts (a member).
        user_id: i64,
        /// The message.
        message_id: i64,
        /// The emoji.
        emoji: String,
        /// Add (true) or remove.
        on: bool,
    },
    /// A receipt: advance `user_id`'s watermarks in the room up to `seq`.
    Receipt {
        /// Room of the message.
        room_id: i64,
        /// Reporter.
        user_id: i64,
        /// The message reported.
        message_id: i64,
        /// Its seq.
        seq: i64,
        /// Its author (their own receipts do not set the booleans).
        sender_id: i64,
        /// Delivered.
        delivered: bool,
        /// Read.
        read: bool,
    },
}

impl Write {
    /// The room the write belongs to (it picks the writer task).
    pub fn room_id(&self) -> i64 {
        match self {
            Write::Message { room_id, .. }
            | Write::Edit { room_id, .. }
            | Write::Delete { room_id, .. }
            | Write::React { room_id, .. }
            | Write::Receipt { room_id, .. } => *room_id,
        }
    }
}

/// Where the outcome of committed batches goes. Called by the writer task after COMMIT, never
/// under a lock; implementations must not block.
pub trait CommitSink: Send + Sync + 'static {
    /// Who asked for a write: answered when the write stored nothing new or failed.
    type Reply: Send + 'static;

    /// New room events of one batch, committed, in (room, seq) order.
    fn events(&self, new: &[RoomEvent]);
    /// The submitter of an edit, delete or reaction that committed as `event` (after
    /// [`CommitSink::events`]; a message's acknowledgement is its delivery).
    fn accepted(&self, reply: &Self::Reply, event: &RoomEvent);
    /// Receipts of one batch, committed.
    fn receipts(&self, receipts: &[ReceiptState]);
    /// A write that stored nothing new: `original` is the message stored before (idempotency).
    fn repeat(&self, reply: &Self::Reply, original: &Message);
    /// A write refused or not confirmed (`unavailable`: retry with the same `client_msg_id`).
    fn failed(&self, reply: &Self::Reply, error: &ApiError);
    /// Batches whose COMMIT outcome was unknown touched these rooms: whatever did commit must
    /// still reach their members (not only the senders' retries). Called after the next
    /// successful commit, when PostgreSQL answers again.
    fn unconfirmed(&self, rooms: &[i64]);
}

/// A queued write, its submitter and its deadline.
pub struct Request<R> {
    write: Write,
    reply: R,
    deadline: Instant,
}

/// Handle to submit writes. Cheap to clone.
pub struct Writer<R> {
    /// One queue per writer task; a room's writes always go to `room_id % len`.
    tx: Arc<[mpsc::Sender<Request<R>>]>,
    timeout: Duration,
    /// Writes submitted and not yet committed, answered or expired (channel + pending + batch).
    depth: Arc<AtomicU64>,
    /// `storage.queue_max`: the bound on `depth`.
    queue_max: u64,
    /// `storage.batch_max`: more than this queued means the writers are behind.
    batch_max: u64,
}

impl<R> Clone for Writer<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            timeout: self.timeout,
            depth: self.depth.clone(),
            queue_max: self.queue_max,
            batch_max: self.batch_max,
        }
    }
}

/// Retry hint sent with `unavailable`.
const RETRY_AFTER_MS: u64 = 1000;

impl<R> Writer<R> {
    /// Queues a write; a full queue answers `unavailable` at once (backpressure, not loss).
    pub fn submit(&self, write: Write, reply: R) -> Result<(), ApiError> {
        // The real bound, whatever sits in the channels, in the writers' pending queues or in
        // a batch that PostgreSQL does not answer.
        if self.depth.load(Ordering::Relaxed) >= self.queue_max {
            metrics::counter!(names::STORAGE_UNAVAILABLE_TOTAL).increment(1);
            return Err(ApiError::unavailable("the write queue is full, retry later", RETRY_AFTER_MS));
        }
        let lane = self.tx.len().max(1);
        let tx = &self.tx[write.room_id().rem_euclid(lane as i64) as usize];
        let req = Request { write, reply, deadline: Instant::now() + self.timeout };
        match tx.try_send(req) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                metrics::counter!(names::STORAGE_UNAVAILABLE_TOTAL).increment(1);
                Err(ApiError::unavailable("the write queue is full, retry later", RETRY_AFTER_MS))
            }
        }
    }

    /// Writes queued and not yet committed.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// More writes wait than one batch takes: the writers run flat out (PostgreSQL or the
    /// machine is the limit), so background work should yield to them.
    pub fn backlogged(&self) -> bool {
        self.depth() > self.batch_max
    }
}

/// The group commit's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Writer tasks (`storage.writers`), each on its own connection.
    pub writers: usize,
    /// Writes queued at most, over all writers (`storage.queue_max`).
    pub queue_max: usize,
    /// Writes per transaction at most (`storage.batch_max`).
    pub batch_max: usize,
    /// Deadline of a queued write and of one commit (`storage.write_timeout_ms`).
    pub timeout: Duration,
    /// Write one `notify_outbox` row per new message in its batch (notifications are on).
    pub outbox: bool,
    /// `limits.reactions_per_message`: distinct emoji one message may carry.
    pub reactions_max: i64,
}

/// Creates the writer handle and its `writers` tasks (run each with [`Batcher::run`]).
/// `committed` is notified after a commit that wrote outbox rows (the notification relay waits
/// on it).
pub fn new<S: CommitSink>(
    store: Store,
    sink: Arc<S>,
    settings: &Settings,
    committed: Arc<tokio::sync::Notify>,
) -> (Writer<S::Reply>, Vec<Batcher<S>>) {
    let writers = settings.writers.max(1);
    let depth = Arc::new(AtomicU64::new(0));
    let (txs, batchers): (Vec<_>, Vec<_>) = (0..writers)
        .map(|_| {
            let (tx, rx) = mpsc::channel((settings.queue_max / writers).max(1));
            let batcher = Batcher::new(rx, store.clone(), sink.clone(), settings, depth.clone(), committed.clone());
            (tx, batcher)
        })
        .unzip();
    let queue_max = settings.queue_max.max(1) as u64;
    let batch_max = settings.batch_max.max(1) as u64;
    (Writer { tx: txs.into(), timeout: settings.timeout, depth, queue_max, batch_max }, batchers)
}

/// How an attempt to commit a batch failed.
enum Failure {
    /// Nothing was committed (failed before COMMIT): safe to retry.
    Retry(StoreError),
    /// The outcome is unknown (COMMIT itself failed or timed out).
    Unknown(StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room_id: i64) -> Write {
        Write::Message {
            room_id,
            sender_id: 1,
            content: "x".into(),
            client_msg_id: None,
            reply_to: None,
            mentions: vec![],
        }
    }

    struct NoSink;

    impl CommitSink for NoSink {
        type Reply = ();
        fn events(&self, _: &[RoomEvent]) {}
        fn accepted(&self, _: &(), _: &RoomEvent) {}
        fn receipts(&self, _: &[ReceiptState]) {}
        fn repeat(&self, _: &(), _: &Message) {}
        fn failed(&self, _: &(), _: &ApiError) {}
        fn unconfirmed(&self, _: &[i64]) {}
    }

    /// A room's writes always reach the same writer task: that is what keeps its seqs, its
    /// receipts and one connection's sends in order with several writers. More queued than
    /// one batch is a backlog (the search indexer yields to it).
    #[tokio::test]
    async fn a_room_always_goes_to_the_same_writer() {
        let store = Store::new("postgres://u@127.0.0.1:1/db", 2, Duration::from_millis(10)).unwrap();
        let notify = Arc::new(tokio::sync::Notify::new());
        let settings = Settings {
            writers: 3,
            queue_max: 300,
            batch_max: 10,
            timeout: Duration::from_secs(5),
            outbox: false,
            reactions_max: 50,
        };
        let (writer, mut lanes) = new(store, Arc::new(NoSink), &settings, notify);
        assert_eq!(lanes.len(), 3);
        for room in [0, 1, 2, 3, 4, 5, 7, -2] {
            writer.submit(message(room), ()).unwrap();
        }
        let receipt = Write::Receipt {
            room_id: 4,
            user_id: 2,
            message_id: 9,
            seq: 1,
            sender_id: 1,
            delivered: true,
            read: false,
        };
        writer.submit(receipt, ()).unwrap();
        assert_eq!(writer.depth(), 9);
        assert!(!writer.backlogged(), "9 queued fit one batch of 10");
        writer.submit(message(8), ()).unwrap();
        writer.submit(message(9), ()).unwrap();
        assert!(writer.backlogged(), "11 queued: more than one batch");
        let seen: Vec<Vec<i64>> = lanes.iter_mut().map(|lane| lane.queued_rooms()).collect();
        assert_eq!(seen, vec![vec![0, 3, 9], vec![1, 4, 7, -2, 4], vec![2, 5, 8]]);
    }

    /// `storage.queue_max` bounds what waits while PostgreSQL does not answer, not only the
    /// channel: writes taken into the writer's pending queue still count.
    #[tokio::test(start_paused = true)]
    async fn queue_max_holds_while_postgres_is_away() {
        let store = Store::new("postgres://u@127.0.0.1:1/db", 2, Duration::from_millis(10)).unwrap();
        let settings = Settings {
            writers: 1,
            queue_max: 3,
            batch_max: 10,
            timeout: Duration::from_secs(60),
            outbox: false,
            reactions_max: 50,
        };
        let (writer, mut lanes) = new(store, Arc::new(NoSink), &settings, Arc::new(tokio::sync::Notify::new()));
        let drain = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(lanes.remove(0).run(drain.clone()));
        for _ in 0..3 {
            writer.submit(message(1), ()).unwrap();
        }
        // The writer takes them off the channel and keeps retrying (nothing listens on port 1).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let err = writer.submit(message(1), ()).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Unavailable, "three writes wait: the bound holds");
        task.abort();
    }

    #[tokio::test]
    async fn a_full_queue_answers_unavailable() {
        let store = Store::new("postgres://u@127.0.0.1:1/db", 2, Duration::from_millis(10)).unwrap();
        let settings = Settings {
            writers: 1,
            queue_max: 2,
            batch_max: 10,
            timeout: Duration::from_secs(5),
            outbox: false,
            reactions_max: 50,
        };
        let (writer, _lanes) = new(store, Arc::new(NoSink), &settings, Arc::new(tokio::sync::Notify::new()));
        writer.submit(message(1), ()).unwrap();
        writer.submit(message(1), ()).unwrap();
        let err = writer.submit(message(1), ()).unwrap_err();
        assert_eq!(err.code, crate::error::ErrorCode::Unavailable);
        assert_eq!(err.retry_after_ms, Some(RETRY_AFTER_MS));
    }
}
