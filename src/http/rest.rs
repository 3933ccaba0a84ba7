//! REST handlers (the README's "REST API" section). Membership changes go through the chat
//! service's rooms, never to the connection registry directly.

use bytes::Bytes;
use chrono::DateTime;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::{bearer, json, query_param, read_json};
use crate::app::App;
use crate::error::ApiError;
use crate::model::DEFAULT_ROOM;
use crate::store::messages::Page;

pub(super) type Reply = Result<Response<Full<Bytes>>, ApiError>;

/// Who is calling.
pub(super) enum Caller {
    Admin,
    User(i64),
}

pub(super) fn caller(app: &App, req: &Request<Incoming>) -> Result<Caller, ApiError> {
    let token = bearer(req.headers()).ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    if app.auth.is_admin(token) {
        return Ok(Caller::Admin);
    }
    Ok(Caller::User(app.auth.verify(token)?.user_id))
}

pub(super) fn user(app: &App, req: &Request<Incoming>) -> Result<i64, ApiError> {
    match caller(app, req)? {
        Caller::User(id) => Ok(id),
        Caller::Admin => Err(ApiError::forbidden("this endpoint takes a user token, not the admin token")),
    }
}

fn admin(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    match caller(app, req)? {
        Caller::Admin => Ok(()),
        Caller::User(_) => Err(ApiError::forbidden("admin token required")),
    }
}

pub(super) fn parse_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a positive integer")))
}

