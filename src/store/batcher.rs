//! The group-commit writer for messages and receipts.
//!
//! One task drains everything queued and writes it in ONE transaction, then publishes the
//! committed rows to the bus. No timer: under light load a batch is one message and latency is
//! one round trip; under load batches grow to `storage.batch_max` while the previous one
//! commits. Per-room seqs are reserved inside the transaction (`UPDATE rooms ... RETURNING`), so
//! seq order is commit order. Durable before visible: nothing is published before COMMIT.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queries::message_from_row;
use super::Store;
use crate::bus::Bus;
use crate::error::{ApiError, StoreError};
use crate::ws::outbox::Out;
use crate::ws::protocol::{self, MessageEvent};
use crate::ws::writer::ConnShared;

/// What to write.
#[derive(Debug)]
pub enum Write {
    /// A new message.
    Message {
        /// Room (membership already checked).
        room_id: i64,
        /// Author.
        sender_id: i64,
        /// Text.
        content: String,
        /// Idempotency key.
        client_msg_id: Option<String>,
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

/// Where the outcome goes when it is not a bus event (errors, idempotent re-echo).
pub struct Reply {
    /// The submitting connection.
    pub conn: Arc<ConnShared>,
    /// `client_msg_id` / `message_id` for error `ref`s.
    pub reference: Option<Value>,
}

struct Request {
    write: Write,
    reply: Reply,
    deadline: Instant,
}

/// Handle to submit writes. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
    timeout: Duration,
    depth: Arc<AtomicU64>,
}

/// Retry hint sent with `unavailable`.
const RETRY_AFTER_MS: u64 = 1000;

impl Writer {
    /// Queues a write; a full queue answers `unavailable` at once (backpressure, not loss).
    pub fn submit(&self, write: Write, reply: Reply) -> Result<(), ApiError> {
        let req = Request { write, reply, deadline: Instant::now() + self.timeout };
        match self.tx.try_send(req) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                metrics::counter!("livechat_storage_unavailable_total").increment(1);
                Err(ApiError::unavailable("the write queue is full, retry later", RETRY_AFTER_MS))
            }
        }
    }

    /// Writes queued and not yet committed.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }
}

/// The writer task.
pub struct Batcher {
    rx: mpsc::Receiver<Request>,
    store: Store,
    bus: Arc<Bus>,
    batch_max: usize,
    timeout: Duration,
    depth: Arc<AtomicU64>,
    /// Write notification outbox rows in each batch.
    outbox: bool,
    /// Woken after a commit that wrote outbox rows.
    committed: Arc<tokio::sync::Notify>,
}

/// Creates the writer handle and its task (run it with [`Batcher::run`]).
///
/// With `outbox`, every batch also writes one `notify_outbox` row per new message, and
/// `committed` is notified after such a commit (the notification relay waits on it).
pub fn new(
    store: Store,
    bus: Arc<Bus>,
    queue_max: usize,
    batch_max: usize,
    timeout: Duration,
    outbox: bool,
    committed: Arc<tokio::sync::Notify>,
) -> (Writer, Batcher) {
    let (tx, rx) = mpsc::channel(queue_max.max(1));
    let depth = Arc::new(AtomicU64::new(0));
    let batcher = Batcher { rx, store, bus, batch_max, timeout, depth: depth.clone(), outbox, committed };
    (Writer { tx, timeout, depth }, batcher)
}

/// How an attempt to commit a batch failed.
enum Failure {
    /// Nothing was committed (failed before COMMIT): safe to retry.
    Retry(StoreError),
    /// The outcome is unknown (COMMIT itself failed or timed out).
    Unknown(StoreError),
}

/// A committed receipt as the room sees it: the message's booleans after the update.
struct ReceiptRelay {
    room_id: i64,
    user_id: i64,
    message_id: i64,
    delivered: bool,
    read: bool,
}

/// A receipt of the batch, by position.
struct ReceiptRow {
    pos: usize,
    room_id: i64,
    user_id: i64,
    message_id: i64,
    seq: i64,
    sender_id: i64,
    delivered: bool,
    read: bool,
}

/// A committed batch: what to publish and whom to answer.
struct Committed {
    /// New messages per batch position.
    new: Vec<(usize, MessageEvent)>,
    /// Idempotent repeats: batch position → the original row.
    repeats: Vec<(usize, MessageEvent)>,
    /// Receipts: batch position → the relay to publish.
    receipts: Vec<(usize, ReceiptRelay)>,
    /// Positions that failed on their own (e.g. unknown room).
    failed: Vec<(usize, ApiError)>,
}

