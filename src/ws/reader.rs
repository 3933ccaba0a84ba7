//! The connection's read side: fastwebsockets parses frames; this layer closes the RFC 6455
//! gaps fastwebsockets 0.10 leaves open: unmasked client frames, control frames
//! over 125 bytes, fragmented messages past the size limit, UTF-8 across fragments, and it
//! answers pings and close frames through the connection's single writer so byte order holds.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use fastwebsockets::{OpCode, Payload, WebSocketError, WebSocketRead};
use tokio::io::{AsyncRead, ReadBuf};

use crate::conn::{CloseReq, ConnState};
use crate::wire::frame;

/// A complete data message.
#[derive(Debug)]
pub enum Message {
    /// Text (valid UTF-8).
    Text(Bytes),
    /// Binary.
    Binary(Bytes),
}

/// How reading ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The peer sent a close frame; echo this close.
    PeerClosed(CloseReq),
    /// A protocol violation: close with this.
    Violation(CloseReq),
    /// The socket is gone (EOF, reset): nothing can be sent.
    Gone,
}

/// Frames queued before the violation (e.g. echoes of earlier valid messages) still go out
/// before our Close: RFC 6455 only forbids data AFTER it.
const fn violation(code: u16, reason: &'static str) -> ReadEnd {
    ReadEnd::Violation(CloseReq { code, reason, flush: true })
}

/// Reads whole messages off a server-side WebSocket.
pub struct FrameReader<R> {
    ws: WebSocketRead<R>,
    max_message: usize,
    /// Opcode and bytes of a fragmented message in progress.
    partial: Option<(OpCode, BytesMut)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps the read half of an upgraded socket.
    pub fn new(read: R, max_message: usize) -> Self {
        let (mut ws, _unused_write) =
            fastwebsockets::after_handshake_split(read, tokio::io::sink(), fastwebsockets::Role::Server);
        // Pongs and close replies go through our own writer (one byte stream, one writer).
        ws.set_auto_close(false);
        ws.set_auto_pong(false);
        // fastwebsockets refuses `len >= max`; our limit is inclusive.
        ws.set_max_message_size(max_message.saturating_add(1));
        Self { ws, max_message, partial: None }
    }

    /// Reads until a complete message, answering control frames on the way.
    ///
    /// Not cancel-safe (fastwebsockets' `read_frame` is not): only drop it with the connection.
    pub async fn next(&mut self, shared: &ConnState) -> Result<Message, ReadEnd> {
        loop {
            let mut noop = |_| async { Ok::<(), std::io::Error>(()) };
            let mut frame = match self.ws.read_frame(&mut noop).await {
                Ok(f) => f,
                Err(e) => return Err(map_error(e)),
            };
            shared.touch();
            let mut head = [0u8; 16];
            frame.fmt_head(&mut head);
            if head[1] & 0x80 == 0 {
                return Err(violation(1002, "client frames must be masked"));
            }
            let payload = into_bytes(frame.payload);
            match frame.opcode {
                OpCode::Close => return Err(close_reply(&payload)),
                OpCode::Ping => {
                    if payload.len() > 125 {
                        return Err(violation(1002, "control frame too large"));
                    }
                    shared.outbox.push_control(frame::encode(frame::OP_PONG, &payload));
                }
                OpCode::Pong => {
                    if payload.len() > 125 {
                        return Err(violation(1002, "control frame too large"));
                    }
                }
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(violation(1002, "new message inside a fragmented one"));
                    }
                    if frame.fin {
                        // fastwebsockets already validated a single text frame's UTF-8.
                        return Ok(if frame.opcode == OpCode::Text {
                            Message::Text(payload)
                        } else {
                            Message::Binary(payload)
                        });
                    }
                    self.partial = Some((frame.opcode, BytesMut::from(&payload[..])));
                }
                OpCode::Continuation => {
                    let Some((opcode, mut buf)) = self.partial.take() else {
                        return Err(violation(1002, "continuation without a message"));
                    };
                    if buf.len() + payload.len() > self.max_message {
                        return Err(violation(1009, "message too big"));
                    }
                    buf.extend_from_slice(&payload);
                    if !frame.fin {
                        self.partial = Some((opcode, buf));
                        continue;
                    }
                    let data = buf.freeze();
                    if opcode == OpCode::Text {
                        if std::str::from_utf8(&data).is_err() {
                            return Err(violation(1007, "invalid UTF-8"));
                        }
                        return Ok(Message::Text(data));
                    }
                    return Ok(Message::Binary(data));
                }
            }
        }
    }
}

fn into_bytes(p: Payload<'_>) -> Bytes {
    match p {
        Payload::Bytes(b) => b.freeze(),
        other => Bytes::copy_from_slice(&other),
    }
}

/// Validates a peer's close frame and picks the code to echo (RFC 6455 §5.5.1, §7.4).
fn close_reply(payload: &[u8]) -> ReadEnd {
    match payload.len() {
        0 => ReadEnd::PeerClosed(CloseReq { code: 1000, reason: "", flush: false }),
        1 => violation(1002, "bad close frame"),
        n if n > 125 => violation(1002, "control frame too large"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                violation(1002, "bad close code")
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                violation(1007, "invalid UTF-8 in close reason")
            } else {
                ReadEnd::PeerClosed(CloseReq { code, reason: "", flush: false })
            }
        }
    }
}

fn map_error(e: WebSocketError) -> ReadEnd {
    match e {
        WebSocketError::InvalidUTF8 => violation(1007, "invalid UTF-8"),
        WebSocketError::FrameTooLarge => violation(1009, "message too big"),
        WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => ReadEnd::Gone,
        // Reserved bits, unknown opcode, fragmented control frame, oversized ping, ...
        _ => violation(1002, "protocol error"),
    }
}

/// The socket's read half with the bytes hyper had already read past the upgrade put back
/// in front (taken out of hyper's buffer so that buffer is freed; see `ws::finish_upgrade`).
pub struct Prefixed<R> {
    prefix: Option<Bytes>,
    inner: R,
}

impl<R> Prefixed<R> {
    /// `prefix` may be empty.
    pub fn new(prefix: Bytes, inner: R) -> Self {
        Self { prefix: (!prefix.is_empty()).then_some(prefix), inner }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = &mut self.prefix {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        assert!(matches!(close_reply(&[]), ReadEnd::PeerClosed(c) if c.code == 1000));
        assert!(matches!(close_reply(&[3]), ReadEnd::Violation(c) if c.code == 1002));
        assert!(matches!(close_reply(&1005u16.to_be_bytes()), ReadEnd::Violation(c) if c.code == 1002));
        assert!(matches!(close_reply(&4000u16.to_be_bytes()), ReadEnd::PeerClosed(c) if c.code == 4000));
        let mut bad = 1000u16.to_be_bytes().to_vec();
        bad.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(close_reply(&bad), ReadEnd::Violation(c) if c.code == 1007));
    }

    #[tokio::test]
    async fn prefix_is_read_first() {
        use tokio::io::AsyncReadExt;
        let mut r = Prefixed::new(Bytes::from_static(b"abc"), &b"def"[..]);
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "abcdef");
    }
}
