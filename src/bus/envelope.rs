//! What one node publishes on a room's Redis channel: already-encoded WebSocket frames, so an
//! event is serialised once in the whole cluster, not once per node.
//!
//! Binary, not JSON: the payload is frames (bytes) and the receiver must slice them out without
//! copying or escaping. Layout, integers big-endian:
//!
//! ```text
//! u8 version (1) | u8 origin length | origin node id | u8 kind | body
//! kind 1, messages: repeated { i64 seq | u32 frame length | frame }
//! kind 2, event:    i64 except user (i64::MIN = nobody) | frame (the rest)
//! kind 3, catch-up: i64 seq  (the room has committed events up to seq: read them from
//!                   PostgreSQL; sent after an envelope could not be published)
//! kind 4, leave:    i64 seq | i64 leaving user | frame  (a room event that ends a member's
//!                   delivery of the room)
//! kind 5, member:   i64 room | i64 user | i64 seq | u8 joined  (membership channel)
//! kind 6, resync:   (empty; membership channel: changes may have been lost, re-read them)
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::MemberChange;

const VERSION: u8 = 1;
const KIND_MESSAGES: u8 = 1;
const KIND_EVENT: u8 = 2;
const KIND_CATCH_UP: u8 = 3;
const KIND_LEAVE: u8 = 4;
const KIND_MEMBER: u8 = 5;
const KIND_RESYNC: u8 = 6;
const NOBODY: i64 = i64::MIN;

/// A decoded envelope.
#[derive(Debug, PartialEq, Eq)]
pub enum Envelope {
    /// Committed room messages, in seq order.
    Messages(Vec<(i64, Bytes)>),
    /// An unordered event (typing, presence, receipt) for everyone but `except_user`.
    Event {
        /// The user whose connections skip it.
        except_user: Option<i64>,
        /// The encoded frame.
        frame: Bytes,
    },
    /// The room has committed messages up to this seq that may not have been published.
    CatchUp(i64),
    /// A room event (seq, frame) after which `user` no longer receives the room.
    Leave {
        /// Seq.
        seq: i64,
        /// The member who left.
        user: i64,
        /// The encoded frame.
        frame: Bytes,
    },
    /// A membership change (on the membership channel).
    Member(MemberChange),
    /// Membership changes may have been lost: re-read them.
    Resync,
}

/// Why an envelope was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Truncated or malformed.
    #[error("malformed envelope")]
    Malformed,
    /// Written by a node of another version.
    #[error("unknown envelope version {0}")]
    Version(u8),
}

fn header(origin: &str, kind: u8, body_len: usize) -> BytesMut {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let mut b = BytesMut::with_capacity(3 + origin.len() + body_len);
    b.put_u8(VERSION);
    b.put_u8(origin.len() as u8);
    b.put_slice(origin);
    b.put_u8(kind);
    b
}

/// Encodes committed messages (seq, frame) of one room.
pub fn messages<'a>(origin: &str, msgs: impl Iterator<Item = (i64, &'a Bytes)> + Clone) -> Bytes {
    let len: usize = msgs.clone().map(|(_, f)| 12 + f.len()).sum();
    let mut b = header(origin, KIND_MESSAGES, len);
    for (seq, frame) in msgs {
        b.put_i64(seq);
        b.put_u32(frame.len() as u32);
        b.put_slice(frame);
    }
    b.freeze()
}

/// Encodes an unordered event.
pub fn event(origin: &str, except_user: Option<i64>, frame: &[u8]) -> Bytes {
    let mut b = header(origin, KIND_EVENT, 8 + frame.len());
    b.put_i64(except_user.unwrap_or(NOBODY));
    b.put_slice(frame);
    b.freeze()
}

/// Encodes a catch-up hint.
pub fn catch_up(origin: &str, seq: i64) -> Bytes {
    let mut b = header(origin, KIND_CATCH_UP, 8);
    b.put_i64(seq);
    b.freeze()
}

/// Encodes a room event that ends `user`'s delivery of the room.
pub fn leave(origin: &str, seq: i64, user: i64, frame: &[u8]) -> Bytes {
    let mut b = header(origin, KIND_LEAVE, 16 + frame.len());
    b.put_i64(seq);
    b.put_i64(user);
    b.put_slice(frame);
    b.freeze()
}

/// Encodes a membership change.
pub fn member(origin: &str, c: MemberChange) -> Bytes {
    let mut b = header(origin, KIND_MEMBER, 25);
    b.put_i64(c.room);
    b.put_i64(c.user);
    b.put_i64(c.seq);
    b.put_u8(c.join as u8);
    b.freeze()
}

/// Encodes a membership re-sync request.
pub fn resync(origin: &str) -> Bytes {
    header(origin, KIND_RESYNC, 0).freeze()
}

