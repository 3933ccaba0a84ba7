//! Replaying a room's committed events into one connection's outbox: a client's `sync`, and
//! the replay that starts a just-joined room on a member's connections (README "Room
//! events"). Chunks are queued only once the outbox has room for them, so a client that stops
//! reading stalls its own replay (until the socket write deadline drops it) and the server
//! never buffers more than the outbound bound.

use bytes::Bytes;

use super::History;
use crate::conn::{ConnState, Out};
use crate::error::StoreError;
use crate::wire::server::event_frame;

/// Events per replay chunk (and per read of the history).
const CHUNK: i64 = 256;

/// How a replay ended.
pub enum Replayed {
    /// Queued whole; `capped` when the room had more than `max` events to replay.
    Done {
        /// The room has more events past the replay.
        capped: bool,
    },
    /// The history could not be read; the room's held live events were released.
    Failed(StoreError),
    /// The connection is closing.
    Closed,
}

/// Queues `room`'s events after `after` (at most `max`) into `conn`'s outbox, the last chunk
/// releasing the room's live events held since the caller's `Out::Hold`. `on_chunk` is told
/// each chunk's size (metrics).
pub async fn replay_into<H: History + ?Sized>(
    history: &H,
    conn: &ConnState,
    room: i64,
    mut after: i64,
    max: i64,
    mut on_chunk: impl FnMut(usize),
) -> Replayed {
    let mut sent = 0i64;
    loop {
        let want = CHUNK.min(max - sent);
        // One row past the cap tells whether there is more.
        let rows = match history.between(room, after, i64::MAX, want + 1).await {
            Ok(rows) => rows,
            Err(e) => {
                let _ = conn.outbox.push(Out::Unhold(room));
                return Replayed::Failed(e);
            }
        };
        let more_rows = rows.len() as i64 > want;
        let chunk: Vec<(i64, Bytes)> = rows.iter().take(want as usize).map(|e| (e.seq(), event_frame(e))).collect();
        sent += chunk.len() as i64;
        let last = !more_rows || sent >= max;
        on_chunk(chunk.len());
        if conn.outbox.wait_room(chunk.len()).await.is_err() {
            return Replayed::Closed;
        }
        let chunk_after = after;
        after = chunk.last().map_or(after, |(seq, _)| *seq);
        if conn.outbox.push(Out::Replay { room, after: chunk_after, rows: chunk, last }).is_err() {
            return Replayed::Closed;
        }
        if last {
            return Replayed::Done { capped: more_rows };
        }
    }
}
