//! A real webhook receiver (hyper over loopback) that records every notification job POSTed to
//! it, and the notification settings that point a server at it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::bounded;

/// The notification settings a webhook test needs: deliver to `hook_url`, keep the queue under
/// the key prefix `prefix`, and retry, time out and reclaim quickly enough for a test.
pub fn webhook_env<'a>(hook_url: &'a str, prefix: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("LIVECHAT_NOTIFY_WEBHOOK_URL", hook_url),
        ("LIVECHAT_NOTIFY__KEY_PREFIX", prefix),
        ("LIVECHAT_NOTIFY__BACKOFF_BASE_MS", "50"),
        ("LIVECHAT_NOTIFY__WEBHOOK_TIMEOUT_MS", "1000"),
        ("LIVECHAT_NOTIFY__CLAIM_IDLE_MS", "1500"),
    ]
}

/// One request the receiver got.
#[derive(Debug)]
pub struct WebhookCall {
    /// The `X-Livechat-Signature` header, if any.
    pub signature: Option<String>,
    /// The exact body bytes (what the signature covers).
    pub body: Bytes,
    /// The body parsed as JSON (`Value::Null` if it is not).
    pub json: Value,
    /// The status the receiver answered with.
    pub status: u16,
}

struct HookState {
    tx: mpsc::UnboundedSender<WebhookCall>,
    seen: AtomicUsize,
    fail_first: AtomicUsize,
    fail_all: AtomicBool,
}

/// A local HTTP server recording every POST; answers 500 while told to fail, else 200.
/// Stops on drop.
pub struct WebhookReceiver {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<WebhookCall>,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// On a free loopback port.
    pub async fn start() -> WebhookReceiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// On `addr` (e.g. the address an earlier receiver had, to take its place).
    pub async fn start_on(addr: SocketAddr) -> WebhookReceiver {
        let listener = TcpListener::bind(addr).await.expect("bind webhook receiver");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(HookState {
            tx,
            seen: AtomicUsize::new(0),
            fail_first: AtomicUsize::new(0),
            fail_all: AtomicBool::new(false),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(serve_connection(stream, st.clone()));
            }
        });
        WebhookReceiver { addr, rx, state, task }
    }

    /// The URL to configure as `LIVECHAT_NOTIFY_WEBHOOK_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answer 500 to the first `n` requests (counted from the receiver's start).
    pub fn fail_first(&self, n: usize) {
        self.state.fail_first.store(n, Ordering::SeqCst);
    }

    /// Answer 500 to every request from now on (`true`), or stop doing so (`false`).
    pub fn fail_all(&self, on: bool) {
        self.state.fail_all.store(on, Ordering::SeqCst);
    }

    /// The next request (within [`RECV_TIMEOUT`](super::RECV_TIMEOUT), else a panic).
    pub async fn next(&mut self) -> WebhookCall {
        bounded("a webhook call", self.rx.recv()).await.expect("receiver channel closed")
    }

    /// The next request, or `None` if none arrives within `t`.
    pub async fn next_within(&mut self, t: Duration) -> Option<WebhookCall> {
        tokio::time::timeout(t, self.rx.recv()).await.ok().flatten()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(stream: TcpStream, st: Arc<HookState>) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| record(req, st.clone()));
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
}

/// Records one request and answers it (500 while failing, else 200) with an empty body.
async fn record(req: Request<Incoming>, st: Arc<HookState>) -> Result<Response<Full<Bytes>>, Infallible> {
    let signature = req.headers().get("x-livechat-signature").and_then(|v| v.to_str().ok()).map(String::from);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let n = st.seen.fetch_add(1, Ordering::SeqCst);
    let fail = st.fail_all.load(Ordering::SeqCst) || n < st.fail_first.load(Ordering::SeqCst);
    let status = if fail { 500 } else { 200 };
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = st.tx.send(WebhookCall { signature, body, json, status });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    Ok(resp)
}
