//! REST handlers of room events (README "Room events"): the events listing, moderation
//! deletes, and unread totals.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::json;
use super::rest::{caller, int_param, parse_id, require_member, user, Caller, Reply};
use crate::app::App;
use crate::model::RoomEvent;

/// `GET /v1/rooms/{id}/events?after_seq=N&limit=100`: the room's events after N, oldest first,
/// each as the WebSocket carries it (as it stands now).
pub async fn list(app: &App, req: &Request<Incoming>, id: &str) -> Reply {
    let me = user(app, req)?;
    let room = parse_id(id, "room id")?;
    let q = req.uri().query().unwrap_or("");
    let after = int_param(q, "after_seq", 0, 0..=crate::wire::client::MAX_SEEN_SEQ)?;
    let limit = int_param(q, "limit", 100, 1..=500)?;
    require_member(app, room, me).await?;
    let events: Vec<RoomEvent> = app.store.events_between(room, after, i64::MAX, limit).await?;
    Ok(json(StatusCode::OK, &events))
}

/// `DELETE /v1/messages/{id}`: the sender (a member) or the admin token; 200 with the `delete`
/// event.
pub async fn delete_message(app: &App, req: &Request<Incoming>, id: &str) -> Reply {
    let by = match caller(app, req)? {
        Caller::User(me) => Some(me),
        Caller::Admin => None,
    };
    let message_id = parse_id(id, "message id")?;
    let event = app.chat.delete_message(message_id, by).await?;
    Ok(json(StatusCode::OK, &event))
}

/// `GET /v1/unread`: the caller's unread and mention counts over their rooms.
pub async fn unread(app: &App, req: &Request<Incoming>) -> Reply {
    let me = user(app, req)?;
    let cap = app.chat.limits().unread_cap as i64;
    Ok(json(StatusCode::OK, &app.store.unread(me, cap).await?))
}
