//! The web client (README "Web client"): the page built from `clients/web` and committed as
//! a bundle, so `cargo build` needs no Node.js, and `serve --dev`'s `POST /dev/session`.

use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::rest::{valid_username, Reply};
use super::{json, read_json};
use crate::app::App;
use crate::error::{ApiError, ErrorCode};

const INDEX: &str = include_str!("../../clients/web/dist/index.html");
const APP_JS: &str = include_str!("../../clients/web/dist/app.js");
const APP_CSS: &str = include_str!("../../clients/web/dist/app.css");

/// The page tells dev mode by this tag (it then offers "sign in as").
const DEV_OFF: &str = r#"<meta name="livechat-dev" content="0">"#;
const DEV_ON: &str = r#"<meta name="livechat-dev" content="1">"#;
static INDEX_DEV: LazyLock<String> = LazyLock::new(|| INDEX.replace(DEV_OFF, DEV_ON));

/// Scripts and styles from this origin only, sockets and REST calls to it: an injected
/// message can never run script even if the page had a rendering bug.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'";

/// `dev/session` tokens live a day: long enough for a session of local tinkering.
const DEV_TOKEN_TTL_SECS: u64 = 24 * 3600;

/// The body and content type of an embedded file.
fn file(dev: bool, name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "" | "index.html" if dev => (INDEX_DEV.as_str(), "text/html; charset=utf-8"),
        "" | "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return None,
    })
}

/// Whether `/<name>` is a file of the page.
pub fn is_asset(name: &str) -> bool {
    file(false, name).is_some()
}

/// `GET /` (the page), `/app.js`, `/app.css`.
pub fn asset(app: &App, name: &str) -> Reply {
    let (body, kind) = file(app.edge.dev, name).ok_or_else(|| ApiError::not_found(format!("no file /{name}")))?;
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Names are not content-hashed: revalidate so an upgraded server never mixes versions.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSession {
    username: String,
}

/// `POST /dev/session {"username"}` (`serve --dev` only, which binds to loopback only): the
/// user, created and joined to room 1 when missing, and a day's token for them.
pub async fn dev_session(app: &App, req: Request<Incoming>) -> Reply {
    let body: DevSession = read_json(req).await?;
    let username = body.username.trim();
    valid_username(username)?;
    let user_id = find_or_sign_up(app, username).await?;
    let (token, _) = app.auth.issue(user_id, DEV_TOKEN_TTL_SECS)?;
    Ok(json(StatusCode::OK, &json!({"user_id": user_id, "token": token})))
}

/// The user called `username`, created (and joined to room 1) when missing. A sign-up racing
/// this one for the same name is read back, not refused.
pub async fn find_or_sign_up(app: &App, username: &str) -> Result<i64, ApiError> {
    if let Some(id) = app.store.user_id(username).await? {
        return Ok(id);
    }
    match app.chat.rooms().sign_up(username, None).await {
        Ok((id, _)) => Ok(id),
        Err(e) if e.code == ErrorCode::Conflict => {
            app.store.user_id(username).await?.ok_or_else(|| ApiError::not_found("the user was removed meanwhile"))
        }
        Err(e) => Err(e),
    }
}
