//! Per-connection outbound queue: the bus and the session push, the connection's writer drains.
//!
//! Hand-rolled rather than a tokio mpsc because (a) an idle connection must cost no allocation
//! (an empty `VecDeque` allocates nothing; an mpsc allocates a block eagerly), (b) the writer
//! drains many frames under one lock to merge them into one `writev`, and (c) a full queue
//! must never block or slow the publisher: it marks the connection as a slow consumer instead.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use crate::telemetry::{self, names};
use crate::util::lock;
use bytes::Bytes;
use tokio::sync::Notify;

/// One item for the writer, in the order it must take effect.
#[derive(Debug, Clone)]
pub enum Out {
    /// A ready frame outside any room's message order (typing, presence, errors, pongs).
    Frame(Bytes),
    /// A room message frame; the writer uses `room`/`seq` to keep each room gapless and unique.
    Seq {
        /// Room.
        room: i64,
        /// Per-room sequence.
        seq: i64,
        /// Encoded `message` frame.
        frame: Bytes,
        /// When the bus published it ([`crate::util::clock::stamp`]): the writer observes
        /// publish→socket-write latency once per written batch.
        at: u64,
    },
    /// A `sync` for `room` started: hold its live messages until the replay arrives.
    Hold(i64),
    /// Replayed rows of `room` (ascending seq); the last chunk of a replay releases the hold.
    Replay {
        /// Room.
        room: i64,
        /// The seq this chunk starts after (the client's last seen seq for the first chunk).
        after: i64,
        /// (seq, encoded `message` frame), ascending.
        rows: Vec<(i64, Bytes)>,
        /// The replay's last chunk: release the room's held live frames after it.
        last: bool,
    },
    /// The replay of `room` failed: release its held live frames, the stream position unchanged
    /// (the client may `sync` again).
    Unhold(i64),
    /// All replays of one `sync` are queued: the writer answers `synced`.
    SyncDone {
        /// (room, last seq the client said it had seen).
        rooms: Vec<(i64, i64)>,
        /// A room hit `sync.max_replay`.
        more: bool,
    },
    /// The connection joined or left `room`: forget what its stream carried.
    Reset(i64),
}

/// Why and how the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReq {
    /// WebSocket close code.
    pub code: u16,
    /// Short reason (≤ 123 bytes).
    pub reason: &'static str,
    /// Send queued frames first (graceful) or drop them (slow consumer, protocol error).
    pub flush: bool,
}

struct State {
    queue: VecDeque<Out>,
    /// Frames queued: a replay chunk counts each of its rows.
    weight: usize,
    close: Option<CloseReq>,
    /// A replay waits for room ([`Outbox::wait_room`]): `drain` must signal.
    room_waiter: bool,
}

impl Out {
    /// The frames this item stands for (what the bound counts).
    fn weight(&self) -> usize {
        match self {
            Out::Replay { rows, .. } => rows.len().max(1),
            _ => 1,
        }
    }
}

/// Close for a connection that cannot keep up (it reconnects and resumes with `sync`).
pub const SLOW_CONSUMER: CloseReq = CloseReq { code: 1013, reason: "slow consumer", flush: false };

/// A connection's bounded outbound queue.
pub struct Outbox {
    state: Mutex<State>,
    /// Wakes the writer: something was queued or a close was requested.
    notify: Notify,
    /// Wakes those waiting for room or for a close ([`Outbox::wait_room`], [`Outbox::closed`]).
    signal: Notify,
    cap: usize,
}

/// The queue was full (the connection is now closing as a slow consumer) or already closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

