//! HTTP: the accept loop, routing, REST handlers and small request/response helpers.

pub mod listener;
pub mod rest;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::App;
use crate::error::{ApiError, ErrorCode};

/// A slot of `server.max_connections`, shared by the HTTP connection and, after an upgrade,
/// the WebSocket task: released when both are gone.
pub type Permit = Arc<OwnedSemaphorePermit>;

/// Largest REST request body.
const BODY_MAX: usize = 64 * 1024;

/// Dispatches a request.
pub async fn route(app: Arc<App>, req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let resp = match (&method, segments.as_slice()) {
        (&Method::GET, ["ws", "chat"]) => return crate::ws::chat(app, req, permit).await,
        (&Method::GET, ["ws", "echo"]) if app.config.server.conformance_echo => {
            return crate::ws::echo(app, req, permit).await
        }
        (&Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        (&Method::GET, ["readyz"]) => Ok(rest::readyz(&app).await),
        (&Method::GET, ["openapi.json"]) => Ok(openapi()),
        (&Method::GET, ["metrics"]) if app.config.server.metrics_listen.is_none() => Ok(metrics_response(&app).await),
        (&Method::GET, ["chat", "history"]) => rest::history(&app, &req).await,
        (&Method::POST, ["v1", "users"]) => rest::create_user(&app, req).await,
        (&Method::POST, ["v1", "tokens"]) => rest::create_token(&app, req).await,
        (&Method::POST, ["v1", "rooms"]) => rest::create_room(&app, req).await,
        (&Method::GET, ["v1", "rooms"]) => rest::list_rooms(&app, &req).await,
        (&Method::GET, ["v1", "rooms", id, "members"]) => rest::list_members(&app, &req, id).await,
        (&Method::POST, ["v1", "rooms", id, "members"]) => {
            let id = id.to_string();
            rest::add_member(&app, req, &id).await
        }
        (&Method::DELETE, ["v1", "rooms", id, "members", uid]) => rest::remove_member(&app, &req, id, uid).await,
        (&Method::GET, ["v1", "admin", "dead-letters"]) => rest::dead_letters(&app, &req).await,
        (&Method::POST, ["v1", "admin", "dead-letters", "requeue"]) => rest::requeue_dead_letters(&app, req).await,
        (
            _,
            ["ws", "chat"]
            | ["healthz"]
            | ["readyz"]
            | ["openapi.json"]
            | ["chat", "history"]
            | ["v1", "users"]
            | ["v1", "tokens"]
            | ["v1", "rooms"]
            | ["v1", "admin", "dead-letters"]
            | ["v1", "admin", "dead-letters", "requeue"],
        )
        | (_, ["v1", "rooms", _, "members"])
        | (_, ["v1", "rooms", _, "members", _]) => {
            let e = ApiError::bad_request(format!("method {method} is not allowed here"));
            Ok(with_status(error_response(&e), StatusCode::METHOD_NOT_ALLOWED))
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    };
    resp.unwrap_or_else(|e| error_response(&e))
}

/// Serves `/metrics` only (the separate `server.metrics_listen` address).
pub async fn route_metrics(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        metrics_response(&app).await
    } else {
        error_response(&ApiError::not_found("only /metrics is served here"))
    }
}

async fn metrics_response(app: &App) -> Response<Full<Bytes>> {
    crate::telemetry::refresh_scrape_metrics(app).await;
    let body = app.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// The REST contract (OpenAPI 3.1), kept in `docs/openapi.json` and compiled in.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`.
fn openapi() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn with_status(mut resp: Response<Full<Bytes>>, status: StatusCode) -> Response<Full<Bytes>> {
    *resp.status_mut() = status;
    resp
}

/// `{"error": {"code", "message"}}` with the code's status.
pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = serde_json::json!({"error": {"code": e.code.as_str(), "message": e.message}});
    if let Some(ms) = e.retry_after_ms {
        body["error"]["retry_after_ms"] = ms.into();
    }
    let mut resp = json(status, &body);
    if let Some(ms) = e.retry_after_ms {
        if let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string()) {
            resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    resp
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A percent-decoded query parameter.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Reads and parses a JSON body (at most 64 KiB).
pub async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = Limited::new(req.into_body(), BODY_MAX)
        .collect()
        .await
        .map_err(|_| ApiError::new(ErrorCode::TooLarge, format!("body must be at most {BODY_MAX} bytes")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_bearer() {
        assert_eq!(query_param("a=1&token=x%2Ey+z", "token").as_deref(), Some("x.y z"));
        assert_eq!(query_param("token=", "token").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "token"), None);
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
