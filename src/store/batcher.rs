//! The group-commit writer for messages and receipts.
//!
//! One task drains everything queued and writes it in ONE transaction, then publishes the
//! committed rows to the bus. No timer: under light load a batch is one message and latency is
//! one round trip; under load batches grow to `storage.batch_max` while the previous one
//! commits. Per-room seqs are reserved inside the transaction (`UPDATE rooms ... RETURNING`), so
//! seq order is commit order. Durable before visible: nothing is published before COMMIT.
//!
//! `storage.writers` such tasks run side by side, each on its own connection, and a room
//! always goes to the same one (`room_id % writers`). One writer leaves PostgreSQL idle while
//! its COMMIT waits for the WAL flush; two overlap one's flush with the other's inserts. The
//! partition keeps everything that orders a room (its seqs, its receipts, the order of one
//! connection's sends) on one task, so no cross-writer ordering is needed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use tokio_postgres::Row;

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
    /// One queue per writer task; a room's writes always go to `room_id % len`.
    tx: Arc<[mpsc::Sender<Request>]>,
    timeout: Duration,
    depth: Arc<AtomicU64>,
}

impl Write {
    fn room_id(&self) -> i64 {
        match self {
            Write::Message { room_id, .. } | Write::Receipt { room_id, .. } => *room_id,
        }
    }
}

/// Retry hint sent with `unavailable`.
const RETRY_AFTER_MS: u64 = 1000;

impl Writer {
    /// Queues a write; a full queue answers `unavailable` at once (backpressure, not loss).
    pub fn submit(&self, write: Write, reply: Reply) -> Result<(), ApiError> {
        let lane = self.tx.len().max(1);
        let tx = &self.tx[write.room_id().rem_euclid(lane as i64) as usize];
        let req = Request { write, reply, deadline: Instant::now() + self.timeout };
        match tx.try_send(req) {
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
    /// Dedicated connection (not from the pool): statements prepared once, pipelined.
    conn: Option<WriterConn>,
}

/// Creates the writer handle and its `writers` tasks (run each with [`Batcher::run`]).
///
/// With `outbox`, every batch also writes one `notify_outbox` row per new message, and
/// `committed` is notified after such a commit (the notification relay waits on it).
#[allow(clippy::too_many_arguments)]
pub fn new(
    store: Store,
    bus: Arc<Bus>,
    writers: usize,
    queue_max: usize,
    batch_max: usize,
    timeout: Duration,
    outbox: bool,
    committed: Arc<tokio::sync::Notify>,
) -> (Writer, Vec<Batcher>) {
    let writers = writers.max(1);
    let depth = Arc::new(AtomicU64::new(0));
    let (txs, batchers): (Vec<_>, Vec<_>) = (0..writers)
        .map(|_| {
            let (tx, rx) = mpsc::channel((queue_max / writers).max(1));
            let batcher = Batcher {
                rx,
                store: store.clone(),
                bus: bus.clone(),
                batch_max,
                timeout,
                depth: depth.clone(),
                outbox,
                committed: committed.clone(),
                conn: None,
            };
            (tx, batcher)
        })
        .unzip();
    (Writer { tx: txs.into(), timeout, depth }, batchers)
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

    async fn commit(&mut self, batch: &[Request]) -> Result<Committed, Failure> {
        let started = std::time::Instant::now();
        let out = match tokio::time::timeout(self.timeout, self.try_commit(batch)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Unknown(StoreError::Unavailable("commit timed out".into()))),
        };
        metrics::histogram!("livechat_storage_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("livechat_storage_batch_rows").record(batch.len() as f64);
        out
    }

    /// The writer's own connection with its prepared statements, (re)made on demand.
    async fn writer_conn(&mut self) -> Result<&WriterConn, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self.store.pool().dedicated_connection().await.map_err(StoreError::from)?;
            // The statements below are prepared once and PostgreSQL caches a generic plan
            // after five runs. On a young database that plan is made while the tables are
            // nearly empty, where scanning them whole is cheapest, and it stays cached until
            // the first ANALYZE (measured: p99 ack 49–162 ms instead of ~7 ms at 10 k msgs/s).
            // Every statement here is meant to probe indexes: DUPS_SQL is written so it can
            // only probe, and sequential scans (e.g. of `rooms` in the seq reservation) are
            // ruled out for this connection.
            client.batch_execute("SET enable_seqscan = off").await?;
            let (dups, insert, marks, flags, state) = tokio::try_join!(
                client.prepare(DUPS_SQL),
                client.prepare(INSERT_SQL),
                client.prepare(MARKS_SQL),
                client.prepare(FLAGS_SQL),
                client.prepare(STATE_SQL),
            )?;
            self.conn = Some(WriterConn { client, dups, insert, marks, flags, state });
        }
        self.conn.as_ref().ok_or_else(|| StoreError::Unavailable("no writer connection".into()))
    }

