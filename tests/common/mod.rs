//! Black-box test harness for `livechat`.
//!
//! Everything here talks to real parts only: the real `livechat` binary
//! (`CARGO_BIN_EXE_livechat`), a real PostgreSQL (a fresh database per test, created on the
//! cluster named by `LIVECHAT_TEST_PG_URL`), real WebSocket clients over real sockets.
//!
//! Every wait is bounded ([`RECV_TIMEOUT`], [`START_TIMEOUT`]) so a hang fails fast with a
//! message instead of stalling the suite.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single receive / request.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for the server to print `listening on ...`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a CLI run (a start-up failure may include a database connect timeout).
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:55433/postgres";

/// The superuser URL of the shared test cluster.
pub fn pg_admin_url() -> String {
    std::env::var("LIVECHAT_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_livechat")
}

pub fn random_hex(n_bytes: usize) -> String {
    (0..n_bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Replace the database name (the path) of a postgres URL.
pub fn with_db_name(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // scheme://authority/path
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[after_scheme..].find('/').map(|i| i + after_scheme);
    let mut out = match path_start {
        Some(i) => format!("{}/{}", &base[..i], db),
        None => format!("{}/{}", base, db),
    };
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Run a future with [`RECV_TIMEOUT`], panicking with `what` if it does not finish.
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match timeout(RECV_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {RECV_TIMEOUT:?}: {what}"),
    }
}

// =====================================================================================
// === impl TestDb ===
// =====================================================================================

/// A freshly created database, dropped (best effort, `WITH (FORCE)`) on Drop.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates `lc_<random>` on the shared test cluster.
    pub async fn create() -> TestDb {
        Self::create_on(&pg_admin_url()).await
    }

    /// Creates `lc_<random>` on the cluster reachable with the superuser URL `admin_url`.
    pub async fn create_on(admin_url: &str) -> TestDb {
        let name = format!("lc_{}", random_hex(8));
        let client = pg_connect(admin_url).await;
        bounded("CREATE DATABASE", client.batch_execute(&format!("CREATE DATABASE {name}")))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin_url}: {e}"));
        TestDb { url: with_db_name(admin_url, &name), name, admin_url: admin_url.to_string() }
    }

    /// A direct connection to this database (for assertions on stored rows).
    pub async fn client(&self) -> tokio_postgres::Client {
        pg_connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a tokio runtime: do the async work on a private thread/runtime.
        let _ = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let _ = timeout(Duration::from_secs(10), async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
                        tokio::spawn(conn);
                        let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                    }
                })
                .await;
            });
        })
        .join();
    }
}

/// Connect with tokio-postgres (NoTls), driving the connection on a spawned task.
pub async fn pg_connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = bounded("postgres connect", tokio_postgres::connect(url, tokio_postgres::NoTls))
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e} (is the test PostgreSQL running? see scripts/services.sh)"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `SELECT seq FROM messages WHERE room_id=$1 ORDER BY seq`.
pub async fn db_room_seqs(client: &tokio_postgres::Client, room_id: i64) -> Vec<i64> {
    let rows = bounded(
        "select seqs",
        client.query("SELECT seq::bigint FROM messages WHERE room_id = $1::bigint ORDER BY seq", &[&room_id]),
    )
    .await
    .expect("select seqs");
    rows.iter().map(|r| r.get::<_, i64>(0)).collect()
}

// =====================================================================================
// === impl TestServer ===
// =====================================================================================

/// Output of a finished CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `livechat <args>` to completion (bounded by [`CLI_TIMEOUT`]) with exactly the given
/// LIVECHAT_* / DATABASE_URL / REDIS_URL variables (inherited ones are removed).
pub async fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut cmd = Command::new(bin_path());
    cmd.args(args);
    scrub_env(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = cmd.spawn().expect("spawn livechat");
    let out = match timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.expect("wait livechat"),
        Err(_) => panic!("`livechat {}` did not exit within {CLI_TIMEOUT:?}", args.join(" ")),
    };
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str() {
            if k.starts_with("LIVECHAT_") || k == "DATABASE_URL" || k == "REDIS_URL" {
                cmd.env_remove(k);
            }
        }
    }
    // Never route test traffic through a proxy.
    cmd.env_remove("http_proxy").env_remove("HTTP_PROXY").env_remove("all_proxy");
    cmd.env("RUST_BACKTRACE", "1");
}

