//! Publishes what the group commit committed: each room event and receipt is encoded once into
//! a frame and handed to the bus; idempotent repeats and refusals go back to the submitter
//! only (a connection, or a REST request waiting for its event).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::bus::Bus;
use crate::conn::{ConnState, Out};
use crate::error::ApiError;
use crate::model::{Message, ReceiptState, RoomEvent};
use crate::store::group_commit::CommitSink;
use crate::store::search_index::SearchIndex;
use crate::util::lock;
use crate::wire::server::{error_frame, event_frame, message_frame, status_frame};

/// Who submitted a write: answered for repeats and failures (a connection), or with the
/// outcome (a REST request).
pub enum Ack {
    /// A WebSocket connection: its own events come back through the bus.
    Conn {
        /// The submitting connection.
        conn: Arc<ConnState>,
        /// `client_msg_id` / `message_id` for error `ref`s.
        reference: Option<Value>,
    },
    /// A REST request waiting for the committed event or the refusal.
    Rest(Mutex<Option<oneshot::Sender<Result<RoomEvent, ApiError>>>>),
}

impl Ack {
    /// An acknowledgement for a REST request and the receiver of its outcome.
    pub fn rest() -> (Self, oneshot::Receiver<Result<RoomEvent, ApiError>>) {
        let (tx, rx) = oneshot::channel();
        (Ack::Rest(Mutex::new(Some(tx))), rx)
    }

    fn answer(&self, outcome: Result<RoomEvent, ApiError>) {
        if let Ack::Rest(tx) = self {
            if let Some(tx) = lock(tx).take() {
                let _ = tx.send(outcome);
            }
        }
    }
}

/// The [`CommitSink`] of this node.
pub struct Publisher {
    bus: Arc<Bus>,
    /// Told which rooms changed text (messages, edits, deletes), to index them off this path.
    search: Option<Arc<SearchIndex>>,
}

impl Publisher {
    /// Publishes committed rows on `bus` and tells `search` which rooms to index.
    pub fn new(bus: Arc<Bus>, search: Option<Arc<SearchIndex>>) -> Arc<Self> {
        Arc::new(Self { bus, search })
    }
}

impl CommitSink for Publisher {
    type Reply = Ack;

    fn events(&self, new: &[RoomEvent]) {
        for e in new {
            self.bus.publish_ordered(e.room_id(), e.seq(), event_frame(e), e.leaving());
        }
        if let Some(search) = &self.search {
            let mut rooms: Vec<i64> = new
                .iter()
                .filter(|e| matches!(e, RoomEvent::Message(_) | RoomEvent::Edit(_) | RoomEvent::Delete(_)))
                .map(RoomEvent::room_id)
                .collect();
            rooms.sort_unstable();
            rooms.dedup();
            search.touch(rooms);
        }
    }

    fn accepted(&self, reply: &Ack, event: &RoomEvent) {
        reply.answer(Ok(event.clone()));
    }

    fn receipts(&self, receipts: &[ReceiptState]) {
        for r in receipts {
            let frame = status_frame(r.message_id, r.room_id, r.user_id, r.delivered, r.read);
            self.bus.publish(r.room_id, frame, None);
        }
    }

    fn repeat(&self, reply: &Ack, original: &Message) {
        if let Ack::Conn { conn, .. } = reply {
            let _ = conn.outbox.push(Out::Frame(message_frame(original)));
        }
        // The original may have committed in a batch whose outcome was unknown and so never
        // reached the room: make sure the room has delivered up to it (nothing when it has).
        self.bus.catch_up(original.room_id, Some(original.seq));
    }

    fn failed(&self, reply: &Ack, error: &ApiError) {
        match reply {
            Ack::Conn { conn, reference } => {
                let _ = conn.outbox.push(Out::Frame(error_frame(error, reference.as_ref())));
            }
            Ack::Rest(_) => reply.answer(Err(error.clone())),
        }
    }

    fn unconfirmed(&self, rooms: &[i64]) {
        // The bus reads each room past what it delivered, retrying until PostgreSQL answers.
        for &room in rooms {
            self.bus.catch_up(room, None);
        }
    }
}
