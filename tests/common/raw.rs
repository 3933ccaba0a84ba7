//! Hand-rolled WebSocket frames and HTTP over plain TCP, for protocol-violation tests that a
//! conforming client library would refuse to produce.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::{bounded, RECV_TIMEOUT};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Encode one client frame by hand. `masked = false` makes an (illegal) unmasked frame.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        let key: [u8; 4] = rand::random();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A server frame as read by [`RawWs`].
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// What ended a raw connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEnd {
    /// A Close frame; `None` if it carried no code.
    Close(Option<u16>),
    /// EOF or reset without a Close frame.
    Eof,
}

impl RawEnd {
    pub fn code(&self) -> Option<u16> {
        match self {
            RawEnd::Close(c) => *c,
            RawEnd::Eof => None,
        }
    }
}

/// A hand-rolled WebSocket client over a plain TCP socket.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Raw HTTP response head (and body when Content-Length says so).
#[derive(Debug, Clone)]
pub struct RawHttp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawWs {
    /// Completes the upgrade of `/ws/chat?token=...`; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, token: &str) -> RawWs {
        Self::connect_opts(addr, token, None).await
    }

    /// Same, with an optional SO_RCVBUF set before connecting (for never-reading clients).
    pub async fn connect_opts(addr: SocketAddr, token: &str, rcvbuf: Option<u32>) -> RawWs {
        let sock = TcpSocket::new_v4().expect("socket");
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let stream = bounded("tcp connect", sock.connect(addr)).await.expect("tcp connect");
        let mut raw = RawWs { stream, buf: Vec::new() };
        let req = format!(
            "GET /ws/chat?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        raw.stream.write_all(req.as_bytes()).await.expect("write upgrade");
        let head = raw.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "expected 101 Switching Protocols, got:\n{head}");
        raw
    }

    /// Read an HTTP response head (through `\r\n\r\n`); leftover bytes stay buffered.
    async fn read_head(&mut self) -> String {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 4);
                return head;
            }
            let mut tmp = [0u8; 4096];
            let n = bounded("read http head", self.stream.read(&mut tmp)).await.expect("read head");
            assert!(n > 0, "EOF before the HTTP response head; got {:?}", String::from_utf8_lossy(&self.buf));
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Write bytes, ignoring errors (the server may already have closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        matches!(timeout(RECV_TIMEOUT, self.stream.write_all(bytes)).await, Ok(Ok(())))
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> bool {
        let f = encode_frame(fin, opcode, payload, true);
        self.send_raw(&f).await
    }

    pub async fn send_text(&mut self, s: &str) -> bool {
        self.send_frame(true, OP_TEXT, s.as_bytes()).await
    }

    async fn fill(&mut self, need: usize, deadline: tokio::time::Instant) -> Result<(), RawEnd> {
        while self.buf.len() < need {
            let mut tmp = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => panic!("timed out reading from the server"),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(RawEnd::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
        Ok(())
    }

    /// Next server frame; `Err(Eof)` on EOF/reset. Panics past `deadline`.
    pub async fn read_frame_by(&mut self, deadline: tokio::time::Instant) -> Result<RawFrame, RawEnd> {
        self.fill(2, deadline).await?;
        let b0 = self.buf[0];
        let b1 = self.buf[1];
        assert_eq!(b1 & 0x80, 0, "server frames must not be masked (RFC 6455 §5.1)");
        let (len, hdr) = match b1 & 0x7f {
            126 => {
                self.fill(4, deadline).await?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10, deadline).await?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(a) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(hdr + len, deadline).await?;
        let payload = self.buf[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        Ok(RawFrame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload })
    }

    pub async fn read_frame(&mut self) -> Result<RawFrame, RawEnd> {
        self.read_frame_by(tokio::time::Instant::now() + RECV_TIMEOUT).await
    }

    /// Next text frame parsed as JSON (pings/pongs skipped, not answered).
    pub async fn read_json(&mut self) -> Value {
        loop {
            let f = self.read_frame().await.unwrap_or_else(|e| panic!("connection ended: {e:?}"));
            match f.opcode {
                OP_TEXT => return serde_json::from_slice(&f.payload).expect("server text is JSON"),
                OP_PING | OP_PONG => continue,
                OP_CLOSE => panic!("unexpected close: {:?}", close_code(&f.payload)),
                op => panic!("unexpected opcode {op}"),
            }
        }
    }

    /// Reads (skipping data and ping frames, never answering) until the server's Close frame
    /// or EOF, within `t`. Returns what ended the connection.
    pub async fn read_close_within(&mut self, t: Duration) -> RawEnd {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match self.read_frame_by(deadline).await {
                Err(end) => return end,
                Ok(f) if f.opcode == OP_CLOSE => return RawEnd::Close(close_code(&f.payload)),
                Ok(_) => continue,
            }
        }
    }

    /// [`read_close_within`] with [`RECV_TIMEOUT`]; returns the close code (None = no code/EOF).
    pub async fn read_close_code(&mut self) -> Option<u16> {
        self.read_close_within(RECV_TIMEOUT).await.code()
    }

    /// Same as `read_close_within` but also collects the JSON text frames seen.
    pub async fn read_all_until_close(&mut self, t: Duration) -> (Vec<Value>, RawEnd) {
        let deadline = tokio::time::Instant::now() + t;
        let mut seen = Vec::new();
        loop {
            match self.read_frame_by(deadline).await {
                Err(end) => return (seen, end),
                Ok(f) if f.opcode == OP_CLOSE => return (seen, RawEnd::Close(close_code(&f.payload))),
                Ok(f) if f.opcode == OP_TEXT => seen.push(serde_json::from_slice(&f.payload).unwrap_or(Value::Null)),
                Ok(_) => continue,
            }
        }
    }
}

pub fn close_code(payload: &[u8]) -> Option<u16> {
    if payload.len() >= 2 {
        Some(u16::from_be_bytes([payload[0], payload[1]]))
    } else {
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Send a raw HTTP request on a fresh TCP connection and read the response (head + body by
/// Content-Length, else until EOF), bounded by [`RECV_TIMEOUT`].
pub async fn raw_http(addr: SocketAddr, request: &str) -> RawHttp {
    let mut s = bounded("tcp connect", TcpStream::connect(addr)).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n");
        }
        if let Some(he) = head_end {
            let head = String::from_utf8_lossy(&buf[..he]).into_owned();
            let cl = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.trim().eq_ignore_ascii_case("content-length") {
                    v.trim().parse::<usize>().ok()
                } else {
                    None
                }
            });
            if let Some(cl) = cl {
                if buf.len() >= he + 4 + cl {
                    let body = String::from_utf8_lossy(&buf[he + 4..he + 4 + cl]).into_owned();
                    return RawHttp { status: parse_status(&head), head, body };
                }
            }
        }
        let mut tmp = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) => panic!("raw_http: timed out; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(Ok(0)) | Ok(Err(_)) => {
                let he = find(&buf, b"\r\n\r\n").unwrap_or_else(|| {
                    panic!("raw_http: EOF before response head: {:?}", String::from_utf8_lossy(&buf))
                });
                let head = String::from_utf8_lossy(&buf[..he]).into_owned();
                let body = String::from_utf8_lossy(&buf[he + 4..]).into_owned();
                return RawHttp { status: parse_status(&head), head, body };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn parse_status(head: &str) -> u16 {
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