impl Batcher {
    /// Runs until `drain` is cancelled, then commits everything still queued and returns.
    pub async fn run(mut self, drain: CancellationToken) {
        let mut pending: VecDeque<Request> = VecDeque::new();
        let mut backoff = Duration::from_millis(50);
        let mut closed = false;
        loop {
            if !closed && drain.is_cancelled() {
                // New writes now get `unavailable` at once; what is queued still commits.
                self.rx.close();
                closed = true;
            }
            if pending.is_empty() {
                tokio::select! {
                    r = self.rx.recv() => match r {
                        Some(r) => pending.push_back(r),
                        None => return,
                    },
                    _ = drain.cancelled(), if !closed => continue,
                }
            }
            while let Ok(r) = self.rx.try_recv() {
                pending.push_back(r);
            }
            self.expire(&mut pending);
            if pending.is_empty() {
                continue;
            }
            let n = pending.len().min(self.batch_max);
            let batch: Vec<Request> = pending.drain(..n).collect();
            match self.commit(&batch).await {
                Ok(done) => {
                    backoff = Duration::from_millis(50);
                    self.depth.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    self.finish(batch, done);
                }
                Err(Failure::Retry(e)) => {
                    tracing::warn!(error = %e, rows = batch.len(), "Batch not committed; will retry.");
                    metrics::counter!("livechat_storage_batch_retries_total").increment(1);
                    for r in batch.into_iter().rev() {
                        pending.push_front(r);
                    }
                    // Keep accepting (bounded by the channel) and expiring while PostgreSQL is away.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(Failure::Unknown(e)) => {
                    tracing::error!(error = %e, rows = batch.len(), "Commit outcome unknown; answering unavailable.");
                    self.depth.fetch_sub(batch.len() as u64, Ordering::Relaxed);
                    for r in batch {
                        unavailable(&r.reply, "storage did not confirm the write; retry with the same client_msg_id");
                    }
                }
            }
        }
    }

