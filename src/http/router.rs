//! Routing: one match over (method, path segments).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::{error_response, events, json, metrics, rest, search, upgrade, web, with_status, Permit};
use crate::app::App;
use crate::error::ApiError;

/// Dispatches a request.
pub async fn route(app: Arc<App>, req: Request<Incoming>, permit: Permit) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let resp = match (&method, segments.as_slice()) {
        (&Method::GET, ["ws", "chat"]) => return upgrade::chat(app, req, permit).await,
        (&Method::GET, ["ws", "echo"]) if app.edge.conformance_echo => return upgrade::echo(app, req, permit).await,
        (&Method::GET, [name]) if app.edge.web_client && web::is_asset(name) => web::asset(&app, name),
        (&Method::POST, ["dev", "session"]) if app.edge.dev => web::dev_session(&app, req).await,
        (&Method::GET, ["healthz"]) => Ok(json(StatusCode::OK, &serde_json::json!({"status": "ok"}))),
        (&Method::GET, ["readyz"]) => Ok(rest::readyz(&app).await),
        (&Method::GET, ["openapi.json"]) => Ok(openapi()),
        (&Method::GET, ["metrics"]) if app.edge.metrics_on_main => Ok(metrics::respond(&app).await),
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
        (&Method::GET, ["v1", "rooms", id, "events"]) => events::list(&app, &req, id).await,
        (&Method::DELETE, ["v1", "messages", id]) => events::delete_message(&app, &req, id).await,
        (&Method::GET, ["v1", "unread"]) => events::unread(&app, &req).await,
        (&Method::GET, ["v1", "search"]) => search::search(&app, &req).await,
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
            | ["v1", "unread"]
            | ["v1", "search"]
            | ["v1", "admin", "dead-letters"]
            | ["v1", "admin", "dead-letters", "requeue"],
        )
        | (_, ["v1", "rooms", _, "members" | "events"])
        | (_, ["v1", "messages", _])
        | (_, ["v1", "rooms", _, "members", _]) => {
            let e = ApiError::bad_request(format!("method {method} is not allowed here"));
            Ok(with_status(error_response(&e), StatusCode::METHOD_NOT_ALLOWED))
        }
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    };
    resp.unwrap_or_else(|e| error_response(&e))
}

/// The REST contract (OpenAPI 3.1), kept in `docs/openapi.json` and compiled in.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// `GET /openapi.json`.
fn openapi() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
