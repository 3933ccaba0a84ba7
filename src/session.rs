//! Per-connection chat state: identity, rate limits, and what each client event does.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde_json::Value;

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::presence::ConnHandle;
use crate::store::batcher::{Reply, Write};
use crate::ws::outbox::{CloseReq, Out};
use crate::ws::protocol::{self, ClientEvent, DecodeLimits, Rejected};

/// Token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { tokens: burst as f64, rate: rate as f64, burst: burst as f64, last: Instant::now() }
    }

    /// Takes a token, or says how many milliseconds until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

/// One connection's chat session.
pub struct Session {
    app: Arc<App>,
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
    /// The writer's initial hold was ended (first non-`sync` event seen).
    released: bool,
}

impl Session {
    /// A session for an authenticated, registered connection.
    pub fn new(app: Arc<App>, handle: Arc<ConnHandle>) -> Self {
        // Limits as of now: a SIGHUP reload applies to connections opened after it.
        let l = app.limits();
        let messages = TokenBucket::new(l.messages_per_sec, l.messages_burst);
        let events = TokenBucket::new(l.messages_per_sec.saturating_mul(10), l.messages_burst.saturating_mul(10));
        let strike_limit = (l.messages_burst * 2).max(10);
        let limits = DecodeLimits { content_max_chars: l.content_max_chars };
        let typing_per_sec = l.typing_per_sec;
        Self { app, handle, messages, events, strikes: 0, strike_limit, limits, typing_per_sec, released: false }
    }

    fn send(&self, frame: Bytes) {
        let _ = self.handle.conn.outbox.push(Out::Frame(frame));
    }

    fn send_error(&self, err: &ApiError, reference: Option<&Value>) {
        metrics::counter!("livechat_ws_errors_total", "code" => err.code.as_str()).increment(1);
        self.send(protocol::error_frame(err, reference));
    }

