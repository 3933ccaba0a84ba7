//! A tiny HTTP/1.1 keep-alive client (Content-Length and chunked bodies) for the admin/user
//! REST API and the `history` scenario. One `Conn` = one TCP connection, requests in sequence.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive HTTP/1.1 connection, opened on first use and reopened after a failure.
pub struct Conn {
    target: SocketAddr,
    idx: usize,
    s: Option<TcpStream>,
    buf: BytesMut,
}

/// A response: status code and the whole body.
pub struct Resp {
    /// HTTP status code
    pub status: u16,
    /// body bytes (chunked bodies joined)
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON; the error names the status and the body.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {} body {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

impl Conn {
    /// A connection to `target` from source address number `idx` (see `ws::source_addr`);
    /// nothing is opened yet.
    pub fn new(target: SocketAddr, idx: usize) -> Self {
        Conn { target, idx, s: None, buf: BytesMut::with_capacity(16384) }
    }

    /// Sends one request and reads the response, retrying once on a fresh connection.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Resp> {
        match self.try_request(method, path, bearer, body).await {
            Ok(r) => Ok(r),
            Err(_) => {
                // one retry on a stale keep-alive connection
                self.s = None;
                self.buf.clear();
                self.try_request(method, path, bearer, body).await
            }
        }
    }

    /// One attempt on the open connection (or a new one if there is none).
    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Resp> {
        if self.s.is_none() {
            self.s = Some(crate::ws::tcp_connect(self.target, self.idx).await?);
            self.buf.clear();
        }
        let s = self.s.as_mut().unwrap();
        s.write_all(&encode_request(&self.target, method, path, bearer, body)).await?;
        let head_end = loop {
            if let Some(p) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            read_more(s, &mut self.buf, "reading response head").await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?.to_string();
        self.buf.advance(head_end + 4);
        let head = parse_head(&head)?;
        let body = if head.chunked {
            read_chunked_body(s, &mut self.buf).await?
        } else {
            read_sized_body(s, &mut self.buf, head.content_length.unwrap_or(0)).await?
        };
        if head.close {
            self.s = None;
        }
        Ok(Resp { status: head.status, body })
    }
}

/// The request line, headers and body of one request.
fn encode_request(target: &SocketAddr, method: &str, path: &str, bearer: Option<&str>, body: Option<&[u8]>) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(t) = bearer {
        req.push_str("Authorization: Bearer ");
        req.push_str(t);
        req.push_str("\r\n");
    }
    let mut bytes = Vec::with_capacity(req.len() + 64 + body.map_or(0, |b| b.len()));
    if let Some(b) = body {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        req.push_str("\r\n");
        bytes.extend_from_slice(req.as_bytes());
        bytes.extend_from_slice(b);
    } else {
        req.push_str("\r\n");
        bytes.extend_from_slice(req.as_bytes());
    }
    bytes
}

/// What the response head says about the body and the connection.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// Parses a response head (status line and headers, without the blank line).
fn parse_head(head: &str) -> Result<Head> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| anyhow!("empty head"))?;
    let status: u16 = status_line.split(' ').nth(1).ok_or_else(|| anyhow!("bad status line"))?.parse()?;
    let mut h = Head { status, content_length: None, chunked: false, close: false };
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            h.content_length = Some(v.parse()?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            h.chunked = true;
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            h.close = true;
        }
    }
    Ok(h)
}

/// Reads more of the response into `buf`; end of stream is an error "eof {what}".
async fn read_more(s: &mut TcpStream, buf: &mut BytesMut, what: &str) -> Result<()> {
    if s.read_buf(buf).await? == 0 {
        bail!("eof {what}");
    }
    Ok(())
}

/// A `Content-Length` body of `n` bytes.
async fn read_sized_body(s: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Result<Vec<u8>> {
    while buf.len() < n {
        read_more(s, buf, "in body").await?;
    }
    let b = buf[..n].to_vec();
    buf.advance(n);
    Ok(b)
}

/// A `Transfer-Encoding: chunked` body, up to and including the last (empty) chunk.
async fn read_chunked_body(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let le = loop {
            if let Some(p) = memchr::memmem::find(buf, b"\r\n") {
                break p;
            }
            read_more(s, buf, "in chunk size").await?;
        };
        let sz_str = std::str::from_utf8(&buf[..le])?;
        let sz = usize::from_str_radix(sz_str.split(';').next().unwrap().trim(), 16)?;
        buf.advance(le + 2);
        while buf.len() < sz + 2 {
            read_more(s, buf, "in chunk").await?;
        }
        out.extend_from_slice(&buf[..sz]);
        buf.advance(sz + 2);
        if sz == 0 {
            return Ok(out);
        }
    }
}

