//! A tiny HTTP/1.1 keep-alive client (Content-Length and chunked bodies) for the admin/user
//! REST API and the `history` scenario. One `Conn` = one TCP connection, requests in sequence.

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    target: SocketAddr,
    idx: usize,
    s: Option<TcpStream>,
    buf: BytesMut,
}

pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {} body {}", self.status, String::from_utf8_lossy(&self.body)))
    }
}

impl Conn {
    pub fn new(target: SocketAddr, idx: usize) -> Self {
        Conn { target, idx, s: None, buf: BytesMut::with_capacity(16384) }
    }

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
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target);
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
        s.write_all(&bytes).await?;
        // head
        let head_end = loop {
            if let Some(p) = memchr::memmem::find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if s.read_buf(&mut self.buf).await? == 0 {
                bail!("eof reading response head");
            }
        };
        let head = std::str::from_utf8(&self.buf[..head_end])?.to_string();
        self.buf.advance(head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().ok_or_else(|| anyhow!("empty head"))?;
        let status: u16 = status_line.split(' ').nth(1).ok_or_else(|| anyhow!("bad status line"))?.parse()?;
        let mut clen: Option<usize> = None;
        let mut chunked = false;
        let mut close = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else { continue };
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                clen = Some(v.parse()?);
            } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let body = if chunked {
            let mut out = Vec::new();
            loop {
                let le = loop {
                    if let Some(p) = memchr::memmem::find(&self.buf, b"\r\n") {
                        break p;
                    }
                    if s.read_buf(&mut self.buf).await? == 0 {
                        bail!("eof in chunk size");
                    }
                };
                let sz_str = std::str::from_utf8(&self.buf[..le])?;
                let sz = usize::from_str_radix(sz_str.split(';').next().unwrap().trim(), 16)?;
                self.buf.advance(le + 2);
                while self.buf.len() < sz + 2 {
                    if s.read_buf(&mut self.buf).await? == 0 {
                        bail!("eof in chunk");
                    }
                }
                out.extend_from_slice(&self.buf[..sz]);
                self.buf.advance(sz + 2);
                if sz == 0 {
                    break;
                }
            }
            out
        } else {
            let n = clen.unwrap_or(0);
            while self.buf.len() < n {
                if s.read_buf(&mut self.buf).await? == 0 {
                    bail!("eof in body");
                }
            }
            let b = self.buf[..n].to_vec();
            self.buf.advance(n);
            b
        };
        if close {
            self.s = None;
        }
        Ok(Resp { status, body })
    }
}

/// Admin/user API helper.
pub struct Api {
    pub target: SocketAddr,
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
    /// 9,999 in the creating POST, the rest added one by one, `par` in flight.
    pub async fn create_room(&self, name: &str, creator_token: &str, members: &[u64], par: usize) -> Result<u64> {
        let first = members.len().min(9_999);
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
