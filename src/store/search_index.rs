//! The search indexer (README "Search"): fills `search_docs` from each room's event log,
//! off the write path. The group commit only reports which rooms it wrote ([`SearchIndex::touch`]);
//! a task indexes them a moment later in rounds, each one statement that reads a room's
//! events past its persisted cursor, indexes the messages they add or change from their
//! current text, and moves the cursor. A room's seqs commit in order, so the cursor is exact:
//! nothing is skipped however commits interleave. Rooms this node did not write (another node
//! died before indexing them, an upgraded database's history) are found by a sweep at start-up
//! and every `search.sweep_secs`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_postgres::types::Type;
use tokio_util::sync::CancellationToken;

use super::Store;
use crate::error::StoreError;
use crate::telemetry::names;
use crate::util::lock;

/// Rooms remembered as written; past it the indexer sweeps instead (bounded memory).
const DIRTY_MAX: usize = 100_000;
/// Rooms per round.
const ROOMS_PER_ROUND: usize = 64;
/// Rooms a sweep picks up at most (the rest in the next sweep or as they are written).
const SWEEP_ROOMS: i64 = 10_000;
/// Pause after a failed round (PostgreSQL away): its rooms are put back for the next one.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// While the write path is backlogged, the indexer works at most this share of the time (it
/// pauses nine times as long as each round took): the group commit keeps nearly all of the
/// machine and search falls behind instead, catching up at full speed once the backlog is
/// gone (BENCHMARKS.md "Search": indexing at full speed beside `durable-max` cost it a third).
/// A server that keeps up is never paced: pacing whenever messages flowed capped indexing at
/// a tenth of its speed, and search fell behind without end at 5 k messages/s.
const BUSY_SHARE: u32 = 10;

/// One round over a set of rooms: for each, its events in (cursor, cursor + $2]; the messages
/// among them and those that edits and deletes changed are (re)indexed from their current
/// text (a deleted message's text is empty: it has no words left); cursors only move forward,
/// so two nodes indexing the same room agree. Returns the messages indexed and the rooms that
/// still have events past this round.
///
/// Every read is an index probe per room or per message (`LATERAL … OFFSET 0` cannot be
/// flattened into a join): with the plain joins, statistics taken while `messages` was
/// smaller made PostgreSQL hash-join two sequential scans of the whole table per round, so
/// a round over a few hundred new messages took ~60 ms and indexing fell behind a server
/// writing 5 k messages/s (BENCHMARKS.md "Search indexer fixes").
const ROUND_SQL: &str = "WITH span AS ( \
       SELECT r.id AS room_id, COALESCE(c.last_seq, 0) AS done, r.last_seq, \
              LEAST(r.last_seq, COALESCE(c.last_seq, 0) + $2) AS upto \
       FROM rooms r LEFT JOIN search_cursor c ON c.room_id = r.id \
       WHERE r.id = ANY($1) AND r.last_seq > COALESCE(c.last_seq, 0)), \
     changed AS ( \
       SELECT m.id FROM span s CROSS JOIN LATERAL (SELECT x.id FROM messages x \
         WHERE x.room_id = s.room_id AND x.seq > s.done AND x.seq <= s.upto OFFSET 0) m \
       UNION \
       SELECT e.message_id FROM span s CROSS JOIN LATERAL (SELECT y.message_id FROM room_events y \
         WHERE y.room_id = s.room_id AND y.seq > s.done AND y.seq <= s.upto \
           AND y.kind IN ('edit', 'delete') OFFSET 0) e), \
     docs AS ( \
       INSERT INTO search_docs (message_id, tsv) \
       SELECT m.id, to_tsvector('simple', m.content) FROM changed c \
         CROSS JOIN LATERAL (SELECT z.id, z.content FROM messages z WHERE z.id = c.id OFFSET 0) m \
       ON CONFLICT (message_id) DO UPDATE SET tsv = EXCLUDED.tsv RETURNING 1), \
     cursors AS ( \
       INSERT INTO search_cursor (room_id, last_seq) SELECT room_id, upto FROM span \
       ON CONFLICT (room_id) DO UPDATE SET last_seq = GREATEST(search_cursor.last_seq, EXCLUDED.last_seq) \
       RETURNING 1) \
     SELECT (SELECT count(*) FROM docs), ARRAY(SELECT room_id FROM span WHERE upto < last_seq), \
            (SELECT count(*) FROM cursors)";

/// Rooms with events past their cursor.
const SWEEP_SQL: &str = "SELECT r.id FROM rooms r LEFT JOIN search_cursor c ON c.room_id = r.id \
     WHERE r.last_seq > COALESCE(c.last_seq, 0) LIMIT $1";

/// The indexer's settings (`[search]`).
#[derive(Debug, Clone, Copy)]
pub struct IndexSettings {
    /// Wait after a commit before a round, to gather more.
    pub delay: Duration,
    /// Most events of one room per round.
    pub batch: i64,
    /// Between sweeps.
    pub sweep_every: Duration,
}

/// The rooms written and not yet indexed, and the task that indexes them.
pub struct SearchIndex {
    store: Store,
    settings: IndexSettings,
    dirty: Mutex<HashSet<i64>>,
    /// Whether the write path is backlogged (set once by [`SearchIndex::pace_by`]).
    backlogged: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// The dirty set overflowed: the next round sweeps.
    overflow: AtomicBool,
    wake: Notify,
}