/// A running `livechat serve` process with its own database.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub db_url: String,
    pub jwt_secret: String,
    pub admin_token: String,
    env: Vec<(String, String)>,
    stderr: Arc<Mutex<String>>,
    pub http: reqwest::Client,
    /// Declared last: dropped after the process is killed.
    db: Option<TestDb>,
}

impl TestServer {
    /// Fresh database + server. `env` adds/overrides variables (e.g. `LIVECHAT_LIMITS__...`).
    pub async fn start(env: &[(&str, &str)]) -> TestServer {
        let db = TestDb::create().await;
        Self::start_with_db(db, env).await
    }

    /// Server on an existing database (the server owns and drops it).
    pub async fn start_with_db(db: TestDb, env: &[(&str, &str)]) -> TestServer {
        let url = db.url.clone();
        let mut s = Self::start_with_url(&url, env).await;
        s.db = Some(db);
        s
    }

    /// Server on a database URL whose lifetime the caller manages.
    pub async fn start_with_url(db_url: &str, env: &[(&str, &str)]) -> TestServer {
        let jwt_secret = format!("test-secret-{}", random_hex(16));
        let admin_token = format!("admin-{}", random_hex(16));
        let mut full: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db_url.to_string()),
            ("LIVECHAT_LISTEN".into(), "127.0.0.1:0".into()),
            ("LIVECHAT_JWT_SECRET".into(), jwt_secret.clone()),
            ("LIVECHAT_ADMIN_TOKEN".into(), admin_token.clone()),
            ("LIVECHAT_LOG".into(), "warn".into()),
        ];
        for (k, v) in env {
            full.retain(|(fk, _)| fk != k);
            full.push((k.to_string(), v.to_string()));
        }
        let http = reqwest::Client::builder().no_proxy().timeout(RECV_TIMEOUT).build().expect("reqwest client");
        let mut s = TestServer {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            db_url: db_url.to_string(),
            jwt_secret,
            admin_token,
            env: full,
            stderr: Arc::new(Mutex::new(String::new())),
            http,
            db: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(bin_path());
        cmd.arg("serve");
        scrub_env(&mut cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn livechat serve");

        // stderr: drained forever into a shared buffer (tail kept).
        let stderr = child.stderr.take().unwrap();
        let buf = self.stderr.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
                if b.len() > 256 * 1024 {
                    let cut = b.len() - 128 * 1024;
                    let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(cut);
                    b.drain(..cut);
                }
            }
        });

        // stdout: wait for `listening on `, then keep draining.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.trim().strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });

        let addr = match timeout(START_TIMEOUT, rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                // stdout closed before the line: the process exited (or closed stdout).
                let status = timeout(Duration::from_secs(5), child.wait()).await;
                let _ = timeout(Duration::from_secs(2), stderr_task).await;
                panic!("livechat serve exited before listening ({:?}); stderr:\n{}", status, self.stderr());
            }
            Err(_) => {
                let _ = child.start_kill();
                panic!(
                    "livechat serve did not print `listening on` within {START_TIMEOUT:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        };
        self.addr = addr.parse().unwrap_or_else(|e| panic!("bad listen address in `listening on {addr}`: {e}"));
        self.child = Some(child);
    }

    /// The server's stderr so far (tail).
    pub fn stderr(&self) -> String {
        // A test that panicked while holding the lock must not turn every later read (and
        // Drop) into a second panic that aborts the whole test binary.
        self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().and_then(|c| c.id()).expect("server not running") as i32
    }

    pub fn sigterm(&self) {
        let rc = unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    pub fn sigkill(&self) {
        let rc = unsafe { libc::kill(self.pid(), libc::SIGKILL) };
        assert_eq!(rc, 0, "kill(SIGKILL) failed");
    }

    /// Wait for the process to exit; panics (after killing it) if it takes longer than `t`.
    pub async fn wait_exit(&mut self, t: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("server not running");
        match timeout(t, child.wait()).await {
            Ok(st) => {
                let st = st.expect("wait");
                self.child = None;
                st
            }
            Err(_) => {
                let _ = child.start_kill();
                panic!("livechat did not exit within {t:?}; stderr:\n{}", self.stderr());
            }
        }
    }

    /// Start the server again on the same database (new port). Kills a live process first.
    pub async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = timeout(Duration::from_secs(10), child.wait()).await;
        }
        self.stderr.lock().unwrap().push_str("---- restart ----\n");
        self.spawn().await;
    }

    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("server does not own a TestDb")
    }

    pub async fn db_client(&self) -> tokio_postgres::Client {
        pg_connect(&self.db_url).await
    }

    // --- URLs and tokens -----------------------------------------------------------------

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/ws/chat?token={}", self.addr, token)
    }

    /// HS256 token with this server's secret, `exp` = now + `ttl_secs` (may be negative).
    pub fn mint_token(&self, user_id: i64, ttl_secs: i64) -> String {
        mint_token(&self.jwt_secret, &user_id.to_string(), ttl_secs)
    }

    // --- REST ----------------------------------------------------------------------------

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

    /// `GET /chat/history?room_id=..&limit=..` → the array (asserts 200).
    pub async fn history(&self, token: &str, room_id: i64, limit: u32) -> Vec<Value> {
        let r = self.get_json(&format!("/chat/history?room_id={room_id}&limit={limit}"), token).await;
        assert_eq!(r.status, 200, "history: {r:?}");
        r.body.as_array().unwrap_or_else(|| panic!("history is not an array: {r:?}")).clone()
    }

    // --- WebSocket -----------------------------------------------------------------------

    pub async fn ws(&self, token: &str) -> WsClient {
        WsClient::connect(&self.ws_url(token))
            .await
            .unwrap_or_else(|e| panic!("ws connect failed: {e:?}; server stderr:\n{}", self.stderr()))
    }

    /// Connect and wait until the connection is registered: sends an empty `sync` and waits for
    /// `synced` (which the server only answers once the session runs).
    pub async fn ws_ready(&self, token: &str) -> WsClient {
        let mut c = self.ws(token).await;
        c.sync_barrier().await;
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let err = self.stderr();
            let tail: String = {
                let start = err.len().saturating_sub(16 * 1024);
                let start = (start..err.len()).find(|i| err.is_char_boundary(*i)).unwrap_or(0);
                err[start..].to_string()
            };
            eprintln!("---- livechat stderr (tail) ----\n{tail}\n--------------------------------");
        }
    }
}