    /// Answers `unavailable` to requests past their deadline.
    fn expire(&self, pending: &mut VecDeque<Request>) {
        let now = Instant::now();
        let before = pending.len();
        pending.retain(|r| {
            if r.deadline <= now {
                unavailable(&r.reply, "storage is slow or down; retry with the same client_msg_id");
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

    async fn commit(&self, batch: &[Request]) -> Result<Committed, Failure> {
        let started = std::time::Instant::now();
        let out = match tokio::time::timeout(self.timeout, self.try_commit(batch)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Unknown(StoreError::Unavailable("commit timed out".into()))),
        };
        metrics::histogram!("livechat_storage_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("livechat_storage_batch_rows").record(batch.len() as f64);
        out
    }

    async fn try_commit(&self, batch: &[Request]) -> Result<Committed, Failure> {
        let mut conn = self.store.conn().await.map_err(Failure::Retry)?;
        let tx = conn.transaction().await.map_err(|e| Failure::Retry(e.into()))?;
        let mut done = Committed { new: Vec::new(), repeats: Vec::new(), receipts: Vec::new(), failed: Vec::new() };
        let retry = |e: tokio_postgres::Error| Failure::Retry(e.into());

        // --- messages ---
        let msgs: Vec<(usize, i64, i64, &str, Option<&str>)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match &r.write {
                Write::Message { room_id, sender_id, content, client_msg_id } => {
                    Some((i, *room_id, *sender_id, content.as_str(), client_msg_id.as_deref()))
                }
                Write::Receipt { .. } => None,
            })
            .collect();
        if !msgs.is_empty() {
            // Idempotency: rows already stored for (sender, client_msg_id), and repeats inside
            // this batch, get the original instead of a new row.
            let keyed: Vec<(i64, String)> = msgs.iter().filter_map(|m| m.4.map(|k| (m.2, k.to_string()))).collect();
            let mut existing: HashMap<(i64, String), MessageEvent> = HashMap::new();
            if !keyed.is_empty() {
                let senders: Vec<i64> = keyed.iter().map(|k| k.0).collect();
                let keys: Vec<&str> = keyed.iter().map(|k| k.1.as_str()).collect();
                let rows = tx
                    .query(
                        "SELECT id, room_id, seq, sender_id, content, created_at, client_msg_id FROM messages \
                         WHERE (sender_id, client_msg_id) IN \
                         (SELECT * FROM unnest($1::BIGINT[], $2::TEXT[]))",
                        &[&senders, &keys],
                    )
                    .await
                    .map_err(retry)?;
                for r in &rows {
                    let m = message_from_row(r);
                    if let Some(k) = m.client_msg_id.clone() {
                        existing.insert((m.sender_id, k), m);
                    }
                }
            }
            let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
            let mut fresh: Vec<&(usize, i64, i64, &str, Option<&str>)> = Vec::new();
            let mut in_batch_repeats: Vec<(usize, usize)> = Vec::new(); // (pos, pos of original)
            for m in &msgs {
                if let Some(k) = m.4 {
                    if let Some(orig) = existing.get(&(m.2, k.to_string())) {
                        done.repeats.push((m.0, orig.clone()));
                        continue;
                    }
                    if let Some(&orig_pos) = first_of.get(&(m.2, k)) {
                        in_batch_repeats.push((m.0, orig_pos));
                        continue;
                    }
                    first_of.insert((m.2, k), m.0);
                }
                fresh.push(m);
            }
            if !fresh.is_empty() {
                // Reserve seq ranges; rooms locked in id order so concurrent nodes cannot deadlock.
                let mut counts: HashMap<i64, i64> = HashMap::new();
                for m in &fresh {
                    *counts.entry(m.1).or_default() += 1;
                }
                let mut room_ids: Vec<i64> = counts.keys().copied().collect();
                room_ids.sort_unstable();
                let ns: Vec<i64> = room_ids.iter().map(|r| counts[r]).collect();
                tx.query("SELECT id FROM rooms WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&room_ids])
                    .await
                    .map_err(retry)?;
                let rows = tx
                    .query(
                        "UPDATE rooms SET last_seq = rooms.last_seq + v.n \
                         FROM unnest($1::BIGINT[], $2::BIGINT[]) AS v(id, n) \
                         WHERE rooms.id = v.id RETURNING rooms.id, rooms.last_seq",
                        &[&room_ids, &ns],
                    )
                    .await
                    .map_err(retry)?;
                // next seq to hand out per room
                let mut next: HashMap<i64, i64> = rows
                    .iter()
                    .map(|r| {
                        let id: i64 = r.get(0);
                        let last: i64 = r.get(1);
                        (id, last - counts[&id] + 1)
                    })
                    .collect();
                let mut ins_room = Vec::with_capacity(fresh.len());
                let mut ins_seq = Vec::with_capacity(fresh.len());
                let mut ins_sender = Vec::with_capacity(fresh.len());
                let mut ins_content = Vec::with_capacity(fresh.len());
                let mut ins_key = Vec::with_capacity(fresh.len());
                let mut pos_of_seq: HashMap<(i64, i64), usize> = HashMap::new();
                for m in &fresh {
                    let Some(seq) = next.get_mut(&m.1) else {
                        done.failed.push((m.0, ApiError::not_found("no such room")));
                        continue;
                    };
                    pos_of_seq.insert((m.1, *seq), m.0);
                    ins_room.push(m.1);
                    ins_seq.push(*seq);
                    ins_sender.push(m.2);
                    ins_content.push(m.3);
                    ins_key.push(m.4);
                    *seq += 1;
                }
                let rows = tx
                    .query(
                        "INSERT INTO messages (room_id, seq, sender_id, content, client_msg_id) \
                         SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[]) \
                         RETURNING id, room_id, seq, sender_id, content, created_at, client_msg_id",
                        &[&ins_room, &ins_seq, &ins_sender, &ins_content, &ins_key],
                    )
                    .await
                    .map_err(retry)?;
                for r in &rows {
                    let m = message_from_row(r);
                    if let Some(&pos) = pos_of_seq.get(&(m.room_id, m.seq)) {
                        done.new.push((pos, m));
                    }
                }
                done.new.sort_by_key(|(_, m)| (m.room_id, m.seq));
                if self.outbox {
                    let ids: Vec<i64> = done.new.iter().map(|(_, m)| m.id).collect();
                    tx.execute("INSERT INTO notify_outbox (message_id) SELECT unnest($1::BIGINT[])", &[&ids])
                        .await
                        .map_err(retry)?;
                }
                let by_pos: HashMap<usize, &MessageEvent> = done.new.iter().map(|(p, m)| (*p, m)).collect();
                for (pos, orig_pos) in in_batch_repeats {
                    if let Some(m) = by_pos.get(&orig_pos) {
                        done.repeats.push((pos, (*m).clone()));
                    }
                }
            }
        }

        // --- receipts: coalesced into one watermark update per (room, user) ---
        let receipts: Vec<ReceiptRow> = batch
            .iter()
            .enumerate()
            .filter_map(|(pos, r)| match r.write {
                Write::Receipt { room_id, user_id, message_id, seq, sender_id, delivered, read } => {
                    Some(ReceiptRow { pos, room_id, user_id, message_id, seq, sender_id, delivered, read })
                }
                Write::Message { .. } => None,
            })
            .collect();
        if !receipts.is_empty() {
            let mut marks: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
            let mut flags: HashMap<i64, (bool, bool)> = HashMap::new();
            for rc in &receipts {
                let e = marks.entry((rc.room_id, rc.user_id)).or_default();
                if rc.delivered || rc.read {
                    e.0 = e.0.max(rc.seq);
                }
                if rc.read {
                    e.1 = e.1.max(rc.seq);
                }
                let f = flags.entry(rc.message_id).or_default();
                if rc.user_id != rc.sender_id {
                    f.0 |= rc.delivered || rc.read;
                    f.1 |= rc.read;
                }
            }
            let (mut rooms, mut users, mut ds, mut rs) = (vec![], vec![], vec![], vec![]);
            for ((room, user), (d, r)) in &marks {
                rooms.push(*room);
                users.push(*user);
                ds.push(*d);
                rs.push(*r);
            }
            tx.execute(
                "UPDATE room_members m SET delivered_seq = GREATEST(m.delivered_seq, v.d), \
                        read_seq = GREATEST(m.read_seq, v.r) \
                 FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS v(room, uid, d, r) \
                 WHERE m.room_id = v.room AND m.user_id = v.uid",
                &[&rooms, &users, &ds, &rs],
            )
            .await
            .map_err(retry)?;
            let ids: Vec<i64> = flags.keys().copied().collect();
            let fd: Vec<bool> = ids.iter().map(|i| flags[i].0).collect();
            let fr: Vec<bool> = ids.iter().map(|i| flags[i].1).collect();
            tx.execute(
                "UPDATE messages m SET delivered = m.delivered OR v.d, read = m.read OR v.r \
                 FROM unnest($1::BIGINT[], $2::BOOL[], $3::BOOL[]) AS v(id, d, r) \
                 WHERE m.id = v.id AND ((v.d AND NOT m.delivered) OR (v.r AND NOT m.read))",
                &[&ids, &fd, &fr],
            )
            .await
            .map_err(retry)?;
            let rows = tx
                .query("SELECT id, delivered, read FROM messages WHERE id = ANY($1)", &[&ids])
                .await
                .map_err(retry)?;
            let state: HashMap<i64, (bool, bool)> = rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
            for rc in &receipts {
                match state.get(&rc.message_id) {
                    Some(&(delivered, read)) => done.receipts.push((
                        rc.pos,
                        ReceiptRelay {
                            room_id: rc.room_id,
                            user_id: rc.user_id,
                            message_id: rc.message_id,
                            delivered,
                            read,
                        },
                    )),
                    None => done.failed.push((rc.pos, ApiError::not_found("no such message"))),
                }
            }
        }

        tx.commit().await.map_err(|e| Failure::Unknown(e.into()))?;
        Ok(done)
    }

    /// After COMMIT: publish to the bus in seq order, then answer the submitters.
    fn finish(&self, batch: Vec<Request>, done: Committed) {
        metrics::counter!("livechat_storage_messages_committed_total").increment(done.new.len() as u64);
        if self.outbox && !done.new.is_empty() {
            self.committed.notify_one();
        }
        for (_, m) in &done.new {
            self.bus.publish_message(m.room_id, m.seq, protocol::message_frame(m));
        }
        for (_, r) in &done.receipts {
            let frame = protocol::status_frame(r.message_id, r.room_id, r.user_id, r.delivered, r.read);
            self.bus.publish(r.room_id, frame, None);
        }
        for (pos, m) in &done.repeats {
            let _ = batch[*pos].reply.conn.outbox.push(Out::Frame(protocol::message_frame(m)));
        }
        for (pos, err) in &done.failed {
            let r = &batch[*pos].reply;
            let _ = r.conn.outbox.push(Out::Frame(protocol::error_frame(err, r.reference.as_ref())));
        }
    }
}

fn unavailable(reply: &Reply, why: &str) {
    metrics::counter!("livechat_storage_unavailable_total").increment(1);
    let err = ApiError::unavailable(why, RETRY_AFTER_MS);
    let _ = reply.conn.outbox.push(Out::Frame(protocol::error_frame(&err, reply.reference.as_ref())));
}
