//! The web client's server side (SPEC §12): `GET /` serves the embedded page (dev mode marked
//! in it), its script and style with safe headers, `server.web_client = false` turns it off;
//! `POST /dev/session` exists only in `serve --dev`, creates the user once (a member of
//! room 1) and returns a working token. The page itself is tested in a real browser by
//! `clients/web/test` (run by scripts/test.sh).

mod common;

use common::*;
use serde_json::{json, Value};

/// `GET /`, `/app.js`, `/app.css`: 200 with their types, no-cache and a script-safe CSP; the
/// page says it is not in dev mode; `/index.html` is the page too; other names 404 as JSON.
#[tokio::test]
async fn page_and_assets_are_served() {
    let s = TestServer::start(&[]).await;
    let page = s.get_anon("/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.content_type.as_deref(), Some("text/html; charset=utf-8"));
    assert!(page.text.contains(r#"<meta name="livechat-dev" content="0">"#), "dev marker off: {}", page.text);
    assert!(page.text.contains("/app.js") && page.text.contains("/app.css"), "{}", page.text);
    assert_eq!(s.get_anon("/index.html").await.text, page.text);
    for (path, kind) in [("/app.js", "text/javascript; charset=utf-8"), ("/app.css", "text/css; charset=utf-8")] {
        let r = s.get_anon(path).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.content_type.as_deref(), Some(kind), "{path}");
        assert!(r.text.len() > 100, "{path} has content");
    }
    let r = s.http.get(s.url("/")).send().await.expect("GET /");
    let csp = r.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'"), "CSP: {csp}");
    assert_eq!(r.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-cache"));
    assert_eq!(r.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
    s.get_anon("/nope.js").await.assert_error(404, "not_found");
    let r = s.request_raw(reqwest::Method::POST, "/dev/session", None, r#"{"username":"x"}"#).await;
    r.assert_error(404, "not_found");
}

/// `server.web_client = false`: no page.
#[tokio::test]
async fn page_can_be_turned_off() {
    let s = TestServer::start(&[("LIVECHAT_SERVER__WEB_CLIENT", "false")]).await;
    s.get_anon("/").await.assert_error(404, "not_found");
    s.get_anon("/app.js").await.assert_error(404, "not_found");
    assert_eq!(s.get_anon("/healthz").await.status, 200);
}

/// `POST /dev/session` with `body`.
async fn dev_session(s: &TestServer, body: Value) -> Resp {
    s.request_raw(reqwest::Method::POST, "/dev/session", None, &body.to_string()).await
}

/// `serve --dev`: the page says dev; `POST /dev/session` creates the user once (same id when
/// signing in again), a member of room 1, with a token that works for REST and WebSocket;
/// bad usernames and bodies are 400.
#[tokio::test]
async fn dev_session_signs_in_by_username() {
    let s = TestServer::start_dev(&[]).await;
    let page = s.get_anon("/").await;
    assert!(page.text.contains(r#"<meta name="livechat-dev" content="1">"#), "dev marker on: {}", page.text);

    let name = uname("dev_ann");
    let first = dev_session(&s, json!({ "username": name })).await;
    assert_eq!(first.status, 200, "{first:?}");
    let user_id = first.body["user_id"].as_i64().unwrap_or_else(|| panic!("user_id: {first:?}"));
    let token = first.body["token"].as_str().unwrap_or_else(|| panic!("token: {first:?}")).to_string();
    let again = dev_session(&s, json!({ "username": name })).await;
    assert_eq!(again.body["user_id"], json!(user_id), "same user on a second sign-in: {again:?}");

    let rooms = s.get_json("/v1/rooms", &token).await;
    assert_eq!(rooms.status, 200, "{rooms:?}");
    assert!(rooms.body.as_array().is_some_and(|l| l.iter().any(|r| r["id"] == json!(1))), "in general: {rooms:?}");
    let mut ws = s.ws_ready(&token).await;
    let echo = ws.send_and_echo(1, "hello from the dev page").await;
    assert_eq!(echo["sender_id"], json!(user_id));

    for body in [json!({ "username": "" }), json!({ "username": "x".repeat(51) }), json!({ "name": "x" })] {
        dev_session(&s, body).await.assert_error(400, "bad_request");
    }
}