/// Splits an envelope into its origin node and its content; frames are slices of `raw`.
pub fn decode(raw: Bytes) -> Result<(Bytes, Envelope), EnvelopeError> {
    let mut b = raw;
    if b.remaining() < 2 {
        return Err(EnvelopeError::Malformed);
    }
    let version = b.get_u8();
    if version != VERSION {
        return Err(EnvelopeError::Version(version));
    }
    let origin_len = b.get_u8() as usize;
    if b.remaining() < origin_len + 1 {
        return Err(EnvelopeError::Malformed);
    }
    let origin = b.split_to(origin_len);
    let envelope = match b.get_u8() {
        KIND_MESSAGES => {
            let mut msgs = Vec::new();
            while b.has_remaining() {
                if b.remaining() < 12 {
                    return Err(EnvelopeError::Malformed);
                }
                let seq = b.get_i64();
                let len = b.get_u32() as usize;
                if b.remaining() < len {
                    return Err(EnvelopeError::Malformed);
                }
                msgs.push((seq, b.split_to(len)));
            }
            Envelope::Messages(msgs)
        }
        KIND_EVENT if b.remaining() >= 8 => {
            let except = b.get_i64();
            Envelope::Event { except_user: (except != NOBODY).then_some(except), frame: b }
        }
        KIND_CATCH_UP if b.remaining() == 8 => Envelope::CatchUp(b.get_i64()),
        KIND_LEAVE if b.remaining() >= 16 => {
            let (seq, user) = (b.get_i64(), b.get_i64());
            Envelope::Leave { seq, user, frame: b }
        }
        KIND_MEMBER if b.remaining() == 25 => {
            let (room, user, seq) = (b.get_i64(), b.get_i64(), b.get_i64());
            Envelope::Member(MemberChange { room, user, seq, join: b.get_u8() != 0 })
        }
        KIND_RESYNC if !b.has_remaining() => Envelope::Resync,
        _ => return Err(EnvelopeError::Malformed),
    };
    Ok((origin, envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let frames = [Bytes::from_static(b"one"), Bytes::from_static(b""), Bytes::from_static(b"three")];
        let raw = messages("node-a", [(5, &frames[0]), (6, &frames[1]), (7, &frames[2])].into_iter());
        let (origin, env) = decode(raw).unwrap();
        assert_eq!(&origin[..], b"node-a");
        assert_eq!(
            env,
            Envelope::Messages(vec![(5, frames[0].clone()), (6, frames[1].clone()), (7, frames[2].clone())])
        );
    }

    #[test]
    fn event_and_catch_up_round_trip() {
        let (_, env) = decode(event("n", Some(42), b"typing")).unwrap();
        assert_eq!(env, Envelope::Event { except_user: Some(42), frame: Bytes::from_static(b"typing") });
        let (_, env) = decode(event("n", None, b"x")).unwrap();
        assert_eq!(env, Envelope::Event { except_user: None, frame: Bytes::from_static(b"x") });
        let (origin, env) = decode(catch_up("", 99)).unwrap();
        assert!(origin.is_empty());
        assert_eq!(env, Envelope::CatchUp(99));
    }

    #[test]
    fn membership_round_trip() {
        let (_, env) = decode(leave("n", 7, 42, b"bye")).unwrap();
        assert_eq!(env, Envelope::Leave { seq: 7, user: 42, frame: Bytes::from_static(b"bye") });
        let c = MemberChange { room: 3, user: 9, seq: 11, join: true };
        assert_eq!(decode(member("n", c)).unwrap().1, Envelope::Member(c));
        assert_eq!(decode(resync("n")).unwrap().1, Envelope::Resync);
        let mut short = member("n", c).to_vec();
        short.pop();
        assert_eq!(decode(Bytes::from(short)), Err(EnvelopeError::Malformed));
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(decode(Bytes::from_static(b"")), Err(EnvelopeError::Malformed));
        assert_eq!(decode(Bytes::from_static(b"\x02\x00\x01")), Err(EnvelopeError::Version(2)));
        // Origin longer than the payload.
        assert_eq!(decode(Bytes::from_static(b"\x01\x09ab")), Err(EnvelopeError::Malformed));
        // A frame length past the end.
        let mut raw = messages("n", [(1, &Bytes::from_static(b"abc"))].into_iter()).to_vec();
        raw.truncate(raw.len() - 1);
        assert_eq!(decode(Bytes::from(raw)), Err(EnvelopeError::Malformed));
        // Unknown kind.
        assert_eq!(decode(Bytes::from_static(b"\x01\x00\x09")), Err(EnvelopeError::Malformed));
    }
}
