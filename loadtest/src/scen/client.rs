//! A WebSocket client for the scenarios that run in this process (`history`, `resume`):
//! one connection, frames read one at a time.

use crate::backoff::{retry, Backoff};
use crate::clock::now_us;
use crate::ws;
use anyhow::{anyhow, bail, Result};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Upgrade attempts of [`open_retry`].
const OPEN_ATTEMPTS: u64 = 8;

/// A connected in-process client for resume/history seeding.
pub(super) struct Client {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    buf: BytesMut,
    mask: [u8; 4],
}

impl Client {
    /// Connects from source address `i` and upgrades on `path`.
    pub(super) async fn open(t: SocketAddr, i: usize, path: &str) -> Result<Client> {
        let (s, buf) = ws::connect(t, i, path).await?;
        let (rd, wr) = s.into_split();
        Ok(Client { rd, wr, buf, mask: ws::mask_for(i as u64) })
    }

    /// Sends one text frame.
    pub(super) async fn send_text(&mut self, txt: &str) -> Result<()> {
        let mut out = Vec::with_capacity(txt.len() + 16);
        ws::encode_frame(&mut out, ws::OP_TEXT, txt.as_bytes(), self.mask);
        self.wr.write_all(&out).await?;
        Ok(())
    }

    /// Next text frame (answers pings), None on close.
    pub(super) async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            while let Some(h) = ws::parse(&self.buf) {
                let end = h.hlen + h.plen;
                let p = self.buf[h.hlen..end].to_vec();
                self.buf.advance(end);
                match h.op {
                    ws::OP_TEXT => return Ok(Some(p)),
                    ws::OP_PING => {
                        let mut out = Vec::new();
                        ws::encode_frame(&mut out, ws::OP_PONG, &p, self.mask);
                        self.wr.write_all(&out).await?;
                    }
                    ws::OP_CLOSE => return Ok(None),
                    _ => {}
                }
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }
}

/// Opens a client, retrying refused upgrades (e.g. 503 during a reconnect wave) with backoff
/// as a real client would. Returns the client and the number of retries.
pub(super) async fn open_retry(t: SocketAddr, i: usize, path: &str) -> Result<(Client, u64)> {
    let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(2000));
    retry(OPEN_ATTEMPTS, backoff, || Client::open(t, i, path), |_| {}).await
}

/// A `message` event for `room` with content and client message id.
pub(super) fn message_json(room: u64, content: &str, client_msg_id: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"room_id\":{room},\"content\":\"{content}\",\"client_msg_id\":\"{client_msg_id}\"}}"
    )
}

/// Sends `n` messages to `room` with `window` in flight, waiting for every echo. Returns the
/// last seq acked.
pub(super) async fn seed_messages(
    cl: &mut Client,
    room: u64,
    user: u64,
    n: usize,
    window: usize,
    tag: &str,
) -> Result<u64> {
    seed_with(cl, Seed { room, user, n, window, tag }, |_| format!("t={};s=0;{tag}", now_us())).await
}

/// What [`seed_with`] sends.
pub(super) struct Seed<'a> {
    /// Room.
    pub room: u64,
    /// The sender (whose echoes count).
    pub user: u64,
    /// Messages.
    pub n: usize,
    /// In flight at most.
    pub window: usize,
    /// Prefix of the client message ids.
    pub tag: &'a str,
}

/// Sends `seed.n` messages with contents `content(i)` (JSON-safe text), `seed.window` in
/// flight, waiting for every echo. Returns the last seq acked.
pub(super) async fn seed_with(
    cl: &mut Client,
    seed: Seed<'_>,
    mut content: impl FnMut(usize) -> String,
) -> Result<u64> {
    let Seed { room, user, n, window, tag } = seed;
    let mut sent = 0;
    let mut acked = 0;
    let mut last_seq = 0;
    // 120 s, plus what a slow server needs for a big seed
    let deadline = now_us() + 120_000_000 + n as u64 * 200;
    while acked < n {
        while sent < n && sent - acked < window {
            cl.send_text(&message_json(room, &content(sent), &format!("{tag}{sent}"))).await?;
            sent += 1;
        }
        let f = tokio::time::timeout(Duration::from_secs(10), cl.next())
            .await
            .map_err(|_| anyhow!("seed: no echo in 10 s"))??;
        let Some(f) = f else { bail!("seed: closed") };
        let ty = ws::event_type(&f);
        if ty == b"message" && ws::num_after(&f, b"\"sender_id\":") == Some(user) {
            acked += 1;
            last_seq = last_seq.max(ws::num_after(&f, b"\"seq\":").unwrap_or(0));
        } else if ty == b"error" {
            bail!("seed: error {}", String::from_utf8_lossy(&f));
        }
        if now_us() > deadline {
            bail!("seed: timeout");
        }
    }
    Ok(last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_event() {
        assert_eq!(
            message_json(3, "t=1;s=0;b", "b0"),
            r#"{"type":"message","room_id":3,"content":"t=1;s=0;b","client_msg_id":"b0"}"#
        );
    }
}
