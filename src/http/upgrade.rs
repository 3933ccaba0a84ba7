//! `GET /ws/chat`: origin, token and membership are checked BEFORE the 101 (a refused upgrade is
//! an HTTP error with a JSON body and no socket), then the connection is registered with the
//! chat service and handed to the WebSocket transport with its session.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::{bearer, error_response, query_param, Permit};
use crate::app::App;
use crate::chat::Session;
use crate::config::LimitsConfig;
use crate::conn::{CloseReq, ConnState};
use crate::error::ApiError;
use crate::telemetry::names;
use crate::util::clock::now_secs;
use crate::ws::{self, Echo, Handler, WriterTimers};

impl Handler for Session {
    fn on_text(&mut self, text: Bytes) -> impl Future<Output = Option<CloseReq>> + Send {
        Session::on_text(self, text)
    }
}

/// Handles `GET /ws/chat`.
pub async fn chat(app: Arc<App>, req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    match chat_inner(app, req, permit).await {
        Ok(resp) => resp,
        Err(e) => {
            metrics::counter!(names::WS_UPGRADES_REFUSED_TOTAL, "reason" => e.code.as_str()).increment(1);
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
    let connected = app.chat.connect(identity.user_id).await?;
    let (resp, upgrade) = fastwebsockets::upgrade::upgrade(&mut req)
        .map_err(|e| ApiError::bad_request(format!("bad upgrade request: {e}")))?;

    let deadline_secs = app.auth.deadline(identity.expires_at).saturating_sub(now_secs());
    // Only a client that asks for replay-then-live order (`resume=1`) has its live events held
    // until its first `sync`: a client that only listens gets each event as it commits.
    let hold = match wants_resume(&req) {
        true => Duration::from_millis(app.chat.initial_hold_ms()),
        false => Duration::ZERO,
    };
    let limits = transport_limits(&app.chat.limits(), Some(deadline_secs), hold);
    let shutdown = app.edge.shutdown.clone();
    app.edge.tasks.spawn(async move {
        let _permit = permit;
        let Some((stream, prefix)) = ws::finish_upgrade(upgrade).await else { return };
        ws::run(stream, prefix, connected.conn().clone(), connected.session(), limits, shutdown).await;
        // Unregisters the connection (and announces the user offline if it was the last).
        drop(connected);
    });
    Ok(resp.map(|_| Full::new(Bytes::new())))
}

/// Handles `GET /ws/echo` (only with `server.conformance_echo`): no auth, same transport.
pub async fn echo(app: Arc<App>, mut req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    let (resp, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(e) => return error_response(&ApiError::bad_request(format!("bad upgrade request: {e}"))),
    };
    let l = app.chat.limits();
    let shared = Arc::new(ConnState::new(l.outbound_queue_frames));
    let limits = transport_limits(&l, None, Duration::ZERO);
    let shutdown = app.edge.shutdown.clone();
    app.edge.tasks.spawn(async move {
        let _permit = permit;
        if let Some((stream, prefix)) = ws::finish_upgrade(upgrade).await {
            ws::run(stream, prefix, shared.clone(), Echo(shared), limits, shutdown).await;
        }
    });
    resp.map(|_| Full::new(Bytes::new()))
}

/// The transport's limits from `[limits]`; `expires_in_secs` is the token's remaining life.
fn transport_limits(l: &LimitsConfig, expires_in_secs: Option<u64>, initial_hold: Duration) -> ws::Limits {
    let timers = WriterTimers {
        ping: Duration::from_secs(l.ping_secs),
        idle_timeout: Duration::from_secs(l.idle_timeout_secs),
        expires_at: expires_in_secs.and_then(|s| tokio::time::Instant::now().checked_add(Duration::from_secs(s))),
        initial_hold,
        write_stall: Duration::from_secs(l.write_timeout_secs.max(1)),
    };
    ws::Limits { frame_max_bytes: l.frame_max_bytes, outbound_queue_frames: l.outbound_queue_frames, timers }
}

fn check_origin(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let allowed = &app.edge.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    match req.headers().get(hyper::header::ORIGIN) {
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a.as_bytes() == o.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::forbidden("origin not allowed")),
    }
}

/// `?resume=1` (or `true`) on the upgrade URL.
fn wants_resume(req: &Request<Incoming>) -> bool {
    let value = req.uri().query().and_then(|q| query_param(q, "resume"));
    matches!(value.as_deref(), Some("1" | "true"))
}

/// The token from `?token=` or `Authorization: Bearer`.
fn token_of(req: &Request<Incoming>) -> Option<String> {
    if let Some(t) = bearer(req.headers()) {
        return Some(t.to_string());
    }
    let query = req.uri().query()?;
    query_param(query, "token")
}
