//! WebSocket endpoint `/ws/chat`: authentication and limits BEFORE the 101, then one reader
//! (this task) and one writer task per connection.

pub mod frame;
pub mod outbox;
pub mod protocol;
pub mod reader;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::app::App;
use crate::auth::now_secs;
use crate::error::{ApiError, ErrorCode};
use crate::http::{error_response, Permit};
use crate::presence::ConnHandle;
use crate::session::Session;
use outbox::CloseReq;
use reader::{FrameReader, Message, Prefixed, ReadEnd};
use writer::{ConnShared, WriterTimers};

/// How long to wait for the peer's close frame after ours (and for the writer after theirs).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the connection does with complete messages.
enum Mode {
    /// The chat protocol.
    Chat(Box<Session>),
    /// Echo every message back (RFC 6455 conformance runs only).
    Echo,
}

/// Handles `GET /ws/chat`.
pub async fn chat(app: Arc<App>, req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    match chat_inner(app, req, permit).await {
        Ok(resp) => resp,
        Err(e) => {
            metrics::counter!("livechat_ws_upgrades_refused_total", "reason" => e.code.as_str()).increment(1);
            error_response(&e)
        }
    }
}

async fn chat_inner(
    app: Arc<App>,
    mut req: Request<Incoming>,
    permit: Permit,
) -> Result<Response<Full<Bytes>>, ApiError> {
    check_origin(&app, &req)?;
    let token =
        token_of(&req).ok_or_else(|| ApiError::unauthorized("missing token: pass ?token= or Authorization: Bearer"))?;
    let identity = app.auth.verify(&token)?;
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Err(ApiError::bad_request("this endpoint only accepts WebSocket upgrades"));
    }
    if app.is_draining() {
        return Err(ApiError::unavailable("server is shutting down", 1000));
    }
    let rooms = app.memberships.load(identity.user_id).await?.ok_or_else(|| ApiError::unauthorized("unknown user"))?;
    let (resp, upgrade) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_request(format!("bad upgrade request: {e}")))?;

    let limits = app.limits();
    let shared = Arc::new(ConnShared::new(limits.outbound_queue_frames));
    let (handle, first) = app
        .registry
        .register(identity.user_id, &rooms, shared, limits.connections_per_user, &app.bus)
        .map_err(|_| ApiError::new(ErrorCode::RateLimited, "too many connections for this user"))?;
    let presence_rooms: Vec<i64> =
        rooms.iter().filter(|m| m.member_count <= app.config.presence.max_room_members).map(|m| m.room_id).collect();
    let guard = Registered { app: app.clone(), handle: handle.clone(), presence_rooms };
    if first {
        app.presence.went_online(&app, identity.user_id, guard.presence_rooms.clone());
    }

    let deadline_secs = app.auth.deadline(identity.expires_at).saturating_sub(now_secs());
    let timers = WriterTimers {
        ping: Duration::from_secs(limits.ping_secs),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        expires_at: Some(tokio::time::Instant::now() + Duration::from_secs(deadline_secs)),
        initial_hold: Duration::from_millis(app.config.sync.initial_hold_ms),
    };
    let task_app = app.clone();
    app.tasks.spawn(async move {
        let _permit = permit;
        let Some((stream, prefix)) = finish_upgrade(upgrade).await else { return };
        let session = Session::new(task_app.clone(), handle.clone());
        run(task_app, stream, prefix, handle.conn.clone(), Mode::Chat(Box::new(session)), timers).await;
        drop(guard);
    });
    Ok(resp.map(|_| Full::new(Bytes::new())))
}

/// Handles `GET /ws/echo` (only with `server.conformance_echo`): no auth, same connection layer.
pub async fn echo(app: Arc<App>, mut req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    let (resp, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(e) => return error_response(&ApiError::bad_request(format!("bad upgrade request: {e}"))),
    };
    let limits = app.limits();
    let shared = Arc::new(ConnShared::new(limits.outbound_queue_frames));
    let timers = WriterTimers {
        ping: Duration::from_secs(limits.ping_secs),
        idle_timeout: Duration::from_secs(limits.idle_timeout_secs),
        expires_at: None,
        initial_hold: Duration::ZERO,
    };
    let task_app = app.clone();
    app.tasks.spawn(async move {
        let _permit = permit;
        if let Some((stream, prefix)) = finish_upgrade(upgrade).await {
            run(task_app, stream, prefix, shared, Mode::Echo, timers).await;
        }
    });
    resp.map(|_| Full::new(Bytes::new()))
}

/// Unregisters a connection however its task ends (including a panic).
struct Registered {
    app: Arc<App>,
    handle: Arc<ConnHandle>,
    presence_rooms: Vec<i64>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.app.registry.unregister(&self.handle, &self.app.bus) {
            let rooms = std::mem::take(&mut self.presence_rooms);
            self.app.presence.went_offline(&self.app, self.handle.user_id, rooms);
        }
    }
}

/// Waits for hyper to hand over the socket and takes it out of hyper's wrappers, copying any
/// bytes hyper read past the request head so its 8 KiB read buffer is freed (DESIGN.md).
async fn finish_upgrade(upgrade: fastwebsockets::upgrade::UpgradeFut) -> Option<(TcpStream, Bytes)> {
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

/// Runs a connection to the end: this task reads, a spawned task writes.
async fn run(
    app: Arc<App>,
    stream: TcpStream,
    prefix: Bytes,
    shared: Arc<ConnShared>,
    mut mode: Mode,
    timers: WriterTimers,
) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let limits = app.limits();
    let mut reader = FrameReader::new(Prefixed::new(prefix, r), limits.frame_max_bytes);
    let mut writer = tokio::spawn(writer::run(w, shared.clone(), timers, limits.outbound_queue_frames));
    shared.touch();

    let read = async {
        loop {
            let end = match reader.next(&shared).await {
                Ok(Message::Text(text)) => match &mut mode {
                    // Boxed: an idle connection's future then holds no room for the largest
                    // event handler's state (a sync's queries), only while one runs.
                    Mode::Chat(session) => match Box::pin(session.on_text(text)).await {
                        Some(close) => ReadEnd::Violation(close),
                        None => continue,
                    },
                    Mode::Echo => {
                        shared.outbox.push_control(frame::encode(frame::OP_TEXT, &text));
                        continue;
                    }
                },
                Ok(Message::Binary(data)) => match mode {
                    Mode::Chat(_) => ReadEnd::Violation(CloseReq {
                        code: 1003,
                        reason: "binary frames are not accepted",
                        flush: false,
                    }),
                    Mode::Echo => {
                        shared.outbox.push_control(frame::encode(frame::OP_BINARY, &data));
                        continue;
                    }
                },
                Err(end) => end,
            };
            return end;
        }
    };
    tokio::pin!(read);
    let shutdown = app.shutdown.clone();

    tokio::select! {
        end = &mut read => {
            match end {
                ReadEnd::PeerClosed(req) | ReadEnd::Violation(req) => {
                    if let ReadEnd::Violation(_) = end {
                        metrics::counter!("livechat_ws_protocol_closes_total").increment(1);
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

fn check_origin(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let allowed = &app.config.server.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    match req.headers().get(hyper::header::ORIGIN) {
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a.as_bytes() == o.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::forbidden("origin not allowed")),
    }
}

/// The token from `?token=` or `Authorization: Bearer`.
fn token_of(req: &Request<Incoming>) -> Option<String> {
    if let Some(t) = crate::http::bearer(req.headers()) {
        return Some(t.to_string());
    }
    let query = req.uri().query()?;
    crate::http::query_param(query, "token")
}