    /// Writes one batch in ONE network round trip: BEGIN, the statements and COMMIT are
    /// pipelined on the writer's connection (prepared statements are sent on first poll, in
    /// order), and seq reservation, insert and outbox rows are one statement.
    async fn try_commit(&mut self, batch: &[Request]) -> Result<Committed, Failure> {
        let outbox = self.outbox;
        let conn = self.writer_conn().await.map_err(Failure::Retry)?;
        let plan = Plan::new(batch);
        let c = &conn.client;

        let dups = async {
            if plan.keyed_senders.is_empty() {
                return Ok(Vec::new());
            }
            c.query(&conn.dups, &[&plan.keyed_senders, &plan.keyed_keys]).await
        };
        let insert = async {
            if plan.ins_room.is_empty() {
                return Ok(Vec::new());
            }
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
                [&plan.ins_room, &plan.ins_sender, &plan.ins_content, &plan.ins_key, &plan.ins_ord, &outbox];
            c.query(&conn.insert, &params).await
        };
        let receipts = async {
            if plan.mark_room.is_empty() {
                return Ok(Vec::new());
            }
            type P<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);
            let marks: [P; 4] = [&plan.mark_room, &plan.mark_user, &plan.mark_d, &plan.mark_r];
            let flags: [P; 3] = [&plan.flag_id, &plan.flag_d, &plan.flag_r];
            let state: [P; 1] = [&plan.flag_id];
            let (_, _, rows) = tokio::join!(
                c.execute(&conn.marks, &marks),
                c.execute(&conn.flags, &flags),
                c.query(&conn.state, &state),
            );
            rows
        };
        let (begin, dups, inserted, states, commit) =
            tokio::join!(c.batch_execute("BEGIN"), dups, insert, receipts, c.batch_execute("COMMIT"));