pub fn mint_token(secret: &str, sub: &str, ttl_secs: i64) -> String {
    let exp = now_secs() as i64 + ttl_secs;
    mint_claims(secret, &json!({ "sub": sub, "exp": exp }))
}

pub fn mint_claims(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode jwt")
}

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

    /// Asserts `status` and the SPEC §4 error shape `{"error":{"code":code,"message":str}}`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; response: {self:?}");
        assert_eq!(self.body["error"]["code"], json!(code), "error code; response: {self:?}");
        assert!(self.body["error"]["message"].is_string(), "error.message string; response: {self:?}");
    }
}

// =====================================================================================
// === impl WsClient ===
// =====================================================================================

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a WebSocket upgrade failed.
#[derive(Debug)]
pub enum WsConnectError {
    /// The server answered the upgrade with a non-101 HTTP response.
    Http {
        status: u16,
        body: String,
    },
    Other(String),
}

impl WsConnectError {
    pub fn status(&self) -> Option<u16> {
        match self {
            WsConnectError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn body_json(&self) -> Value {
        match self {
            WsConnectError::Http { body, .. } => serde_json::from_str(body).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// One step of [`WsClient::next_event_within`].
#[derive(Debug, Clone, PartialEq)]
pub enum WsEvent {
    Json(Value),
    /// Close frame code (`None`: no code, or the stream ended without a Close frame).
    Closed(Option<u16>),
    Timeout,
}

/// A real WebSocket client (tokio-tungstenite; answers pings automatically while reading).
pub struct WsClient {
    ws: Ws,
    sync_nonce: u64,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<WsClient, WsConnectError> {
        Self::connect_with_headers(url, &[]).await
    }

    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, WsConnectError> {
        let mut req = url.into_client_request().map_err(|e| WsConnectError::Other(e.to_string()))?;
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
            req.headers_mut().insert(name, HeaderValue::from_str(v).unwrap());
        }
        match timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
            Err(_) => Err(WsConnectError::Other("upgrade timed out".into())),
            Ok(Ok((ws, _resp))) => Ok(WsClient { ws, sync_nonce: 0 }),
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                Err(WsConnectError::Http { status, body })
            }
            Ok(Err(e)) => Err(WsConnectError::Other(e.to_string())),
        }
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    pub async fn send_text(&mut self, s: impl Into<String>) {
        let s: String = s.into();
        bounded("ws send", self.ws.send(Message::text(s))).await.expect("ws send");
    }

    /// Send without panicking on error (for tests where the server may already have closed).
    pub async fn try_send_json(&mut self, v: Value) -> bool {
        matches!(timeout(RECV_TIMEOUT, self.ws.send(Message::text(v.to_string()))).await, Ok(Ok(())))
    }

    pub async fn send_message(&mut self, v: Message) {
        bounded("ws send", self.ws.send(v)).await.expect("ws send");
    }

    /// `{"type":"message","room_id":room,"content":content,"client_msg_id":cid}`.
    pub async fn send_msg(&mut self, room_id: i64, content: &str, client_msg_id: Option<&str>) {
        let mut v = json!({ "type": "message", "room_id": room_id, "content": content });
        if let Some(c) = client_msg_id {
            v["client_msg_id"] = json!(c);
        }
        self.send_json(v).await;
    }

    /// Next JSON text event (skips ping/pong). Panics on timeout, close, binary or bad JSON.
    pub async fn recv_json(&mut self) -> Value {
        self.recv_json_within(RECV_TIMEOUT).await.expect("timed out waiting for a ws event")
    }

    /// Like [`recv_json`] but returns `None` on timeout.
    pub async fn recv_json_within(&mut self, t: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => panic!("ws stream ended while waiting for an event"),
                Ok(Some(Err(e))) => panic!("ws error while waiting for an event: {e}"),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    return Some(
                        serde_json::from_str(t.as_str())
                            .unwrap_or_else(|e| panic!("server sent non-JSON text {t:?}: {e}")),
                    )
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(b) => panic!("server sent a binary frame ({} bytes)", b.len()),
                Message::Close(c) => panic!("unexpected close while waiting for an event: {c:?}"),
            }
        }
    }

    /// Next event of type `ty`, skipping other types (presence, typing, ...). An `error`
    /// event while waiting for another type panics (with the error) so failures are explicit.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        self.recv_types(&[ty]).await
    }

