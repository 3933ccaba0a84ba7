//! The REST API of a [`TestServer`]: requests, responses, the admin shortcuts tests build on,
//! and reading a Prometheus exposition.

use serde_json::{json, Value};

use super::TestServer;

/// A REST response: status, parsed JSON body (`Value::Null` if empty or not JSON), raw text.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: Option<String>,
}

impl Resp {
    async fn from(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(|s| s.to_string());
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text, content_type }
    }

    /// Asserts `status` and the JSON shape every REST error has:
    /// `{"error":{"code":code,"message":str}}`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; response: {self:?}");
        assert_eq!(self.body["error"]["code"], json!(code), "error code; response: {self:?}");
        assert!(self.body["error"]["message"].is_string(), "error.message string; response: {self:?}");
    }
}

impl TestServer {
    /// Generic request. `token` is sent as `Authorization: Bearer`.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self.http.request(method.clone(), self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp =
            rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}; server stderr:\n{}", self.stderr()));
        Resp::from(resp).await
    }

    /// Request with a raw (possibly invalid) body and explicit content type.
    pub async fn request_raw(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: &str) -> Resp {
        let mut rb = self
            .http
            .request(method.clone(), self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let resp = rb.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        Resp::from(resp).await
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn get_anon(&self, path: &str) -> Resp {
        self.request(reqwest::Method::GET, path, None, None).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(reqwest::Method::POST, path, Some(token), Some(&body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::DELETE, path, Some(token), None).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Resp {
        let t = self.admin_token.clone();
        self.post_json(path, &t, body).await
    }

    /// Creates a user via the admin API and a 1 h token for it via `POST /v1/tokens`.
    pub async fn create_user(&self, name: &str) -> (i64, String) {
        let r = self.admin_post("/v1/users", json!({ "username": name })).await;
        assert_eq!(r.status, 201, "POST /v1/users {name}: {r:?}");
        let id = r.body["id"].as_i64().unwrap_or_else(|| panic!("user id in {r:?}"));
        let r = self.admin_post("/v1/tokens", json!({ "user_id": id, "ttl_secs": 3600 })).await;
        assert_eq!(r.status, 201, "POST /v1/tokens: {r:?}");
        let token = r.body["token"].as_str().unwrap_or_else(|| panic!("token in {r:?}")).to_string();
        (id, token)
    }

    /// `POST /v1/rooms` as `token`; returns the room id.
    pub async fn create_room(&self, token: &str, name: &str, members: &[i64]) -> i64 {
        let r = self.post_json("/v1/rooms", token, json!({ "name": name, "members": members })).await;
        assert_eq!(r.status, 201, "POST /v1/rooms: {r:?}");
        r.body["id"].as_i64().unwrap_or_else(|| panic!("room id in {r:?}"))
    }

    /// `last_seq` of `room` in `GET /v1/rooms` as the holder of `token` (a member): the seq of
    /// the room's latest event (SPEC §10). Creating a user or a room and changing members take
    /// seqs too, so a test reads this before sending: its next room event takes `last_seq + 1`.
    pub async fn last_seq(&self, token: &str, room: i64) -> i64 {
        let r = self.get_json("/v1/rooms", token).await;
        assert_eq!(r.status, 200, "GET /v1/rooms: {r:?}");
        let entry = r
            .body
            .as_array()
            .and_then(|rooms| rooms.iter().find(|x| x["id"] == json!(room)))
            .unwrap_or_else(|| panic!("room {room} not in GET /v1/rooms: {r:?}"));
        entry["last_seq"].as_i64().unwrap_or_else(|| panic!("integer last_seq in {entry}"))
    }

    /// `GET /chat/history?room_id=..&limit=..` → the array (asserts 200).
    pub async fn history(&self, token: &str, room_id: i64, limit: u32) -> Vec<Value> {
        let r = self.get_json(&format!("/chat/history?room_id={room_id}&limit={limit}"), token).await;
        assert_eq!(r.status, 200, "history: {r:?}");
        r.body.as_array().unwrap_or_else(|| panic!("history is not an array: {r:?}")).clone()
    }
}

/// The value of a metric in a Prometheus exposition: the unlabelled sample, or the first series
/// of a labelled one.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = if rest.starts_with('{') { &rest[rest.find('}')? + 1..] } else { rest };
        rest.strip_prefix(' ')?.split_whitespace().next()?.parse().ok()
    })
}
