//! Server-to-client frame encoding.
//!
//! Written by hand on purpose: every event is encoded ONCE into a complete WebSocket frame
//! (header + payload) and the same `Bytes` is queued to every subscriber, so the writer can
//! hand whole batches of frames to one `writev`. fastwebsockets' write half would re-frame
//! each payload per connection. Server frames are never masked (RFC 6455 §5.1).

use bytes::{BufMut, Bytes, BytesMut};

/// Text frame opcode.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
pub const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
pub const OP_PING: u8 = 0x9;
/// Pong frame opcode.
pub const OP_PONG: u8 = 0xA;

/// Room reserved in front of a payload for the largest header (2 + 8 bytes).
const HEAD_ROOM: usize = 10;

/// Builds a final frame with `opcode` around `payload` (copying the payload once).
pub fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEAD_ROOM + payload.len());
    put_header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// Builds a text frame whose payload `write` serialises straight into the frame buffer,
/// with no intermediate copy: the header is written right-aligned into reserved head room.
pub fn text_with<E>(
    size_hint: usize,
    write: impl FnOnce(&mut bytes::buf::Writer<BytesMut>) -> Result<(), E>,
) -> Result<Bytes, E> {
    let mut buf = BytesMut::with_capacity(HEAD_ROOM + size_hint);
    buf.put_bytes(0, HEAD_ROOM);
    let mut w = buf.writer();
    write(&mut w)?;
    let mut buf = w.into_inner();
    let len = buf.len() - HEAD_ROOM;
    let head = header(OP_TEXT, len);
    let start = HEAD_ROOM - head.len();
    buf[start..HEAD_ROOM].copy_from_slice(&head);
    let mut out = buf.freeze();
    bytes::Buf::advance(&mut out, start);
    Ok(out)
}

/// A close frame with a status code and a reason (truncated to fit the 125-byte limit).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut reason = reason.as_bytes();
    if reason.len() > 123 {
        reason = &reason[..123];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    encode(OP_CLOSE, &payload)
}

fn put_header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_slice(&header(opcode, len));
}

/// The frame header: FIN set, no RSV bits, unmasked.
fn header(opcode: u8, len: usize) -> HeaderBuf {
    let mut h = HeaderBuf { bytes: [0; 10], len: 0 };
    h.bytes[0] = 0x80 | (opcode & 0x0f);
    if len < 126 {
        h.bytes[1] = len as u8;
        h.len = 2;
    } else if len <= u16::MAX as usize {
        h.bytes[1] = 126;
        h.bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        h.len = 4;
    } else {
        h.bytes[1] = 127;
        h.bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        h.len = 10;
    }
    h
}

struct HeaderBuf {
    bytes: [u8; 10],
    len: usize,
}

impl std::ops::Deref for HeaderBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_frame() {
        let f = encode(OP_TEXT, b"hi");
        assert_eq!(&f[..], &[0x81, 2, b'h', b'i']);
    }

    #[test]
    fn medium_and_long_lengths() {
        let f = encode(OP_BINARY, &[7u8; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
        let f = encode(OP_TEXT, &vec![1u8; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn text_with_matches_encode() {
        for n in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; n];
            let f = text_with::<std::io::Error>(0, |w| {
                use std::io::Write;
                w.write_all(&payload)
            })
            .unwrap();
            assert_eq!(f, encode(OP_TEXT, &payload), "len {n}");
        }
    }

    #[test]
    fn close_reason_truncated() {
        let f = close(1000, &"x".repeat(500));
        assert_eq!(f[1] as usize, 125);
        assert_eq!(&f[2..4], &1000u16.to_be_bytes());
    }
}