    /// Next event whose type is one of `tys` (an `error` panics unless listed).
    pub async fn recv_types(&mut self, tys: &[&str]) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .recv_json_within(left)
                .await
                .unwrap_or_else(|| panic!("timed out waiting for an event of type {tys:?}"));
            let t = v["type"].as_str().unwrap_or_default();
            if tys.contains(&t) {
                return v;
            }
            if t == "error" {
                panic!("got an error event while waiting for {tys:?}: {v}");
            }
        }
    }

    /// Next event matching `pred` (others skipped, errors included in what `pred` sees).
    pub async fn recv_until(&mut self, what: &str, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_json_within(left).await.unwrap_or_else(|| panic!("timed out waiting for {what}"));
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends `message` and returns the sender's echo (matched by `client_msg_id`).
    pub async fn send_and_echo(&mut self, room_id: i64, content: &str) -> Value {
        let cid = format!("c-{}", random_hex(8));
        self.send_msg(room_id, content, Some(&cid)).await;
        let cid2 = cid.clone();
        self.recv_until(&format!("echo of {cid}"), move |v| {
            if v["type"] == "error" {
                panic!("error instead of echo for {cid2}: {v}");
            }
            v["type"] == "message" && v["client_msg_id"] == json!(cid2)
        })
        .await
    }

    /// Round trip that proves every event the server queued for us before this call has been
    /// read: sends `sync` with no rooms and waits for its `synced` (returning the
    /// events received meanwhile, `synced` excluded).
    pub async fn sync_barrier(&mut self) -> Vec<Value> {
        self.sync_nonce += 1;
        self.send_json(json!({ "type": "sync", "rooms": {} })).await;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_json_within(left).await.expect("timed out waiting for synced");
            if v["type"] == "synced" {
                return seen;
            }
            seen.push(v);
        }
    }

    /// Next text event or the end of the connection, within `t` (`Timeout` if neither).
    pub async fn next_event_within(&mut self, t: Duration) -> WsEvent {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return WsEvent::Timeout,
                Ok(None) | Ok(Some(Err(_))) => return WsEvent::Closed(None),
                Ok(Some(Ok(Message::Close(c)))) => return WsEvent::Closed(c.map(|f| u16::from(f.code))),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return WsEvent::Json(serde_json::from_str(t.as_str()).unwrap_or(Value::Null))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads until a Close frame and returns its code (`None` if the close had no code or the
    /// stream ended without a Close frame). Text frames before it are skipped.
    pub async fn expect_close(&mut self) -> Option<u16> {
        self.expect_close_within(RECV_TIMEOUT).await
    }

    pub async fn expect_close_within(&mut self, t: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("timed out after {t:?} waiting for the server to close"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(c)))) => return c.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Like [`expect_close`] but also returns the text events seen before the close.
    pub async fn events_until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("timed out waiting for the server to close; events: {seen:?}"),
                Ok(None) | Ok(Some(Err(_))) => return (seen, None),
                Ok(Some(Ok(Message::Close(c)))) => return (seen, c.map(|f| u16::from(f.code))),
                Ok(Some(Ok(Message::Text(t)))) => {
                    seen.push(serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.to_string())))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