        // A statement's database error aborted the transaction: COMMIT rolled back, retry.
        let results = [begin.as_ref().err(), dups.as_ref().err(), inserted.as_ref().err(), states.as_ref().err()];
        if let Some(e) = results.into_iter().flatten().find(|e| e.as_db_error().is_some()) {
            return Err(Failure::Retry(StoreError::Db(e.to_string())));
        }
        if let Err(e) = commit {
            // The connection broke with COMMIT possibly applied.
            self.conn = None;
            return Err(Failure::Unknown(e.into()));
        }
        let (Ok(dups), Ok(inserted), Ok(states)) = (dups, inserted, states) else {
            self.conn = None;
            return Err(Failure::Unknown(StoreError::Unavailable("writer connection failed".into())));
        };
        Ok(plan.outcome(batch, &dups, &inserted, &states))
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

/// Idempotency: rows already stored for some (sender, client_msg_id) of the batch. Written as
/// one index probe per key (LATERAL + `LIMIT 1`, which PostgreSQL cannot flatten into a join):
/// as a plain `IN (SELECT … unnest …)` the cached generic plan made on a young table was a hash
/// semi-join over a bitmap scan of EVERY keyed message, so each batch read the whole table.
const DUPS_SQL: &str = "SELECT m.id, m.room_id, m.seq, m.sender_id, m.content, m.created_at, m.client_msg_id \
     FROM unnest($1::BIGINT[], $2::TEXT[]) AS k(sender_id, client_msg_id) \
     CROSS JOIN LATERAL (SELECT * FROM messages x \
         WHERE x.sender_id = k.sender_id AND x.client_msg_id = k.client_msg_id LIMIT 1) m";

/// Reserves each room's seq range (the row lock makes seq order commit order, also across
/// nodes), inserts the new messages and their notification outbox rows, and returns
/// (batch position, id, seq, created_at). Repeats of stored (sender, client_msg_id) are
/// skipped here, so they never consume a seq.
const INSERT_SQL: &str =
    "WITH v AS (SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::INT[]) \
         AS v(room_id, sender_id, content, client_msg_id, ord)), \
     fresh AS (SELECT v.* FROM v WHERE v.client_msg_id IS NULL OR NOT EXISTS \
         (SELECT 1 FROM messages m WHERE m.sender_id = v.sender_id AND m.client_msg_id = v.client_msg_id)), \
     counts AS (SELECT room_id, count(*) AS n FROM fresh GROUP BY room_id), \
     upd AS (UPDATE rooms r SET last_seq = r.last_seq + c.n FROM counts c WHERE r.id = c.room_id \
         RETURNING r.id, r.last_seq - c.n AS base), \
     numbered AS (SELECT f.*, u.base + row_number() OVER (PARTITION BY f.room_id ORDER BY f.ord) AS seq \
         FROM fresh f JOIN upd u ON u.id = f.room_id), \
     ins AS (INSERT INTO messages (room_id, seq, sender_id, content, client_msg_id) \
         SELECT room_id, seq, sender_id, content, client_msg_id FROM numbered \
         RETURNING id, room_id, seq, created_at), \
     ob AS (INSERT INTO notify_outbox (message_id) SELECT id FROM ins WHERE $6) \
     SELECT n.ord, i.id, i.seq, i.created_at FROM ins i JOIN numbered n ON n.room_id = i.room_id AND n.seq = i.seq";

/// Receipt watermarks, one row per (room, member), only ever moving forward.
const MARKS_SQL: &str = "UPDATE room_members m SET delivered_seq = GREATEST(m.delivered_seq, v.d), \
         read_seq = GREATEST(m.read_seq, v.r) \
     FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[]) AS v(room, uid, d, r) \
     WHERE m.room_id = v.room AND m.user_id = v.uid";

/// The seed's per-message booleans (touching only rows that change).
const FLAGS_SQL: &str = "UPDATE messages m SET delivered = m.delivered OR v.d, read = m.read OR v.r \
     FROM unnest($1::BIGINT[], $2::BOOL[], $3::BOOL[]) AS v(id, d, r) \
     WHERE m.id = v.id AND ((v.d AND NOT m.delivered) OR (v.r AND NOT m.read))";

/// The booleans after the update, for the relay.
const STATE_SQL: &str = "SELECT id, delivered, read FROM messages WHERE id = ANY($1)";

/// The writer's dedicated connection and its prepared statements.
struct WriterConn {
    client: tokio_postgres::Client,
    dups: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    marks: tokio_postgres::Statement,
    flags: tokio_postgres::Statement,
    state: tokio_postgres::Statement,
}

/// A batch turned into statement parameters.
#[derive(Default)]
struct Plan {
    keyed_senders: Vec<i64>,
    keyed_keys: Vec<String>,
    ins_room: Vec<i64>,
    ins_sender: Vec<i64>,
    ins_content: Vec<String>,
    ins_key: Vec<Option<String>>,
    ins_ord: Vec<i32>,
    /// (position, position of the same (sender, client_msg_id) earlier in the batch)
    in_batch_repeats: Vec<(usize, usize)>,
    mark_room: Vec<i64>,
    mark_user: Vec<i64>,
    mark_d: Vec<i64>,
    mark_r: Vec<i64>,
    flag_id: Vec<i64>,
    flag_d: Vec<bool>,
    flag_r: Vec<bool>,
    receipts: Vec<ReceiptRow>,
}

impl Plan {
    fn new(batch: &[Request]) -> Self {
        let mut p = Plan::default();
        let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
        let mut marks: HashMap<(i64, i64), (i64, i64)> = HashMap::new();
        let mut flags: HashMap<i64, (bool, bool)> = HashMap::new();
        for (pos, r) in batch.iter().enumerate() {
            match &r.write {
                Write::Message { room_id, sender_id, content, client_msg_id } => {
                    if let Some(k) = client_msg_id {
                        if let Some(&orig) = first_of.get(&(*sender_id, k.as_str())) {
                            p.in_batch_repeats.push((pos, orig));
                            continue;
                        }
                        first_of.insert((*sender_id, k.as_str()), pos);
                        p.keyed_senders.push(*sender_id);
                        p.keyed_keys.push(k.clone());
                    }
                    p.ins_room.push(*room_id);
                    p.ins_sender.push(*sender_id);
                    p.ins_content.push(content.clone());
                    p.ins_key.push(client_msg_id.clone());
                    p.ins_ord.push(pos as i32);
                }
                &Write::Receipt { room_id, user_id, message_id, seq, sender_id, delivered, read } => {
                    let e = marks.entry((room_id, user_id)).or_default();
                    if delivered || read {
                        e.0 = e.0.max(seq);
                    }
                    if read {
                        e.1 = e.1.max(seq);
                    }
                    let f = flags.entry(message_id).or_default();
                    if user_id != sender_id {
                        f.0 |= delivered || read;
                        f.1 |= read;
                    }
                    p.receipts.push(ReceiptRow { pos, room_id, user_id, message_id });
                }
            }
        }
        for ((room, user), (d, r)) in marks {
            p.mark_room.push(room);
            p.mark_user.push(user);
            p.mark_d.push(d);
            p.mark_r.push(r);
        }
        for (id, (d, r)) in flags {
            p.flag_id.push(id);
            p.flag_d.push(d);
            p.flag_r.push(r);
        }
        p
    }