/// An integer query parameter in `range`, `default` when absent; else 400.
pub(super) fn int_param(
    query: &str,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ApiError> {
    match query_param(query, name) {
        None => Ok(default),
        Some(v) => v.parse::<i64>().ok().filter(|l| range.contains(l)).ok_or_else(|| {
            ApiError::bad_request(format!("{name} must be an integer from {} to {}", range.start(), range.end()))
        }),
    }
}

/// 404 for no such room, 403 for a non-member.
pub(super) async fn require_member(app: &App, room: i64, user: i64) -> Result<(), ApiError> {
    match app.store.membership(room, user).await? {
        None => Err(ApiError::not_found("no such room")),
        Some(false) => Err(ApiError::forbidden("you are not a member of this room")),
        Some(true) => Ok(()),
    }
}

/// `GET /readyz`: 200 when PostgreSQL (and Redis, if configured) answer and the server is not
/// draining; else 503 naming what is down.
pub async fn readyz(app: &App) -> Response<Full<Bytes>> {
    let health = app.probe().await;
    let (pg, redis) = (health.postgres, health.redis);
    let state = |up: bool| if up { "up" } else { "down" };
    let mut down = Vec::new();
    if !pg {
        down.push("postgres");
    }
    if redis == Some(false) {
        down.push("redis");
    }
    if app.chat.is_draining() {
        down.push("draining");
    }
    let mut body = json!({"status": "ready", "postgres": state(pg)});
    if let Some(r) = redis {
        body["redis"] = state(r).into();
    }
    if down.is_empty() {
        json(StatusCode::OK, &body)
    } else {
        body["status"] = "unavailable".into();
        body["down"] = json!(down);
        json(StatusCode::SERVICE_UNAVAILABLE, &body)
    }
}

/// `GET /chat/history?limit&room_id&before_seq&thread`.
pub async fn history(app: &App, req: &Request<Incoming>) -> Reply {
    let me = user(app, req)?;
    let q = req.uri().query().unwrap_or("");
    let limit = int_param(q, "limit", 50, 1..=500)?;
    let room = match query_param(q, "room_id") {
        None => DEFAULT_ROOM,
        Some(v) => parse_id(&v, "room_id")?,
    };
    let before_seq = query_param(q, "before_seq").map(|v| parse_id(&v, "before_seq")).transpose()?;
    let thread = query_param(q, "thread").map(|v| parse_id(&v, "thread")).transpose()?;
    require_member(app, room, me).await?;
    let page = app.store.history(Page { room_id: room, limit, before_seq, thread, caller: me }).await?;
    Ok(json(StatusCode::OK, &page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    email: Option<String>,
}

/// `POST /v1/users` (admin).
pub async fn create_user(app: &App, req: Request<Incoming>) -> Reply {
    admin(app, &req)?;
    let body: NewUser = read_json(req).await?;
    valid_username(&body.username)?;
    if let Some(email) = &body.email {
        if email.len() > 254 || !email.contains('@') || email.contains('\0') {
            return Err(ApiError::bad_request("email is not an e-mail address"));
        }
    }
    let (id, username) = app.chat.rooms().sign_up(&body.username, body.email.as_deref()).await?;
    Ok(json(StatusCode::CREATED, &json!({"id": id, "username": username})))
}

/// A username is 1 to 50 characters, not only whitespace.
pub(super) fn valid_username(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    // NUL: PostgreSQL text cannot store it (it would be a 500).
    if n == 0 || n > 50 || name.trim().is_empty() || name.contains('\0') {
        return Err(ApiError::bad_request("username must be 1 to 50 characters"));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    user_id: i64,
    ttl_secs: Option<u64>,
}

/// `POST /v1/tokens` (admin).
pub async fn create_token(app: &App, req: Request<Incoming>) -> Reply {
    admin(app, &req)?;
    let body: NewToken = read_json(req).await?;
    let ttl = body.ttl_secs.unwrap_or(3600);
    crate::auth::check_ttl(ttl)?;
    if app.store.username(body.user_id).await?.is_none() {
        return Err(ApiError::not_found("no such user"));
    }
    let (token, exp) = app.auth.issue(body.user_id, ttl)?;
    let expires_at = DateTime::from_timestamp(exp as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(json(StatusCode::CREATED, &json!({"token": token, "expires_at": expires_at})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRoom {
    name: String,
    #[serde(default)]
    members: Vec<i64>,
}

/// `POST /v1/rooms`.
pub async fn create_room(app: &App, req: Request<Incoming>) -> Reply {
    let me = user(app, &req)?;
    let body: NewRoom = read_json(req).await?;
    let n = body.name.trim().chars().count();
    if n == 0 || body.name.chars().count() > 100 || body.name.contains('\0') {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    let room = app.chat.rooms().create(&body.name, me, &body.members).await?;
    Ok(json(StatusCode::CREATED, &room))
}

/// `GET /v1/rooms`: with the caller's watermarks and unread counts.
pub async fn list_rooms(app: &App, req: &Request<Incoming>) -> Reply {
    let me = user(app, req)?;
    let cap = app.chat.limits().unread_cap as i64;
    Ok(json(StatusCode::OK, &app.store.rooms_of(me, cap).await?))
}

/// `GET /v1/rooms/{id}/members`.
pub async fn list_members(app: &App, req: &Request<Incoming>, id: &str) -> Reply {
    let me = user(app, req)?;
    let room = parse_id(id, "room id")?;
    let q = req.uri().query().unwrap_or("");
    let limit = int_param(q, "limit", 1000, 1..=1000)?;
    let after = int_param(q, "after_user_id", 0, 0..=i64::MAX)?;
    require_member(app, room, me).await?;
    let mut members = app.store.members(room, after, limit).await?;
    let online = app.chat.presence().online_among(members.iter().map(|m| m.user_id)).await;
    for m in &mut members {
        m.online = online.contains(&m.user_id);
    }
    Ok(json(StatusCode::OK, &members))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    user_id: i64,
}

/// `POST /v1/rooms/{id}/members`: a member adds another user.
pub async fn add_member(app: &App, req: Request<Incoming>, id: &str) -> Reply {
    let who = caller(app, &req)?;
    let room = parse_id(id, "room id")?;
    let by = match who {
        Caller::User(me) => {
            require_member(app, room, me).await?;
            Some(me)
        }
        Caller::Admin => {
            if app.store.membership(room, 0).await?.is_none() {
                return Err(ApiError::not_found("no such room"));
            }
            None
        }
    };
    let body: NewMember = read_json(req).await?;
    let added = app.chat.rooms().add_member(room, body.user_id, by).await?;
    let status = if added { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &json!({"room_id": room, "user_id": body.user_id})))
}

/// `DELETE /v1/rooms/{id}/members/{user_id}`: yourself, or anyone with the admin token.
pub async fn remove_member(app: &App, req: &Request<Incoming>, id: &str, uid: &str) -> Reply {
    let who = caller(app, req)?;
    let room = parse_id(id, "room id")?;
    let target = parse_id(uid, "user id")?;
    let by = match who {
        Caller::User(me) if me != target => {
            return Err(ApiError::forbidden("you can only remove yourself; the admin token removes others"));
        }
        Caller::User(me) => Some(me),
        Caller::Admin => None,
    };
    app.chat.rooms().remove_member(room, target, by).await?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

/// The notification queue, or 404 when this server has none.
fn notify_queue(app: &App) -> Result<&crate::notify::Queue, ApiError> {
    app.notify
        .as_deref()
        .ok_or_else(|| ApiError::not_found("notifications are not enabled (no sink configured and no REDIS_URL)"))
}

fn queue_error(e: crate::notify::NotifyError) -> ApiError {
    tracing::warn!(error = %e, "Dead-letter request failed.");
    ApiError::unavailable("the notification queue is unavailable, retry later", 1000)
}

/// `GET /v1/admin/dead-letters?limit=` (admin): the newest dead-lettered jobs.
pub async fn dead_letters(app: &App, req: &Request<Incoming>) -> Reply {
    admin(app, req)?;
    let limit = int_param(req.uri().query().unwrap_or(""), "limit", 100, 1..=1000)? as usize;
    let (items, total) = notify_queue(app)?.dead_letters(limit).await.map_err(queue_error)?;
    Ok(json(StatusCode::OK, &json!({"dead_letters": items, "total": total})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Requeue {
    job_ids: Option<Vec<String>>,
}

/// `POST /v1/admin/dead-letters/requeue` (admin): `{"job_ids": [...]}`, or `{}` for all.
pub async fn requeue_dead_letters(app: &App, req: Request<Incoming>) -> Reply {
    admin(app, &req)?;
    let body: Requeue = read_json(req).await?;
    if body.job_ids.as_ref().is_some_and(|ids| ids.len() > 10_000) {
        return Err(ApiError::bad_request("at most 10000 job_ids per request"));
    }
    let n = notify_queue(app)?.requeue(body.job_ids.as_deref()).await.map_err(queue_error)?;
    Ok(json(StatusCode::OK, &json!({"requeued": n})))
}
