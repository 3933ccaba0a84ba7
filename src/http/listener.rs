//! The accept loop: a connection slot per socket, hyper http1 with upgrades and a request-head
//! timeout (hyper's header timeout never fires without a timer: slowloris).

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::telemetry::names;
use crate::util::Backoff;

/// Which routes a listener serves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Everything (REST, WebSocket, health, and `/metrics` unless it has its own address).
    All,
    /// `/metrics` only.
    Metrics,
}

/// Accepts until `stop` is cancelled.
pub async fn serve(app: Arc<App>, listener: TcpListener, routes: Routes, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(app.edge.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(app.edge.header_timeout).keep_alive(true).max_buf_size(64 * 1024);
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => Arc::new(p),
                Err(_) => return,
            },
            _ = stop.cancelled() => return,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the loop survives.
                    tracing::warn!(error = %e, "Accept failed.");
                    metrics::counter!(names::HTTP_ACCEPT_ERRORS_TOTAL).increment(1);
                    backoff.wait().await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        backoff.reset();
        let _ = stream.set_nodelay(true);
        let app2 = app.clone();
        let conn_permit = permit.clone();
        let service = service_fn(move |req| {
            let app = app2.clone();
            let permit = conn_permit.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match routes {
                    Routes::All => super::router::route(app, req, permit).await,
                    Routes::Metrics => super::metrics::route_metrics_only(app, req).await,
                })
            }
        });
        let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let stop = stop.clone();
        app.edge.tasks.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended with an error.");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}
