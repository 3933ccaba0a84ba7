//! `GET /v1/search` (README "Search").

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::rest::{int_param, parse_id, require_member, user, Reply};
use super::{json, query_param};
use crate::app::App;
use crate::error::ApiError;
use crate::store::search::Search;

/// Longest `q`, in characters.
const Q_MAX_CHARS: usize = 200;

/// `GET /v1/search?q=TEXT&room_id=N&limit=20&before_id=M`: history message objects matching
/// every word of `q`, newest first, from the caller's rooms (or room N, which the caller must
/// be a member of, like history).
pub async fn search(app: &App, req: &Request<Incoming>) -> Reply {
    let me = user(app, req)?;
    let query = req.uri().query().unwrap_or("");
    let q = query_param(query, "q").unwrap_or_default();
    let n = q.chars().count();
    if n == 0 || n > Q_MAX_CHARS || q.contains('\0') {
        return Err(ApiError::bad_request(format!("q must be 1 to {Q_MAX_CHARS} characters")));
    }
    let limit = int_param(query, "limit", 20, 1..=100)?;
    let room_id = query_param(query, "room_id").map(|v| parse_id(&v, "room_id")).transpose()?;
    let before_id = query_param(query, "before_id").map(|v| parse_id(&v, "before_id")).transpose()?;
    if let Some(room) = room_id {
        require_member(app, room, me).await?;
    }
    let page = app.store.search(Search { q: &q, room_id, before_id, limit, caller: me }).await?;
    Ok(json(StatusCode::OK, &page))
}
