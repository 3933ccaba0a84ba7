//! `livechat serve` as a child process: start, signals, restart, its output.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::{
    bin_path, drain_stderr, mint_token, pg_connect, random_hex, scrub_env, send_signal, watch_listening, TestDb,
    WsClient, RECV_TIMEOUT, START_TIMEOUT,
};

/// Message rate limits high enough that tests can post dozens of messages quickly.
pub const FAST_LIMITS: &[(&str, &str)] =
    &[("LIVECHAT_LIMITS__MESSAGES_PER_SEC", "10000"), ("LIVECHAT_LIMITS__MESSAGES_BURST", "10000")];

/// A running `livechat serve` process with its own database.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub db_url: String,
    pub jwt_secret: String,
    pub admin_token: String,
    env: Vec<(String, String)>,
    /// Arguments after `serve` (`--dev`).
    args: Vec<&'static str>,
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

    /// Fresh database + `serve --dev` (the secrets are still the test's own: `--dev` only
    /// generates missing ones).
    pub async fn start_dev(env: &[(&str, &str)]) -> TestServer {
        let db = TestDb::create().await;
        let url = db.url.clone();
        let mut s = Self::start_with_args(&url, env, vec!["--dev"]).await;
        s.db = Some(db);
        s
    }

    /// Server on a database URL whose lifetime the caller manages.
    pub async fn start_with_url(db_url: &str, env: &[(&str, &str)]) -> TestServer {
        Self::start_with_args(db_url, env, Vec::new()).await
    }

    async fn start_with_args(db_url: &str, env: &[(&str, &str)], args: Vec<&'static str>) -> TestServer {
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
            args,
            stderr: Arc::new(Mutex::new(String::new())),
            http,
            db: None,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(bin_path());
        cmd.arg("serve").args(&self.args);
        scrub_env(&mut cmd);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn livechat serve");
        let stderr_task = drain_stderr(child.stderr.take().unwrap(), self.stderr.clone());
        let listening = watch_listening(child.stdout.take().unwrap());

        let addr = match timeout(START_TIMEOUT, listening).await {
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

    /// Sends the signal named `sig` (`"TERM"`, `"HUP"`, ...); panics if it cannot be sent.
    pub fn signal(&self, sig: &str) {
        assert!(send_signal(self.pid(), sig), "kill(SIG{sig}) failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigkill(&self) {
        self.signal("KILL");
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