    /// Handles one text message; `Some` asks the connection to close.
    pub async fn on_text(&mut self, text: Bytes) -> Option<CloseReq> {
        let me = self.handle.user_id;
        let event = match protocol::decode(&text, me, self.limits) {
            Ok(e) => e,
            Err(Rejected { error, reference }) => {
                self.send_error(&error, reference.as_ref());
                return None;
            }
        };
        // Index into `telemetry::hot().events_in` (cached handles: no lookup per event).
        let (bucket, kind) = match &event {
            ClientEvent::Message { .. } => (&mut self.messages, 0),
            ClientEvent::Typing { .. } => (&mut self.events, 1),
            ClientEvent::StatusUpdate { .. } => (&mut self.events, 2),
            ClientEvent::Sync { .. } => (&mut self.events, 3),
        };
        crate::telemetry::hot().events_in[kind].increment(1);
        if let Err(wait_ms) = bucket.take(Instant::now()) {
            self.strikes += 1;
            if self.strikes > self.strike_limit {
                return Some(CloseReq { code: 1008, reason: "rate limit exceeded", flush: true });
            }
            let err =
                ApiError { retry_after_ms: Some(wait_ms), ..ApiError::new(ErrorCode::RateLimited, "too many events") };
            self.send_error(&err, reference_of(&event).as_ref());
            return None;
        }
        self.strikes = 0;
        if !self.released && !matches!(event, ClientEvent::Sync { .. }) {
            // Not a reconnect-and-sync client: stop holding live messages for a sync.
            self.released = true;
            let _ = self.handle.conn.outbox.push(Out::Release);
        }
        match event {
            ClientEvent::Message { room_id, content, client_msg_id } => {
                let reference = client_msg_id.clone().map(Value::String);
                if !self.handle.in_room(room_id) {
                    self.send_error(&ApiError::forbidden("you are not a member of this room"), reference.as_ref());
                    return None;
                }
                if self.app.is_draining() {
                    self.send_error(
                        &ApiError::unavailable("server is restarting, retry on another connection", 1000),
                        reference.as_ref(),
                    );
                    return None;
                }
                let write = Write::Message { room_id, sender_id: me, content, client_msg_id };
                let reply = Reply { conn: self.handle.conn.clone(), reference: reference.clone() };
                if let Err(e) = self.app.writer.submit(write, reply) {
                    self.send_error(&e, reference.as_ref());
                }
            }
            ClientEvent::Typing { room_id, start } => {
                if !self.handle.in_room(room_id) {
                    self.send_error(&ApiError::forbidden("you are not a member of this room"), None);
                } else if self.app.registry.allow_typing(me, room_id, self.typing_per_sec) {
                    self.app.bus.publish(room_id, protocol::typing_frame(room_id, me, start), Some(me));
                }
            }
            ClientEvent::StatusUpdate { message_id, delivered, read } => {
                let reference = Some(Value::from(message_id));
                let meta = match self.app.store.message_meta(message_id).await {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        self.send_error(&ApiError::not_found("no such message"), reference.as_ref());
                        return None;
                    }
                    Err(e) => {
                        self.send_error(&e.into(), reference.as_ref());
                        return None;
                    }
                };
                if !self.handle.in_room(meta.room_id) {
                    self.send_error(&ApiError::forbidden("you are not a member of this room"), reference.as_ref());
                    return None;
                }
                let write = Write::Receipt {
                    room_id: meta.room_id,
                    user_id: me,
                    message_id,
                    seq: meta.seq,
                    sender_id: meta.sender_id,
                    delivered,
                    read,
                };
                let reply = Reply { conn: self.handle.conn.clone(), reference: reference.clone() };
                if let Err(e) = self.app.writer.submit(write, reply) {
                    self.send_error(&e, reference.as_ref());
                }
            }
            ClientEvent::Sync { rooms } => self.sync(rooms).await,
        }
        None
    }

    /// Replays each listed room after its last seen seq, then answers `synced`.
    async fn sync(&mut self, rooms: Vec<(i64, i64)>) {
        let max = self.app.config.sync.max_replay;
        let mut done = Vec::with_capacity(rooms.len());
        let mut more = false;
        metrics::counter!("livechat_ws_sync_replays_total").increment(1);
        for (room, last_seen) in rooms {
            if !self.handle.in_room(room) {
                self.send_error(&ApiError::forbidden(format!("you are not a member of room {room}")), None);
                continue;
            }
            // Live messages for the room wait in the writer until the replay is queued, so
            // the client sees the room in seq order with nothing missing or repeated.
            let outbox = &self.handle.conn.outbox;
            if outbox.push(Out::Hold(room)).is_err() {
                return;
            }
            let rows = match self.app.store.messages_between(room, last_seen, i64::MAX, max + 1).await {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = outbox.push(Out::Replay { room, after: last_seen, rows: Vec::new() });
                    self.send_error(&e.into(), None);
                    continue;
                }
            };
            let mut rows: Vec<(i64, Bytes)> = rows.iter().map(|m| (m.seq, protocol::message_frame(m))).collect();
            if rows.len() as i64 > max {
                rows.truncate(max as usize);
                more = true;
            }
            metrics::counter!("livechat_ws_sync_replayed_messages_total").increment(rows.len() as u64);
            if outbox.push(Out::Replay { room, after: last_seen, rows }).is_err() {
                return;
            }
            done.push((room, last_seen));
        }
        let _ = self.handle.conn.outbox.push(Out::SyncDone { rooms: done, more });
    }
}

fn reference_of(e: &ClientEvent) -> Option<Value> {
    match e {
        ClientEvent::Message { client_msg_id, .. } => client_msg_id.clone().map(Value::String),
        ClientEvent::StatusUpdate { message_id, .. } => Some(Value::from(*message_id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 2);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait > 0 && wait <= 500, "{wait}");
        assert!(b.take(t0 + Duration::from_millis(600)).is_ok());
    }
}
