//! Per-connection chat state: identity, rate limits, and what each client event does.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use super::rate::TokenBucket;
use super::{Ack, Chat};
use crate::bus::replay::{replay_into, Replayed};
use crate::conn::{CloseReq, Out};
use crate::error::{ApiError, ErrorCode};
use crate::presence::ConnHandle;
use crate::store::group_commit::Write;
use crate::telemetry::{self, names};
use crate::wire::server::{error_frame, typing_frame};
use crate::wire::{decode, ClientEvent, DecodeLimits, Rejected};

/// One connection's chat session.
pub struct Session {
    chat: Arc<Chat>,
    handle: Arc<ConnHandle>,
    messages: TokenBucket,
    /// Non-message events share a looser bucket so receipts and syncs cannot flood either.
    events: TokenBucket,
    /// Rate-limited events in a row; past the threshold the connection is closed 1008.
    strikes: u32,
    strike_limit: u32,
    limits: DecodeLimits,
    /// `limits.typing_per_sec` when the connection opened.
    typing_per_sec: u32,
}

impl Session {
    /// A session for an authenticated, registered connection.
    pub fn new(chat: Arc<Chat>, handle: Arc<ConnHandle>) -> Self {
        // Limits as of now: a SIGHUP reload applies to connections opened after it.
        let l = chat.limits();
        let messages = TokenBucket::new(l.messages_per_sec, l.messages_burst);
        let events = TokenBucket::new(l.messages_per_sec.saturating_mul(10), l.messages_burst.saturating_mul(10));
        let strike_limit = (l.messages_burst * 2).max(10);
        let limits =
            DecodeLimits { content_max_chars: l.content_max_chars, sync_max_rooms: chat.settings.sync_max_rooms };
        let typing_per_sec = l.typing_per_sec;
        Self { chat, handle, messages, events, strikes: 0, strike_limit, limits, typing_per_sec }
    }

    fn send(&self, frame: Bytes) {
        let _ = self.handle.conn.outbox.push(Out::Frame(frame));
    }

    fn send_error(&self, err: &ApiError, reference: Option<&Value>) {
        metrics::counter!(names::WS_ERRORS_TOTAL, "code" => err.code.as_str()).increment(1);
        self.send(error_frame(err, reference));
    }

    /// Handles one text message; `Some` asks the connection to close.
    pub async fn on_text(&mut self, text: Bytes) -> Option<CloseReq> {
        let me = self.handle.user_id;
        let event = match decode(&text, me, self.limits) {
            Ok(e) => e,
            Err(Rejected { error, reference }) => {
                self.send_error(&error, reference.as_ref());
                return None;
            }
        };
        if let Err(close) = self.admit(&event) {
            return close;
        }
        match event {
            ClientEvent::Message { room_id, content, client_msg_id, reply_to, mentions } => {
                let write = Write::Message { room_id, sender_id: me, content, client_msg_id, reply_to, mentions };
                self.on_message(write);
            }
            ClientEvent::Edit { message_id, content } => {
                self.on_room_event(message_id, |room_id| Write::Edit { room_id, user_id: me, message_id, content })
                    .await;
            }
            ClientEvent::Delete { message_id } => {
                self.on_room_event(message_id, |room_id| Write::Delete { room_id, user_id: Some(me), message_id })
                    .await;
            }
            ClientEvent::React { message_id, emoji, on } => {
                self.on_room_event(message_id, |room_id| Write::React { room_id, user_id: me, message_id, emoji, on })
                    .await;
            }
            ClientEvent::Typing { room_id, start } => {
                if !self.handle.in_room(room_id) {
                    self.send_error(&ApiError::forbidden("you are not a member of this room"), None);
                } else if self.chat.presence.connections().allow_typing(me, room_id, self.typing_per_sec, start) {
                    self.chat.bus.publish(room_id, typing_frame(room_id, me, start), Some(me));
                }
            }
            ClientEvent::StatusUpdate { message_id, delivered, read } => {
                self.on_status(message_id, delivered, read).await;
            }
            ClientEvent::Sync { rooms } => self.sync(rooms).await,
        }
        None
    }

    /// Counts the event against its rate limit. `Err(Some(_))`: close the connection
    /// (sustained abuse); `Err(None)`: refused with `rate_limited`.
    fn admit(&mut self, event: &ClientEvent) -> Result<(), Option<CloseReq>> {
        // Index into `telemetry::hot().events_in` (cached handles: no lookup per event).
        let (bucket, kind) = match event {
            ClientEvent::Message { .. } => (&mut self.messages, 0),
            ClientEvent::Typing { .. } => (&mut self.events, 1),
            ClientEvent::StatusUpdate { .. } => (&mut self.events, 2),
            ClientEvent::Sync { .. } => (&mut self.events, 3),
            ClientEvent::Edit { .. } => (&mut self.messages, 4),
            ClientEvent::Delete { .. } => (&mut self.messages, 5),
            ClientEvent::React { .. } => (&mut self.messages, 6),
        };
        telemetry::hot().events_in[kind].increment(1);
        // A `sync` costs one token per room: one event must not buy a thousand replays.
        let cost = match event {
            ClientEvent::Sync { rooms } => u32::try_from(rooms.len()).unwrap_or(u32::MAX),
            _ => 1,
        };
        if let Err(wait_ms) = bucket.take_n(Instant::now(), cost) {
            self.strikes += 1;
            if self.strikes > self.strike_limit {
                return Err(Some(CloseReq { code: 1008, reason: "rate limit exceeded", flush: true }));
            }
            let err =
                ApiError { retry_after_ms: Some(wait_ms), ..ApiError::new(ErrorCode::RateLimited, "too many events") };
            self.send_error(&err, reference_of(event).as_ref());
            return Err(None);
        }
        self.strikes = 0;
        Ok(())
    }