/// Admin/user API helper.
pub struct Api {
    /// server address
    pub target: SocketAddr,
    /// admin bearer token
    pub admin_token: String,
}

impl Api {
    /// Creates `n` users named `{prefix}{i}` with `par` requests in flight. Returns their ids.
    pub async fn create_users(&self, prefix: &str, n: usize, par: usize) -> Result<Vec<u64>> {
        let ids = Arc::new(std::sync::Mutex::new(vec![0u64; n]));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..par.min(n.max(1)) {
            let (ids, next, target, tok, prefix) =
                (ids.clone(), next.clone(), self.target, self.admin_token.clone(), prefix.to_string());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::new(target, w);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let body = format!("{{\"username\":\"{prefix}{i}\"}}");
                    let r = c.request("POST", "/v1/users", Some(&tok), Some(body.as_bytes())).await?;
                    if r.status != 201 && r.status != 200 {
                        bail!("create user {i}: {} {}", r.status, String::from_utf8_lossy(&r.body));
                    }
                    let id = r.json()?["id"].as_u64().ok_or_else(|| anyhow!("no id"))?;
                    ids.lock().unwrap()[i] = id;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let v = ids.lock().unwrap().clone();
        Ok(v)
    }

    /// Tokens for the given users via `POST /v1/tokens` (when no JWT secret is known).
    pub async fn tokens(&self, users: &[u64], ttl: u64, par: usize) -> Result<Vec<String>> {
        let n = users.len();
        let out = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
        let users = Arc::new(users.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..par.min(n.max(1)) {
            let (out, next, target, tok, users) =
                (out.clone(), next.clone(), self.target, self.admin_token.clone(), users.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::new(target, 100 + w);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let body = format!("{{\"user_id\":{},\"ttl_secs\":{ttl}}}", users[i]);
                    let r = c.request("POST", "/v1/tokens", Some(&tok), Some(body.as_bytes())).await?;
                    let t = r.json()?["token"].as_str().ok_or_else(|| anyhow!("no token: {}", r.status))?.to_string();
                    out.lock().unwrap()[i] = t;
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        let v = out.lock().unwrap().clone();
        Ok(v)
    }

    /// Creates a room owned by `creator_token` with `members` (the creator excluded) — at most
    /// 999 in the creating POST (the server's default `limits.room_create_members` is 1,000),
    /// the rest added one by one, `par` in flight.
    pub async fn create_room(&self, name: &str, creator_token: &str, members: &[u64], par: usize) -> Result<u64> {
        let first = members.len().min(999);
        let body = serde_json::json!({"name": name, "members": &members[..first]}).to_string();
        let mut c = Conn::new(self.target, 200);
        let r = c.request("POST", "/v1/rooms", Some(creator_token), Some(body.as_bytes())).await?;
        if r.status != 201 && r.status != 200 {
            bail!("create room: {} {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let id = r.json()?["id"].as_u64().ok_or_else(|| anyhow!("no room id"))?;
        let rest: Arc<Vec<u64>> = Arc::new(members[first..].to_vec());
        if !rest.is_empty() {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for w in 0..par {
                let (next, rest, target, tok) = (next.clone(), rest.clone(), self.target, creator_token.to_string());
                tasks.push(tokio::spawn(async move {
                    let mut c = Conn::new(target, 300 + w);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= rest.len() {
                            return Ok::<_, anyhow::Error>(());
                        }
                        let body = format!("{{\"user_id\":{}}}", rest[i]);
                        let r = c
                            .request("POST", &format!("/v1/rooms/{id}/members"), Some(&tok), Some(body.as_bytes()))
                            .await?;
                        if r.status >= 300 {
                            bail!("add member: {} {}", r.status, String::from_utf8_lossy(&r.body));
                        }
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_fields() {
        let h = parse_head("HTTP/1.1 201 Created\r\ncontent-length: 12\r\nConnection: close").unwrap();
        assert_eq!(h, Head { status: 201, content_length: Some(12), chunked: false, close: true });
        let h = parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").unwrap();
        assert_eq!(h, Head { status: 200, content_length: None, chunked: true, close: false });
        assert!(parse_head("garbage").is_err());
    }

    #[test]
    fn request_bytes() {
        let t: SocketAddr = "127.0.0.1:8100".parse().unwrap();
        let r = encode_request(&t, "POST", "/v1/x", Some("tok"), Some(b"{}"));
        assert_eq!(
            r,
            b"POST /v1/x HTTP/1.1\r\nHost: 127.0.0.1:8100\r\nAuthorization: Bearer tok\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let r = encode_request(&t, "GET", "/h", None, None);
        assert_eq!(r, b"GET /h HTTP/1.1\r\nHost: 127.0.0.1:8100\r\n\r\n");
    }
}
