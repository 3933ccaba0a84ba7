//! Redis for tests: the shared test instance, the notification keys a test leaves there, and
//! private `redis-server` processes a test may kill.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{bounded, free_port, random_hex, RECV_TIMEOUT};

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:56380";

/// The URL of the shared test Redis.
pub fn redis_url() -> String {
    std::env::var("LIVECHAT_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// A connection to the shared test Redis.
pub async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).expect("redis url");
    bounded("redis connect", client.get_multiplexed_async_connection()).await.expect("redis connect")
}

/// A fresh notification key prefix (`LIVECHAT_NOTIFY__KEY_PREFIX`), so tests sharing one Redis
/// never see each other's jobs.
pub fn notify_key_prefix() -> String {
    format!("livechat:test:{}", random_hex(6))
}

/// Removes the notification queue keys under `prefix` from the shared Redis (best effort).
pub async fn redis_cleanup(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else { return };
    if let Ok(Ok(mut c)) = tokio::time::timeout(RECV_TIMEOUT, client.get_multiplexed_async_connection()).await {
        let keys = [format!("{prefix}:jobs"), format!("{prefix}:retry"), format!("{prefix}:dead")];
        let _ = redis::cmd("DEL").arg(&keys).query_async::<()>(&mut c).await;
    }
}

/// Starts `redis-server <args>` (killed when the returned child is dropped) and returns once it
/// accepts TCP connections on `port`.
pub async fn spawn_redis_server(args: &[&str], port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-server (is it installed? see scripts/services.sh)");
    let deadline = Instant::now() + RECV_TIMEOUT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not listen on {port} within {RECV_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

/// A private `redis-server` on a free loopback port (a test may kill and restart it; the
/// shared test Redis is never touched). Killed on drop.
pub struct PrivateRedis {
    child: Option<Child>,
    port: u16,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut r = PrivateRedis { child: None, port: free_port() };
        r.spawn().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server on the same port; returns once it accepts connections.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let port = self.port.to_string();
        let args = ["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"];
        self.child = Some(spawn_redis_server(&args, self.port).await);
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("redis-server not running");
        child.start_kill().expect("kill redis-server");
        bounded("redis-server exit", child.wait()).await.expect("wait redis-server");
    }
}