    /// A new message: stored by the group commit (which checks membership), echoed once
    /// committed.
    fn on_message(&mut self, write: Write) {
        let reference = match &write {
            Write::Message { client_msg_id, .. } => client_msg_id.clone().map(Value::String),
            _ => None,
        };
        self.submit(write, reference);
    }

    /// An edit, delete or reaction of a message: routed to the message's room; authorship and
    /// membership are checked where it commits. Its event, sent to the room, is the reply.
    async fn on_room_event(&mut self, message_id: i64, write: impl FnOnce(i64) -> Write) {
        let reference = Some(Value::from(message_id));
        match self.chat.reads.message_meta(message_id).await {
            Ok(Some(meta)) => self.submit(write(meta.room_id), reference),
            Ok(None) => self.send_error(&ApiError::not_found("no such message"), reference.as_ref()),
            Err(e) => self.send_error(&e.into(), reference.as_ref()),
        }
    }

    /// Queues a write for the group commit, unless the node is draining.
    fn submit(&self, write: Write, reference: Option<Value>) {
        if self.chat.is_draining() {
            let err = ApiError::unavailable("server is restarting, retry on another connection", 1000);
            self.send_error(&err, reference.as_ref());
            return;
        }
        let reply = Ack::Conn { conn: self.handle.conn.clone(), reference: reference.clone() };
        if let Err(e) = self.chat.writer.submit(write, reply) {
            self.send_error(&e, reference.as_ref());
        }
    }

    /// A receipt: advances the caller's watermarks in the message's room (group commit).
    async fn on_status(&mut self, message_id: i64, delivered: bool, read: bool) {
        let reference = Some(Value::from(message_id));
        let meta = match self.chat.reads.message_meta(message_id).await {
            Ok(Some(m)) => m,
            Ok(None) => return self.send_error(&ApiError::not_found("no such message"), reference.as_ref()),
            Err(e) => return self.send_error(&e.into(), reference.as_ref()),
        };
        if !self.handle.in_room(meta.room_id) {
            self.send_error(&ApiError::forbidden("you are not a member of this room"), reference.as_ref());
            return;
        }
        let write = Write::Receipt {
            room_id: meta.room_id,
            user_id: self.handle.user_id,
            message_id,
            seq: meta.seq,
            sender_id: meta.sender_id,
            delivered,
            read,
        };
        self.submit(write, reference);
    }

    /// Replays each listed room after its last seen seq, then answers `synced`.
    async fn sync(&mut self, rooms: Vec<(i64, i64)>) {
        let mut done = Vec::with_capacity(rooms.len());
        let mut more = false;
        metrics::counter!(names::WS_SYNC_REPLAYS_TOTAL).increment(1);
        for (room, last_seen) in rooms {
            if !self.handle.in_room(room) {
                self.send_error(&ApiError::forbidden(format!("you are not a member of room {room}")), None);
                continue;
            }
            match self.replay(room, last_seen).await {
                Replayed::Done { capped } => {
                    more |= capped;
                    done.push((room, last_seen));
                }
                Replayed::Failed(_) => {}
                Replayed::Closed => return,
            }
        }
        let _ = self.handle.conn.outbox.push(Out::SyncDone { rooms: done, more });
    }

    /// Replays one room (`bus::replay`): live events of the room wait in the writer until the
    /// replay is queued, so the client sees the room in seq order with nothing missing or
    /// repeated.
    async fn replay(&mut self, room: i64, last_seen: i64) -> Replayed {
        let conn = &self.handle.conn;
        if conn.outbox.push(Out::Hold(room)).is_err() {
            return Replayed::Closed;
        }
        let count = |n: usize| metrics::counter!(names::WS_SYNC_REPLAYED_MESSAGES_TOTAL).increment(n as u64);
        let max = self.chat.settings.max_replay;
        let replayed = replay_into(&*self.chat.reads, conn, room, last_seen, max, count).await;
        if let Replayed::Failed(e) = &replayed {
            tracing::warn!(room, error = %e, "Sync replay failed; live delivery goes on.");
            let err = ApiError::unavailable("cannot read the room's history now; sync again later", 1000);
            self.send_error(&err, None);
        }
        replayed
    }
}

fn reference_of(e: &ClientEvent) -> Option<Value> {
    match e {
        ClientEvent::Message { client_msg_id, .. } => client_msg_id.clone().map(Value::String),
        ClientEvent::StatusUpdate { message_id, .. }
        | ClientEvent::Edit { message_id, .. }
        | ClientEvent::Delete { message_id }
        | ClientEvent::React { message_id, .. } => Some(Value::from(*message_id)),
        ClientEvent::Typing { .. } | ClientEvent::Sync { .. } => None,
    }
}

#[cfg(test)]
mod tests;
