//! A real WebSocket client (tokio-tungstenite) for `/ws/chat`, with the waits tests need.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{bounded, random_hex, RECV_TIMEOUT};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The server event types that are room events (SPEC §10): each carries `room_id` and `seq`,
/// and a room's seqs count all of them (so its message seqs may skip numbers).
pub const ROOM_EVENT_TYPES: [&str; 5] = ["message", "edit", "delete", "reaction", "member"];

/// Why a WebSocket upgrade failed.
#[derive(Debug)]
pub enum WsConnectError {
    /// The server answered the upgrade with a non-101 HTTP response.
    Http {
        status: u16,
        body: String,
    },
    Other(String),
}

impl WsConnectError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WsConnectError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn body_json(&self) -> Value {
        match self {
            WsConnectError::Http { body, .. } => serde_json::from_str(body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// One step of [`WsClient::next_event_within`].
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Json(Value),
    /// Close frame code (`None`: no code, or the stream ended without a Close frame).
    Closed(Option<u16>),
    Timeout,
}

/// A real WebSocket client (tokio-tungstenite; answers pings automatically while reading).
pub struct WsClient {
    ws: Ws,
    sync_nonce: u64,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<WsClient, WsConnectError> {
        Self::connect_with_headers(url, &[]).await
    }

    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, WsConnectError> {
        let mut req = url.into_client_request().map_err(|e| WsConnectError::Other(e.to_string()))?;
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
            req.headers_mut().insert(name, HeaderValue::from_str(v).unwrap());
        }
        match timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => Err(WsConnectError::Other("upgrade timed out".into())),
            Ok(Ok((ws, _resp))) => Ok(WsClient { ws, sync_nonce: 0 }),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                Err(WsConnectError::Http { status, body })
            }
            Ok(Err(e)) => Err(WsConnectError::Other(e.to_string())),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: impl Into<String>) {
        let s: String = s.into();
        bounded("ws send", self.ws.send(Message::text(s))).await.expect("ws send");
    }

    /// Send without panicking on error (for tests where the server may already have closed).
    pub async fn try_send_json(&mut self, v: Value) -> bool {
        matches!(timeout(RECV_TIMEOUT, self.ws.send(Message::text(v.to_string()))).await, Ok(Ok(())))
    }

    pub async fn send_message(&mut self, v: Message) {
        bounded("ws send", self.ws.send(v)).await.expect("ws send");
    }

    /// `{"type":"message","room_id":room,"content":content,"client_msg_id":cid}`.
    pub async fn send_msg(&mut self, room_id: i64, content: &str, client_msg_id: Option<&str>) {
        let mut v = json!({ "type": "message", "room_id": room_id, "content": content });
        if let Some(c) = client_msg_id {
            v["client_msg_id"] = json!(c);
        }
        self.send_json(v).await;
    }

    /// Next JSON text event (skips ping/pong). Panics on timeout, close, binary or bad JSON.
    pub async fn recv_json(&mut self) -> Value {
        self.recv_json_within(RECV_TIMEOUT).await.expect("timed out waiting for a ws event")
    }

    /// Like [`recv_json`] but returns `None` on timeout.
    pub async fn recv_json_within(&mut self, t: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("ws stream ended while waiting for an event"),
                Ok(Some(Err(e))) => panic!("ws error while waiting for an event: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|e| panic!("server sent non-JSON text {t:?}: {e}")),
                    )
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(b) => panic!("server sent a binary frame ({} bytes)", b.len()),
                Message::Close(c) => panic!("unexpected close while waiting for an event: {c:?}"),
            }
        }
    }

    /// Next event of type `ty`, skipping other types (presence, typing, ...). An `error`
    /// event while waiting for another type panics (with the error) so failures are explicit.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_types(&[ty]).await
    }

    /// Next event whose type is one of `tys` (an `error` panics unless listed).
    pub async fn recv_types(&mut self, tys: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .recv_json_within(left)
                .await
                .unwrap_or_else(|| panic!("timed out waiting for an event of type {tys:?}"));
            let t = v["type"].as_str().unwrap_or_default();
            if tys.contains(&t) {
                return v;
            }
            if t == "error" {
                panic!("got an error event while waiting for {tys:?}: {v}");
            }
        }
    }

    /// Next event matching `pred` (others skipped, errors included in what `pred` sees).
    pub async fn recv_until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_json_within(left).await.unwrap_or_else(|| panic!("timed out waiting for {what}"));
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends `message` and returns the sender's echo (matched by `client_msg_id`).
    pub async fn send_and_echo(&mut self, room_id: i64, content: &str) -> Value {
        let cid = format!("c-{}", random_hex(8));
        self.send_msg(room_id, content, Some(&cid)).await;
        let cid2 = cid.clone();
        self.recv_until(&format!("echo of {cid}"), move |v| {
            if v["type"] == "error" {
                panic!("error instead of echo for {cid2}: {v}");
            }
            v["type"] == "message" && v["client_msg_id"] == json!(cid2)
        })
        .await
    }

    /// Round trip that proves every event the server queued for us before this call has been
    /// read: sends `sync` with no rooms and waits for its `synced` (returning the
    /// events received meanwhile, `synced` excluded).
    pub async fn sync_barrier(&mut self) -> Vec<Value> {
        self.sync_nonce += 1;
        self.send_json(json!({ "type": "sync", "rooms": {} })).await;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_json_within(left).await.expect("timed out waiting for synced");
            if v["type"] == "synced" {
                return seen;
            }
            seen.push(v);
        }
    }

    /// Sends `sync` for `rooms` (`{"<room_id>": last_seen_seq, ...}`) and returns every room
    /// event ([`ROOM_EVENT_TYPES`], of any room) received until `synced`, in arrival order, and
    /// the `synced` event. Presence, typing and receipts are skipped; an `error` panics.
    pub async fn sync_replay(&mut self, rooms: Value) -> (Vec<Value>, Value) {
        self.send_json(json!({ "type": "sync", "rooms": rooms })).await;
        let mut tys = ROOM_EVENT_TYPES.to_vec();
        tys.push("synced");
        let mut events = Vec::new();
        loop {
            let v = self.recv_types(&tys).await;
            if v["type"] == "synced" {
                return (events, v);
            }
            events.push(v);
        }
    }

    /// Next text event or the end of the connection, within `t` (`Timeout` if neither).
    pub async fn next_event_within(&mut self, t: Duration) -> WsEvent {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return WsEvent::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return WsEvent::Closed(None),
                Ok(Some(Ok(Message::Close(c)))) => return WsEvent::Closed(c.map(|f| u16::from(f.code))),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return WsEvent::Json(serde_json::from_str(t.as_str()).unwrap_or(Value::Null))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads until a Close frame and returns its code (`None` if the close had no code or the
    /// stream ended without a Close frame). Text frames before it are skipped.
    pub async fn expect_close(&mut self) -> Option<u16> {
        self.expect_close_within(RECV_TIMEOUT).await
    }

    pub async fn expect_close_within(&mut self, t: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("timed out after {t:?} waiting for the server to close"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => return c.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Like [`expect_close`] but also returns the text events seen before the close.
    pub async fn events_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("timed out waiting for the server to close; events: {seen:?}"),
                Ok(None) | Ok(Some(Err(_))) => return (seen, None),
                Ok(Some(Ok(Message::Close(c)))) => return (seen, c.map(|f| u16::from(f.code))),
                Ok(Some(Ok(Message::Text(t)))) => {
                    seen.push(serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string())))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