// =====================================================================================
// === raw TCP WebSocket (protocol-violation tests) ===
// =====================================================================================

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Encode one client frame by hand. `masked = false` makes an (illegal) unmasked frame.
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        let key: [u8; 4] = rand::random();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A server frame as read by [`RawWs`].
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// What ended a raw connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEnd {
    /// A Close frame; `None` if it carried no code.
    Close(Option<u16>),
    /// EOF or reset without a Close frame.
    Eof,
}

impl RawEnd {
    pub fn code(&self) -> Option<u16> {
        match self {
            RawEnd::Close(c) => *c,
            RawEnd::Eof => None,
        }
    }
}

/// A hand-rolled WebSocket client over a plain TCP socket.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// Raw HTTP response head (and body when Content-Length says so).
#[derive(Debug, Clone)]
pub struct RawHttp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawWs {
    /// Completes the upgrade of `/ws/chat?token=...`; panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, token: &str) -> RawWs {
        Self::connect_opts(addr, token, None).await
    }

    /// Same, with an optional SO_RCVBUF set before connecting (for never-reading clients).
    pub async fn connect_opts(addr: SocketAddr, token: &str, rcvbuf: Option<u32>) -> RawWs {
        let sock = TcpSocket::new_v4().expect("socket");
        if let Some(n) = rcvbuf {
            sock.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        let stream = bounded("tcp connect", sock.connect(addr)).await.expect("tcp connect");
        let mut raw = RawWs { stream, buf: Vec::new() };
        let req = format!(
            "GET /ws/chat?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        raw.stream.write_all(req.as_bytes()).await.expect("write upgrade");
        let head = raw.read_head().await;
        assert!(head.starts_with("HTTP/1.1 101"), "expected 101 Switching Protocols, got:\n{head}");
        raw
    }

    /// Read an HTTP response head (through `\r\n\r\n`); leftover bytes stay buffered.
    async fn read_head(&mut self) -> String {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 4);
                return head;
            }
            let mut tmp = [0u8; 4096];
            let n = bounded("read http head", self.stream.read(&mut tmp)).await.expect("read head");
            assert!(n > 0, "EOF before the HTTP response head; got {:?}", String::from_utf8_lossy(&self.buf));
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Write bytes, ignoring errors (the server may already have closed).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        matches!(timeout(RECV_TIMEOUT, self.stream.write_all(bytes)).await, Ok(Ok(())))
    }

    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> bool {
        let f = encode_frame(fin, opcode, payload, true);
        self.send_raw(&f).await
    }

    pub async fn send_text(&mut self, s: &str) -> bool {
        self.send_frame(true, OP_TEXT, s.as_bytes()).await
    }

    async fn fill(&mut self, need: usize, deadline: tokio::time::Instant) -> Result<(), RawEnd> {
        while self.buf.len() < need {
            let mut tmp = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut tmp)).await {
                Err(_) => panic!("timed out reading from the server"),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(RawEnd::Eof),
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
        Ok(())
    }

    /// Next server frame; `Err(Eof)` on EOF/reset. Panics past `deadline`.
    pub async fn read_frame_by(&mut self, deadline: tokio::time::Instant) -> Result<RawFrame, RawEnd> {
        self.fill(2, deadline).await?;
        let b0 = self.buf[0];
        let b1 = self.buf[1];
        assert_eq!(b1 & 0x80, 0, "server frames must not be masked (RFC 6455 §5.1)");
        let (len, hdr) = match b1 & 0x7f {
            126 => {
                self.fill(4, deadline).await?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10, deadline).await?;
                let mut a = [0u8; 8];
                a.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(a) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(hdr + len, deadline).await?;
        let payload = self.buf[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        Ok(RawFrame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload })
    }

    pub async fn read_frame(&mut self) -> Result<RawFrame, RawEnd> {
        self.read_frame_by(tokio::time::Instant::now() + RECV_TIMEOUT).await
    }

    /// Next text frame parsed as JSON (pings/pongs skipped, not answered).
    pub async fn read_json(&mut self) -> Value {
        loop {
            let f = self.read_frame().await.unwrap_or_else(|e| panic!("connection ended: {e:?}"));
            match f.opcode {
                OP_TEXT => return serde_json::from_slice(&f.payload).expect("server text is JSON"),
                OP_PING | OP_PONG => continue,
                OP_CLOSE => panic!("unexpected close: {:?}", close_code(&f.payload)),
                op => panic!("unexpected opcode {op}"),
            }
        }
    }

    /// Reads (skipping data and ping frames, never answering) until the server's Close frame
    /// or EOF, within `t`. Returns what ended the connection.
    pub async fn read_close_within(&mut self, t: Duration) -> RawEnd {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match self.read_frame_by(deadline).await {
                Err(end) => return end,
                Ok(f) if f.opcode == OP_CLOSE => return RawEnd::Close(close_code(&f.payload)),
                Ok(_) => continue,
            }
        }
    }

    /// [`read_close_within`] with [`RECV_TIMEOUT`]; returns the close code (None = no code/EOF).
    pub async fn read_close_code(&mut self) -> Option<u16> {
        self.read_close_within(RECV_TIMEOUT).await.code()
    }

    /// Same as `read_close_within` but also collects the JSON text frames seen.
    pub async fn read_all_until_close(&mut self, t: Duration) -> (Vec<Value>, RawEnd) {
        let deadline = tokio::time::Instant::now() + t;
        let mut seen = Vec::new();
        loop {
            match self.read_frame_by(deadline).await {
                Err(end) => return (seen, end),
                Ok(f) if f.opcode == OP_CLOSE => return (seen, RawEnd::Close(close_code(&f.payload))),
                Ok(f) if f.opcode == OP_TEXT => seen.push(serde_json::from_slice(&f.payload).unwrap_or(Value::Null)),
                Ok(_) => continue,
            }
        }
    }
}