    /// Maps the committed rows back to the batch's requests.
    fn outcome(&self, batch: &[Request], dups: &[Row], inserted: &[Row], states: &[Row]) -> Committed {
        let mut done = Committed { new: Vec::new(), repeats: Vec::new(), receipts: Vec::new(), failed: Vec::new() };
        let existing: HashMap<(i64, String), MessageEvent> = dups
            .iter()
            .map(message_from_row)
            .filter_map(|m| m.client_msg_id.clone().map(|k| ((m.sender_id, k), m)))
            .collect();
        let mut by_pos: HashMap<usize, MessageEvent> = HashMap::new();
        for r in inserted {
            let pos = r.get::<_, i32>(0) as usize;
            if let Some(Request { write: Write::Message { room_id, sender_id, content, client_msg_id }, .. }) =
                batch.get(pos)
            {
                let m = MessageEvent {
                    id: r.get(1),
                    room_id: *room_id,
                    seq: r.get(2),
                    sender_id: *sender_id,
                    content: content.clone(),
                    timestamp: r.get(3),
                    client_msg_id: client_msg_id.clone(),
                };
                by_pos.insert(pos, m);
            }
        }
        for &ord in &self.ins_ord {
            let pos = ord as usize;
            if by_pos.contains_key(&pos) {
                continue;
            }
            let Write::Message { sender_id, client_msg_id, .. } = &batch[pos].write else { continue };
            match client_msg_id.as_ref().and_then(|k| existing.get(&(*sender_id, k.clone()))) {
                Some(orig) => done.repeats.push((pos, orig.clone())),
                // Stored by another node between our two statements: the retry finds it.
                None => {
                    done.failed.push((pos, ApiError::unavailable("write raced another node; retry", RETRY_AFTER_MS)))
                }
            }
        }
        for &(pos, orig) in &self.in_batch_repeats {
            let original = by_pos.get(&orig).or_else(|| done.repeats.iter().find(|(p, _)| *p == orig).map(|(_, m)| m));
            match original {
                Some(m) => done.repeats.push((pos, m.clone())),
                None => done.failed.push((pos, ApiError::unavailable("write not confirmed; retry", RETRY_AFTER_MS))),
            }
        }
        done.new = by_pos.into_iter().collect();
        done.new.sort_by_key(|(_, m)| (m.room_id, m.seq));

        let state: HashMap<i64, (bool, bool)> = states.iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect();
        for rc in &self.receipts {
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
        done
    }
}

fn unavailable(reply: &Reply, why: &str) {
    metrics::counter!("livechat_storage_unavailable_total").increment(1);
    let err = ApiError::unavailable(why, RETRY_AFTER_MS);
    let _ = reply.conn.outbox.push(Out::Frame(protocol::error_frame(&err, reply.reference.as_ref())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room_id: i64) -> Write {
        Write::Message { room_id, sender_id: 1, content: "x".into(), client_msg_id: None }
    }

    /// A room's writes always reach the same writer task: that is what keeps its seqs, its
    /// receipts and one connection's sends in order with several writers.
    #[tokio::test]
    async fn a_room_always_goes_to_the_same_writer() {
        let store = Store::new("postgres://u@127.0.0.1:1/db", 2, Duration::from_millis(10)).unwrap();
        let bus = Bus::new(store.clone());
        let notify = Arc::new(tokio::sync::Notify::new());
        let (writer, mut lanes) = new(store, bus, 3, 300, 10, Duration::from_secs(5), false, notify);
        assert_eq!(lanes.len(), 3);
        let conn = Arc::new(ConnShared::new(16));
        for room in [0, 1, 2, 3, 4, 5, 7, -2] {
            writer.submit(message(room), Reply { conn: conn.clone(), reference: None }).unwrap();
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
        writer.submit(receipt, Reply { conn: conn.clone(), reference: None }).unwrap();
        assert_eq!(writer.depth(), 9);
        let mut seen: Vec<Vec<i64>> = Vec::new();
        for lane in &mut lanes {
            let mut rooms = Vec::new();
            while let Ok(r) = lane.rx.try_recv() {
                rooms.push(r.write.room_id());
            }
            seen.push(rooms);
        }
        assert_eq!(seen, vec![vec![0, 3], vec![1, 4, 7, -2, 4], vec![2, 5]]);
    }
}