impl Outbox {
    /// An empty outbox that holds at most `cap` frames.
    pub fn new(cap: usize) -> Self {
        let state = State { queue: VecDeque::new(), weight: 0, close: None, room_waiter: false };
        Self { state: Mutex::new(state), notify: Notify::new(), signal: Notify::new(), cap }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Queues an item. Past the bound the connection is marked slow (close 1013) and its
    /// queue dropped: it resumes with `sync` after reconnecting.
    pub fn push(&self, item: Out) -> Result<(), Rejected> {
        let mut st = self.lock();
        if st.close.is_some() {
            return Err(Rejected);
        }
        let weight = item.weight();
        if st.weight + weight > self.cap {
            // The rejected item itself is counted by the caller (the bus, per fan-out).
            telemetry::hot().dropped.increment(st.weight as u64);
            st.queue = VecDeque::new();
            st.weight = 0;
            st.close = Some(SLOW_CONSUMER);
            drop(st);
            metrics::counter!(names::WS_SLOW_CONSUMER_CLOSES_TOTAL).increment(1);
            self.notify.notify_one();
            self.signal.notify_waiters();
            return Err(Rejected);
        }
        st.weight += weight;
        st.queue.push_back(item);
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// Queues a control reply (pong) regardless of the bound; it is tiny and owed.
    pub fn push_control(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.close.is_none() {
            st.weight += 1;
            st.queue.push_back(Out::Frame(frame));
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Asks the writer to close; the first request wins.
    pub fn close(&self, req: CloseReq) {
        let mut st = self.lock();
        if st.close.is_none() {
            if !req.flush {
                st.queue = VecDeque::new();
                st.weight = 0;
            }
            st.close = Some(req);
        }
        drop(st);
        self.notify.notify_one();
        self.signal.notify_waiters();
    }

    /// Moves up to `max` queued items into `into`; returns the close request if one is pending.
    pub fn drain(&self, into: &mut Vec<Out>, max: usize) -> Option<CloseReq> {
        let mut st = self.lock();
        let n = st.queue.len().min(max);
        let start = into.len();
        into.extend(st.queue.drain(..n));
        let drained: usize = into[start..].iter().map(Out::weight).sum();
        st.weight = st.weight.saturating_sub(drained);
        if st.queue.is_empty() && st.queue.capacity() > 64 {
            // Give a burst's memory back: idle connections must stay small.
            st.queue = VecDeque::new();
        }
        let close = st.close;
        if std::mem::take(&mut st.room_waiter) && n > 0 {
            drop(st);
            self.signal.notify_waiters();
        }
        close
    }

    /// Waits until `weight` more frames fit in half the bound (the other half stays free for
    /// live events, so a replay never makes live delivery overflow), or the queue is empty.
    /// `Err` once the connection is closing. This is the backpressure of `sync` replays: a
    /// client that does not read stalls its own replay, never the server's memory.
    pub async fn wait_room(&self, weight: usize) -> Result<(), Rejected> {
        loop {
            let signalled = self.signal.notified();
            tokio::pin!(signalled);
            signalled.as_mut().enable();
            {
                let mut st = self.lock();
                if st.close.is_some() {
                    return Err(Rejected);
                }
                if st.weight == 0 || st.weight + weight <= self.cap / 2 {
                    return Ok(());
                }
                st.room_waiter = true;
            }
            signalled.await;
        }
    }

    /// Resolves once a close was requested (it interrupts a socket write in progress).
    pub async fn closed(&self) {
        loop {
            let signalled = self.signal.notified();
            tokio::pin!(signalled);
            signalled.as_mut().enable();
            if self.lock().close.is_some() {
                return;
            }
            signalled.await;
        }
    }

    /// Waits until something was pushed or a close was requested.
    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// Frames currently queued.
    pub fn len(&self) -> usize {
        self.lock().weight
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_marks_slow_consumer() {
        let o = Outbox::new(2);
        assert!(o.push(Out::Frame(Bytes::from_static(b"a"))).is_ok());
        assert!(o.push(Out::Frame(Bytes::from_static(b"b"))).is_ok());
        assert_eq!(o.push(Out::Frame(Bytes::from_static(b"c"))), Err(Rejected));
        let mut v = Vec::new();
        let close = o.drain(&mut v, 10);
        assert!(v.is_empty(), "a slow consumer's queue is dropped");
        assert_eq!(close.map(|c| c.code), Some(1013));
        assert_eq!(o.push(Out::Frame(Bytes::new())), Err(Rejected));
    }

    fn replay(rows: usize) -> Out {
        Out::Replay { room: 1, after: 0, rows: (0..rows as i64).map(|s| (s, Bytes::new())).collect(), last: true }
    }

    #[test]
    fn a_replay_counts_its_rows_against_the_bound() {
        let o = Outbox::new(10);
        o.push(replay(8)).unwrap();
        assert_eq!(o.len(), 8);
        o.push(Out::Frame(Bytes::new())).unwrap();
        o.push(Out::Frame(Bytes::new())).unwrap();
        assert_eq!(o.push(Out::Frame(Bytes::new())), Err(Rejected), "8 rows + 2 frames fill 10");
    }

    #[tokio::test]
    async fn a_replay_waits_for_room_until_the_writer_drains() {
        let o = std::sync::Arc::new(Outbox::new(10));
        o.push(replay(4)).unwrap();
        assert!(o.wait_room(1).await.is_ok(), "4 + 1 fits in half of 10");
        let waiting = tokio::spawn({
            let o = o.clone();
            async move { o.wait_room(4).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "4 + 4 does not fit in 5");
        let mut v = Vec::new();
        o.drain(&mut v, 10);
        assert_eq!(waiting.await.unwrap(), Ok(()));
        let closing = tokio::spawn({
            let o = o.clone();
            async move { (o.wait_room(1000).await, o.closed().await) }
        });
        o.push(replay(3)).unwrap();
        o.close(CloseReq { code: 1001, reason: "bye", flush: true });
        assert_eq!(closing.await.unwrap().0, Err(Rejected), "a close ends the wait");
    }

    #[test]
    fn first_close_wins_and_flush_keeps_queue() {
        let o = Outbox::new(8);
        o.push(Out::Frame(Bytes::from_static(b"a"))).unwrap();
        o.close(CloseReq { code: 1001, reason: "going away", flush: true });
        o.close(CloseReq { code: 1013, reason: "x", flush: false });
        let mut v = Vec::new();
        assert_eq!(o.drain(&mut v, 10).map(|c| c.code), Some(1001));
        assert_eq!(v.len(), 1);
    }
}