impl SearchIndex {
    /// An indexer over `store` (run it with [`SearchIndex::run`]).
    pub fn new(store: Store, settings: IndexSettings) -> Arc<Self> {
        Arc::new(Self {
            store,
            settings,
            dirty: Mutex::new(HashSet::new()),
            backlogged: OnceLock::new(),
            overflow: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Paces the indexer while `backlogged` answers true (the group commit has more queued
    /// than it takes in one batch); without it the indexer is never paced. Set once.
    pub fn pace_by(&self, backlogged: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.backlogged.set(Box::new(backlogged));
    }

    /// Rooms that just committed events: index them soon.
    pub fn touch(&self, rooms: impl IntoIterator<Item = i64>) {
        {
            let mut dirty = lock(&self.dirty);
            for room in rooms {
                if dirty.len() >= DIRTY_MAX {
                    self.overflow.store(true, Ordering::Relaxed);
                    break;
                }
                dirty.insert(room);
            }
        }
        self.wake.notify_one();
    }

    /// Indexes until `stop`: a sweep first, then rounds whenever rooms are written, a sweep
    /// every `sweep_every`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut sweep = tokio::time::interval(self.settings.sweep_every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sweep.tick() => self.overflow.store(true, Ordering::Relaxed),
                _ = self.wake.notified() => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(self.settings.delay) => {}
                    }
                }
            }
            let caught_up = self.catch_up(&stop).await;
            if let Err(e) = caught_up {
                tracing::warn!(error = %e, "Search indexing failed; will retry.");
                self.wake.notify_one();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            } else {
                tracing::debug!("Search index caught up.");
            }
        }
    }

    /// Rounds until every known room is current (or `stop`). A failed round puts its rooms
    /// back.
    async fn catch_up(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let mut first = true;
        loop {
            // Sweep first when asked, else once the rooms found are done (a sweep that filled
            // its page asks again: an upgraded database can have more rooms behind).
            let drained = first || lock(&self.dirty).is_empty();
            first = false;
            if drained && self.overflow.swap(false, Ordering::Relaxed) {
                let found = self.sweep().await.inspect_err(|_| self.overflow.store(true, Ordering::Relaxed))?;
                if found.len() as i64 >= SWEEP_ROOMS {
                    self.overflow.store(true, Ordering::Relaxed);
                }
                lock(&self.dirty).extend(found);
            }
            if stop.is_cancelled() {
                return Ok(());
            }
            // Taken out before the round reads: a commit landing while it runs (after its
            // snapshot) touches its room again, which is then indexed by the next round.
            let rooms = self.take_round();
            if rooms.is_empty() {
                return Ok(());
            }
            let started = Instant::now();
            let behind = self.round(&rooms).await.inspect_err(|_| self.requeue(&rooms))?;
            self.requeue(&behind);
            if self.writes_busy() {
                let pause = started.elapsed() * (100 / BUSY_SHARE - 1);
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// Up to [`ROOMS_PER_ROUND`] dirty rooms, removed from the dirty set.
    fn take_round(&self) -> Vec<i64> {
        let mut dirty = lock(&self.dirty);
        metrics::gauge!(names::SEARCH_ROOMS_BEHIND).set(dirty.len() as f64);
        let rooms: Vec<i64> = dirty.iter().take(ROOMS_PER_ROUND).copied().collect();
        for room in &rooms {
            dirty.remove(room);
        }
        rooms
    }

    /// Puts `rooms` back into the dirty set (a failed round, or rooms still behind).
    fn requeue(&self, rooms: &[i64]) {
        lock(&self.dirty).extend(rooms.iter().copied());
    }

    /// The write path is backlogged: give it the machine.
    fn writes_busy(&self) -> bool {
        self.backlogged.get().is_some_and(|backlogged| backlogged())
    }

    /// One round over `rooms`; returns those still behind.
    async fn round(&self, rooms: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut c = self.store.conn().await?;
        let tx = c.transaction().await?;
        // Documents and cursors commit together, so a round lost in a crash is simply done
        // again; not waiting for its WAL flush keeps the indexer's fsyncs out of the way of
        // the group commit's, which acknowledge messages.
        // Sequential scans are ruled out too, as on the group commit's connection (see ROUND_SQL).
        tx.batch_execute("SET LOCAL synchronous_commit = off; SET LOCAL enable_seqscan = off").await?;
        let rows = tx.query_typed(ROUND_SQL, &[(&rooms, Type::INT8_ARRAY), (&self.settings.batch, Type::INT8)]).await?;
        tx.commit().await?;
        let row = rows.first().ok_or_else(|| StoreError::Db("search round returned no row".into()))?;
        metrics::counter!(names::SEARCH_INDEXED_TOTAL).increment(row.get::<_, i64>(0).max(0) as u64);
        Ok(row.get(1))
    }

    /// Rooms with events past their cursor.
    async fn sweep(&self) -> Result<Vec<i64>, StoreError> {
        let c = self.store.conn().await?;
        let rows = c.query_typed(SWEEP_SQL, &[(&SWEEP_ROOMS, Type::INT8)]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
