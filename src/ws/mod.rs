//! The WebSocket transport: after hyper hands over the socket, one reader (this task) and one
//! writer task per connection. It speaks RFC 6455 and enforces the connection-level limits
//! (frame size, protocol violations, idle, ping, token expiry, slow consumers) and drives a
//! [`Handler`] with complete text messages. It knows nothing of chat: the HTTP layer plugs
//! the chat session in.

pub mod reader;
pub mod writer;

#[cfg(test)]
mod fuzz;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::conn::{CloseReq, ConnState};
use crate::telemetry::names;
use crate::wire::frame;
use reader::{FrameReader, Message, Prefixed, ReadEnd};
pub use writer::WriterTimers;

/// How long to wait for the peer's close frame after ours (and for the writer after theirs).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What a connection does with complete messages.
pub trait Handler: Send {
    /// A text message; `Some` asks the connection to close.
    fn on_text(&mut self, text: Bytes) -> impl Future<Output = Option<CloseReq>> + Send;

    /// A binary message; by default refused with 1003 (the chat protocol is text only).
    fn on_binary(&mut self, _data: Bytes) -> Option<CloseReq> {
        Some(CloseReq { code: 1003, reason: "binary frames are not accepted", flush: false })
    }
}

/// Echoes every message back (RFC 6455 conformance runs only, `server.conformance_echo`).
pub struct Echo(pub Arc<ConnState>);

impl Handler for Echo {
    async fn on_text(&mut self, text: Bytes) -> Option<CloseReq> {
        self.0.outbox.push_control(frame::encode(frame::OP_TEXT, &text));
        None
    }

    fn on_binary(&mut self, data: Bytes) -> Option<CloseReq> {
        self.0.outbox.push_control(frame::encode(frame::OP_BINARY, &data));
        None
    }
}

/// The connection-level limits a transport enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `limits.frame_max_bytes`: the largest message, across fragments (close 1009).
    pub frame_max_bytes: usize,
    /// `limits.outbound_queue_frames`: frames held for a `sync` at most.
    pub outbound_queue_frames: usize,
    /// Ping, idle, token-expiry and hold timers.
    pub timers: WriterTimers,
}

/// Waits for hyper to hand over the socket and takes it out of hyper's wrappers, copying any
/// bytes hyper read past the request head. Keeping hyper's `Parts.read_buf` (even empty) would
/// pin its whole 8 KiB read buffer for the connection's life (BENCHMARKS.md, memory per idle
/// connection).
pub async fn finish_upgrade(upgrade: fastwebsockets::upgrade::UpgradeFut) -> Option<(TcpStream, Bytes)> {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "Upgrade did not complete.");
            return None;
        }
    };
    let upgraded = ws.into_inner().into_inner();
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            let prefix = Bytes::copy_from_slice(&read_buf);
            drop(read_buf);
            Some((io.into_inner(), prefix))
        }
        Err(_) => {
            tracing::error!("Upgraded connection is not a TCP stream.");
            None
        }
    }
}

/// Runs a connection to the end: this task reads, a spawned task writes. `shutdown` closes it
/// with 1001 (the server's drain).
pub async fn run<H: Handler>(
    stream: TcpStream,
    prefix: Bytes,
    shared: Arc<ConnState>,
    mut handler: H,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(Prefixed::new(prefix, r), limits.frame_max_bytes);
    let mut writer = tokio::spawn(writer::run(w, shared.clone(), limits.timers, limits.outbound_queue_frames));
    shared.touch();

    let read = async {
        loop {
            let end = match reader.next(&shared).await {
                // Boxed: an idle connection's future then holds no room for the largest event
                // handler's state (a sync's queries), only while one runs.
                Ok(Message::Text(text)) => match Box::pin(handler.on_text(text)).await {
                    Some(close) => ReadEnd::Violation(close),
                    None => continue,
                },
                Ok(Message::Binary(data)) => match handler.on_binary(data) {
                    Some(close) => ReadEnd::Violation(close),
                    None => continue,
                },
                Err(end) => end,
            };
            return end;
        }
    };
    tokio::pin!(read);

    tokio::select! {
        end = &mut read => {
            match end {
                ReadEnd::PeerClosed(req) | ReadEnd::Violation(req) => {
                    if let ReadEnd::Violation(_) = end {
                        metrics::counter!(names::WS_PROTOCOL_CLOSES_TOTAL).increment(1);
                    }
                    shared.outbox.close(req);
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
                }
                ReadEnd::Gone => {}
            }
        }
        _ = &mut writer => {
            // We sent a close (or the socket broke): give the peer a moment to answer it.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut read).await;
        }
        _ = shutdown.cancelled() => {
            shared.outbox.close(CloseReq { code: 1001, reason: "server shutting down", flush: true });
            if tokio::time::timeout(CLOSE_GRACE, &mut writer).await.is_ok() {
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut read).await;
            }
        }
    }
    writer.abort();
    // Free a dead connection's queue at once.
    shared.outbox.close(CloseReq { code: 1006, reason: "", flush: false });
}
