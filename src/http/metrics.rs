//! `GET /metrics`: the Prometheus exposition, with the gauges that are cheaper to sample at
//! scrape time than to maintain. One responder for `serve` (main or separate listener) and
//! `livechat worker` (which has no other HTTP API).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use super::error_response;
use crate::app::App;
use crate::error::ApiError;
use crate::telemetry::names;

/// `/metrics` of `serve`: probes PostgreSQL and Redis (bounded) so their gauges exist without a
/// `/readyz` caller, samples the process gauges, renders.
pub async fn respond(app: &App) -> Response<Full<Bytes>> {
    app.probe().await;
    metrics::gauge!(names::STORAGE_QUEUE_DEPTH).set(app.chat.write_queue_depth() as f64);
    exposition(app.ops.metrics.as_ref())
}

/// Serves `/metrics` only (the separate `server.metrics_listen` address of `serve`).
pub async fn route_metrics_only(app: Arc<App>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() == Method::GET && req.uri().path() == "/metrics" {
        respond(&app).await
    } else {
        error_response(&ApiError::not_found("only /metrics is served here"))
    }
}

/// Samples the process gauges and renders the exposition.
fn exposition(handle: Option<&PrometheusHandle>) -> Response<Full<Bytes>> {
    sample_process();
    let body = handle.map(|h| h.render()).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Resident memory and open file descriptors, from `/proc/self`.
fn sample_process() {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kb) = kb {
            metrics::gauge!(names::PROCESS_RESIDENT_MEMORY_BYTES).set(kb * 1024.0);
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(names::PROCESS_OPEN_FDS).set(dir.count() as f64);
    }
}

/// `livechat worker`'s `/metrics` on `server.metrics_listen`: a bare accept loop (no REST, no
/// WebSocket) with the same request-head timeout as the main listener.
pub async fn serve_worker_metrics(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: the scrape retries; do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handle = handle.clone();
                async move {
                    let resp = if req.uri().path() == "/metrics" {
                        exposition(Some(&handle))
                    } else {
                        error_response(&ApiError::not_found("only /metrics is served here"))
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let mut http = hyper::server::conn::http1::Builder::new();
            // A request head must arrive promptly (slowloris), as on the main listener.
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = http.serve_connection(io, svc).await;
        });
    }
}
