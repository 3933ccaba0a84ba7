//! Publishes what the group commit committed: each message and receipt is encoded once into a
//! frame and handed to the bus; idempotent repeats and refusals go back to the submitting
//! connection only.

use std::sync::Arc;

use serde_json::Value;

use crate::bus::Bus;
use crate::conn::{ConnState, Out};
use crate::error::ApiError;
use crate::model::{Message, ReceiptState};
use crate::store::group_commit::CommitSink;
use crate::wire::server::{error_frame, message_frame, status_frame};

/// Who submitted a write: answered for repeats and failures.
pub struct Ack {
    /// The submitting connection.
    pub conn: Arc<ConnState>,
    /// `client_msg_id` / `message_id` for error `ref`s.
    pub reference: Option<Value>,
}

/// The [`CommitSink`] of this node.
pub struct Publisher {
    bus: Arc<Bus>,
}

impl Publisher {
    /// Publishes committed rows on `bus`.
    pub fn new(bus: Arc<Bus>) -> Arc<Self> {
        Arc::new(Self { bus })
    }
}

impl CommitSink for Publisher {
    type Reply = Ack;

    fn messages(&self, new: &[Message]) {
        for m in new {
            self.bus.publish_message(m.room_id, m.seq, message_frame(m));
        }
    }

    fn receipts(&self, receipts: &[ReceiptState]) {
        for r in receipts {
            let frame = status_frame(r.message_id, r.room_id, r.user_id, r.delivered, r.read);
            self.bus.publish(r.room_id, frame, None);
        }
    }

    fn repeat(&self, reply: &Ack, original: &Message) {
        let _ = reply.conn.outbox.push(Out::Frame(message_frame(original)));
        // The original may have committed in a batch whose outcome was unknown and so never
        // reached the room: make sure the room has delivered up to it (nothing when it has).
        self.bus.catch_up(original.room_id, Some(original.seq));
    }

    fn failed(&self, reply: &Ack, error: &ApiError) {
        let _ = reply.conn.outbox.push(Out::Frame(error_frame(error, reply.reference.as_ref())));
    }

    fn unconfirmed(&self, rooms: &[i64]) {
        // The bus reads each room past what it delivered, retrying until PostgreSQL answers.
        for &room in rooms {
            self.bus.catch_up(room, None);
        }
    }
}