pub fn close_code(payload: &[u8]) -> Option<u16> {
    if payload.len() >= 2 {
        Some(u16::from_be_bytes([payload[0], payload[1]]))
    } else {
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Send a raw HTTP request on a fresh TCP connection and read the response (head + body by
/// Content-Length, else until EOF), bounded by [`RECV_TIMEOUT`].
pub async fn raw_http(addr: SocketAddr, request: &str) -> RawHttp {
    let mut s = bounded("tcp connect", TcpStream::connect(addr)).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write request");
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    let mut head_end = None;
    loop {
        if head_end.is_none() {
            head_end = find(&buf, b"\r\n\r\n");
        }
        if let Some(he) = head_end {
            let head = String::from_utf8_lossy(&buf[..he]).into_owned();
            let cl = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.trim().eq_ignore_ascii_case("content-length") {
                    v.trim().parse::<usize>().ok()
                } else {
                    None
                }
            });
            if let Some(cl) = cl {
                if buf.len() >= he + 4 + cl {
                    let body = String::from_utf8_lossy(&buf[he + 4..he + 4 + cl]).into_owned();
                    return RawHttp { status: parse_status(&head), head, body };
                }
            }
        }
        let mut tmp = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) => panic!("raw_http: timed out; got {:?}", String::from_utf8_lossy(&buf)),
            Ok(Ok(0)) | Ok(Err(_)) => {
                let he = find(&buf, b"\r\n\r\n").unwrap_or_else(|| {
                    panic!("raw_http: EOF before response head: {:?}", String::from_utf8_lossy(&buf))
                });
                let head = String::from_utf8_lossy(&buf[..he]).into_owned();
                let body = String::from_utf8_lossy(&buf[he + 4..]).into_owned();
                return RawHttp { status: parse_status(&head), head, body };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

fn parse_status(head: &str) -> u16 {
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

// =====================================================================================
// === assertions on event shapes ===
// =====================================================================================

/// Asserts a server `message` event has exactly the SPEC §5 fields with the right types.
#[track_caller]
pub fn assert_message_event(v: &Value) {
    assert_eq!(v["type"], "message", "{v}");
    for k in ["id", "room_id", "seq", "sender_id"] {
        assert!(v[k].is_i64(), "message.{k} must be an integer: {v}");
    }
    assert!(v["content"].is_string(), "message.content: {v}");
    assert!(v.get("client_msg_id").is_some(), "message.client_msg_id must be present (or null): {v}");
    assert!(v["client_msg_id"].is_string() || v["client_msg_id"].is_null(), "message.client_msg_id: {v}");
    assert_rfc3339_utc(&v["timestamp"]);
}

/// Asserts a history message object has the SPEC §4 fields.
#[track_caller]
pub fn assert_history_message(v: &Value) {
    for k in ["id", "room_id", "seq", "sender_id"] {
        assert!(v[k].is_i64(), "history.{k} must be an integer: {v}");
    }
    assert!(v["sender"]["id"].is_i64(), "history.sender.id: {v}");
    assert_eq!(v["sender"]["id"], v["sender_id"], "sender.id == sender_id: {v}");
    assert!(v["sender"]["username"].is_string(), "history.sender.username: {v}");
    assert!(v["content"].is_string(), "history.content: {v}");
    assert!(v["delivered"].is_boolean(), "history.delivered: {v}");
    assert!(v["read"].is_boolean(), "history.read: {v}");
    assert!(v.get("client_msg_id").is_some(), "history.client_msg_id present (or null): {v}");
    assert_rfc3339_utc(&v["timestamp"]);
}

#[track_caller]
pub fn assert_rfc3339_utc(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp must be a string: {v}"));
    let dt = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("timestamp {s:?} is not RFC 3339: {e}"));
    assert_eq!(dt.offset().local_minus_utc(), 0, "timestamp {s:?} must be UTC");
}

/// Asserts a WS `error` event with `code`.
#[track_caller]
pub fn assert_ws_error(v: &Value, code: &str) {
    assert_eq!(v["type"], "error", "expected an error event: {v}");
    assert_eq!(v["code"], json!(code), "error code: {v}");
    assert!(v["message"].is_string(), "error.message: {v}");
}

// =====================================================================================
// === impl PrivatePg (a private cluster a test may stop and start) ===
// =====================================================================================

/// A private PostgreSQL cluster in a temp dir, on a random loopback port. Only for tests that
/// stop/start PostgreSQL: the shared test cluster is never touched. As root, every PostgreSQL
/// command runs as the `postgres` OS user via `runuser`.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: std::path::PathBuf,
    running: bool,
}

impl PrivatePg {
    pub fn pg_bin() -> std::path::PathBuf {
        if let Ok(d) = std::env::var("LIVECHAT_TEST_PG_BIN") {
            return d.into();
        }
        for d in ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin", "/usr/bin"] {
            let p = std::path::Path::new(d);
            if p.join("initdb").exists() && p.join("pg_ctl").exists() {
                return p.to_path_buf();
            }
        }
        panic!("no PostgreSQL binaries: set LIVECHAT_TEST_PG_BIN");
    }

    fn is_root() -> bool {
        unsafe { libc::geteuid() == 0 }
    }

    /// Run a PostgreSQL tool (as `postgres` when root), bounded; panics with its output.
    async fn run(&self, tool: &str, args: &[String]) -> std::process::Output {
        let exe = self.bin.join(tool);
        let mut cmd = if Self::is_root() {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        // pg_ctl start leaves the postmaster holding our pipes unless it logs to a file (-l).
        let out = timeout(Duration::from_secs(60), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{tool} timed out"))
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        out
    }

    pub async fn start_new() -> PrivatePg {
        let dir = tempfile::Builder::new().prefix("lc-pg-").tempdir().expect("tempdir");
        if Self::is_root() {
            let name = std::ffi::CString::new("postgres").unwrap();
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            assert!(!pw.is_null(), "running as root but there is no `postgres` OS user");
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            let path = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0, "chown temp dir");
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut pg = PrivatePg { dir, port, bin: Self::pg_bin(), running: false };
        let data = pg.data_dir();
        let out = pg
            .run(
                "initdb",
                &["-D".into(), data, "-U".into(), "postgres".into(), "-A".into(), "trust".into(), "--no-sync".into()],
            )
            .await;
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        pg.start().await;
        pg
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_string()
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn start(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").to_str().unwrap().to_string();
        let out = self
            .run(
                "pg_ctl",
                &[
                    "-D".into(),
                    self.data_dir(),
                    "-l".into(),
                    log.clone(),
                    "-o".into(),
                    opts,
                    "-w".into(),
                    "-t".into(),
                    "30".into(),
                    "start".into(),
                ],
            )
            .await;
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}\nlog:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
    }

    /// Stop (fast mode: disconnects clients), waiting until it is down.
    pub async fn stop(&mut self) {
        let out = self
            .run(
                "pg_ctl",
                &[
                    "-D".into(),
                    self.data_dir(),
                    "-m".into(),
                    "fast".into(),
                    "-w".into(),
                    "-t".into(),
                    "30".into(),
                    "stop".into(),
                ],
            )
            .await;
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.running {
            let exe = self.bin.join("pg_ctl");
            let data = self.data_dir();
            let mut cmd = if Self::is_root() {
                let mut c = std::process::Command::new("runuser");
                c.arg("-u").arg("postgres").arg("--").arg(&exe);
                c
            } else {
                std::process::Command::new(&exe)
            };
            let _ = cmd
                .args(["-D", &data, "-m", "immediate", "-w", "-t", "20", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
