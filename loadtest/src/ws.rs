//! A minimal, allocation-light WebSocket client (RFC 6455) for load generation.
//!
//! Why hand-rolled: the receive side must parse up to ~1 M frames/s on one core. Reading a
//! 64 KiB buffer and walking every frame in it in place (no per-frame allocation, no per-frame
//! wakeup) is what makes that possible. Server frames are unmasked; client frames are masked.

use bytes::{Buf, BytesMut};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
#[allow(dead_code)]
pub const OP_BIN: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Source address for connection `i`: 127.0.0.(2 + i % 250), so that 250 × ~28k ephemeral
/// ports are available instead of ~28k. Only used when the target itself is on loopback.
pub fn source_addr(i: usize, target: &SocketAddr) -> Option<SocketAddr> {
    match target.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, (2 + i % 250) as u8)), 0))
        }
        _ => None,
    }
}

/// TCP connect from a spread source address (IP_BIND_ADDRESS_NO_PORT so the port is chosen at
/// connect time per 4-tuple, not at bind time).
pub async fn tcp_connect(target: SocketAddr, i: usize) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(src) = source_addr(i, &target) {
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                24, /* IP_BIND_ADDRESS_NO_PORT */
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(src)?;
    }
    let s = sock.connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Opens a WebSocket: TCP connect + HTTP/1.1 upgrade. Returns the stream and any bytes that
/// followed the 101 response head (already the first frames).
pub async fn connect(target: SocketAddr, i: usize, path: &str) -> io::Result<(TcpStream, BytesMut)> {
    let mut s = tcp_connect(target, i).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let n = s.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof during handshake"));
        }
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            let head = &buf[..end];
            if !(head.starts_with(b"HTTP/1.1 101") || head.starts_with(b"HTTP/1.0 101")) {
                let line = head.split(|&b| b == b'\r').next().unwrap_or(b"");
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("upgrade refused: {}", String::from_utf8_lossy(line)),
                ));
            }
            buf.advance(end + 4);
            return Ok((s, buf));
        }
        if buf.len() > 16384 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "handshake head too large"));
        }
    }
}

/// A parsed frame header: opcode, fin, header length, payload length.
#[derive(Debug, Clone, Copy)]
#[allow(dead_code)]
pub struct Head {
    /// opcode (`OP_*`)
    pub op: u8,
    /// final fragment
    pub fin: bool,
    /// header length, bytes (payload starts here)
    pub hlen: usize,
    /// payload length, bytes
    pub plen: usize,
}

/// Parses one (unmasked or masked) frame header at the start of `b`, if complete together
/// with its payload.
#[inline]
pub fn parse(b: &[u8]) -> Option<Head> {
    if b.len() < 2 {
        return None;
    }
    let fin = b[0] & 0x80 != 0;
    let op = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let l7 = (b[1] & 0x7f) as usize;
    let (mut hlen, plen) = match l7 {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            (10, u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize)
        }
        n => (2, n),
    };
    if masked {
        hlen += 4; // servers must not mask, but tolerate it (payload is then garbage to us)
    }
    if b.len() < hlen + plen {
        return None;
    }
    Some(Head { op, fin, hlen, plen })
}

/// Appends a masked client frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Cheap per-connection mask keys (xorshift); not for security, only RFC conformance.
pub fn mask_for(seed: u64) -> [u8; 4] {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x as u32).to_le_bytes()
}

// ---- tiny JSON field scanners (we control the content, the server's JSON is flat) ----

/// The bytes after the first occurrence of `key`.
#[inline]
pub fn find_after<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    memchr::memmem::find(b, key).map(|p| &b[p + key.len()..])
}

/// The unsigned number right after `key` (leading spaces skipped).
#[inline]
pub fn num_after(b: &[u8], key: &[u8]) -> Option<u64> {
    let rest = find_after(b, key)?;
    let mut v: u64 = 0;
    let mut any = false;
    for &c in rest.iter() {
        if c == b' ' && !any {
            continue;
        }
        if c.is_ascii_digit() {
            v = v * 10 + (c - b'0') as u64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// The string after `key` up to the next `"` (no unescaping).
#[inline]
pub fn str_after<'a>(b: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let rest = find_after(b, key)?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The event type: `"type":"message"` → `message`.
#[inline]
pub fn event_type(b: &[u8]) -> &[u8] {
    str_after(b, b"\"type\":\"").unwrap_or(b"")
}

/// Whether an event type takes a room's seq (README "Room events"): a client that tracks a
/// room's seqs counts all of them, not only messages.
pub fn is_room_event(ty: &[u8]) -> bool {
    matches!(ty, b"message" | b"edit" | b"delete" | b"reaction" | b"member")
}

/// Parses our content marker `t=<send µs>;s=<step>;` out of a content string.
#[inline]
pub fn content_marker(content: &[u8]) -> Option<(u64, u32)> {
    let rest = content.strip_prefix(b"t=")?;
    let mut t: u64 = 0;
    let mut i = 0;
    while i < rest.len() && rest[i].is_ascii_digit() {
        t = t * 10 + (rest[i] - b'0') as u64;
        i += 1;
    }
    let rest = rest[i..].strip_prefix(b";s=")?;
    let mut s: u32 = 0;
    let mut j = 0;
    while j < rest.len() && rest[j].is_ascii_digit() {
        s = s * 10 + (rest[j] - b'0') as u32;
        j += 1;
    }
    if i == 0 || j == 0 {
        return None;
    }
    Some((t, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn roundtrip_frame() {
        let mut v = Vec::new();
        encode_frame(&mut v, OP_TEXT, b"hello", [1, 2, 3, 4]);
        let h = parse(&v).unwrap();
        assert_eq!((h.op, h.fin, h.hlen, h.plen), (OP_TEXT, true, 6, 5));
    }
    #[test]
    fn scan() {
        let m = br#"{"type":"message","id":9,"room_id":3,"seq":17,"sender_id":4,"content":"t=123;s=2;xx","timestamp":"x","client_msg_id":null}"#;
        assert_eq!(event_type(m), b"message");
        assert_eq!(num_after(m, b"\"room_id\":"), Some(3));
        assert_eq!(num_after(m, b"\"seq\":"), Some(17));
        assert_eq!(num_after(m, b"\"sender_id\":"), Some(4));
        assert_eq!(content_marker(str_after(m, b"\"content\":\"").unwrap()), Some((123, 2)));
    }
}
