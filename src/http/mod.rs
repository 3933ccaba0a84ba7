//! The HTTP edge: the accept loop ([`listener`]), routing ([`router`]), REST handlers
//! ([`rest`]), the WebSocket upgrade ([`upgrade`]), `/metrics` ([`metrics`]), and small
//! request/response helpers, and the web client ([`web`]).

pub mod events;
pub mod listener;
pub mod metrics;
pub mod rest;
pub mod router;
pub mod search;
pub mod upgrade;
pub mod web;

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::{ApiError, ErrorCode};

/// A slot of `server.max_connections`, shared by the HTTP connection and, after an upgrade,
/// the WebSocket task: released when both are gone.
pub type Permit = Arc<OwnedSemaphorePermit>;

/// Largest REST request body.
const BODY_MAX: usize = 64 * 1024;

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(crate) fn with_status(mut resp: Response<Full<Bytes>>, status: StatusCode) -> Response<Full<Bytes>> {
    *resp.status_mut() = status;
    resp
}

/// `{"error": {"code", "message"}}` with the code's status.
pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
