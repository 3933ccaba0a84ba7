//! Start-up (migrate, bind, spawn) and the graceful drain, in one place:
//! signal → readiness off → stop accepting → commit queued writes → close sockets 1001 and stop
//! the notification relay and workers → wait for connections → exit, all within
//! `server.drain_secs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::Auth;
use crate::bus::bridge::Bridge;
use crate::bus::Bus;
use crate::config::Config;
use crate::error::StoreError;
use crate::http::listener::{self, Routes};
use crate::presence::cluster::ClusterPresence;
use crate::presence::Presence;
use crate::redis_link::RedisLink;
use crate::store::{self, Store};

/// Why the server could not start; each renders as one actionable line.
#[derive(Debug, Error)]
pub enum StartError {
    /// A required setting is missing.
    #[error("{0}")]
    Config(String),
    /// PostgreSQL cannot be reached or migrated.
    #[error("cannot use PostgreSQL ({0}); is it running and is DATABASE_URL right?")]
    Database(StoreError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}; choose another address with LIVECHAT_LISTEN or stop what uses it")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Secrets resolved for this run.
pub struct Secrets {
    /// JWT HMAC key.
    pub jwt_secret: String,
    /// Admin bearer token.
    pub admin_token: String,
}

/// Resolves the secrets: required, or generated with `--dev`.
pub fn secrets(config: &Config, dev: bool) -> Result<Secrets, StartError> {
    let gen = || {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 40)
    };
    let pick = |v: &Option<String>, var: &str| match v {
        Some(s) if !s.is_empty() => Ok(s.clone()),
        _ if dev => Ok(gen()),
        _ => Err(StartError::Config(format!("{var} is not set; set it (or run `livechat serve --dev` for local use)"))),
    };
    Ok(Secrets {
        jwt_secret: pick(&config.auth.jwt_secret, "LIVECHAT_JWT_SECRET")?,
        admin_token: pick(&config.auth.admin_token, "LIVECHAT_ADMIN_TOKEN")?,
    })
}

/// Runs `livechat serve` until SIGTERM/SIGINT, then drains.
pub async fn serve(config: Config, dev: bool) -> Result<(), StartError> {
    let addr = config.listen_addr().map_err(|e| StartError::Config(e.to_string()))?;
    if dev && !addr.ip().is_loopback() {
        return Err(StartError::Config(format!(
            "--dev refuses to listen on the non-loopback address {addr}; use 127.0.0.1"
        )));
    }
    let secrets = secrets(&config, dev)?;
    let url = config
        .database
        .url
        .clone()
        .ok_or_else(|| StartError::Config("DATABASE_URL is not set (postgres://user:pass@host:port/db)".into()))?;

    // One rustls crypto provider for every TLS client (PostgreSQL, Redis, webhooks); an
    // error means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_file = config.database.ca_file.as_deref();
    let applied = store::migrate::run_with_ca_file(&url, ca_file).await.map_err(StartError::Database)?;
    tracing::info!(applied, "Migrations applied.");

    let connect_timeout = Duration::from_millis(config.database.connect_timeout_ms);
    let db =
        Store::with_ca_file(&url, config.database.pool_size, connect_timeout, ca_file).map_err(StartError::Database)?;
    let bus = Bus::new(db.clone());
    let committed = Arc::new(tokio::sync::Notify::new());
    let (writer, batchers) = store::batcher::new(
        db.clone(),
        bus.clone(),
        config.storage.writers,
        config.storage.queue_max,
        config.storage.batch_max,
        config.write_timeout(),
        config.notify.enabled(),
        committed.clone(),
    );
    let listener = bind(addr, config.server.reuse_port)?;
    let metrics_listener = match config.metrics_addr().map_err(|e| StartError::Config(e.to_string()))? {
        Some(a) => Some(bind(a, config.server.reuse_port)?),
        None => None,
    };
    let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let auth = Auth::new(&secrets.jwt_secret, &secrets.admin_token, config.auth.leeway_secs);
    let metrics = crate::telemetry::install_metrics();
    let drain_secs = config.server.drain_secs;
    let redis = match config.redis.url.as_deref() {
        Some(url) => Some(Arc::new(
            RedisLink::with_ca_file(url, config.redis.ca_file.as_deref())
                .map_err(|e| StartError::Config(e.to_string()))?,
        )),
        None => None,
    };
    let notify_queue =
        (config.notify.enabled() || redis.is_some()).then(|| crate::notify::queue(&config, redis.clone()));
    let cluster = match &redis {
        Some(link) => Some(Cluster::new(&config, &db, link.clone()).await?),
        None => None,
    };
    let presence = cluster.as_ref().map_or_else(Presence::local, |c| Presence::clustered(c.presence.clone()));
    let app = App::new(config, db, writer, bus, auth, metrics, redis, committed, notify_queue.clone(), presence);
    // Runs until the process exits: the drain's last echoes still cross to the other nodes.
    let cluster_stop = CancellationToken::new();
    if let Some(c) = cluster {
        c.start(&app, cluster_stop.clone());
    }

    if dev {
        print_dev_banner(&app, &secrets, local).await;
    }

    let drain_writer = CancellationToken::new();
    let batcher_tasks: Vec<_> = batchers.into_iter().map(|b| tokio::spawn(b.run(drain_writer.clone()))).collect();
    let notify = match notify_queue {
        Some(q) => Some(crate::notify::start(&app, q).map_err(|e| StartError::Config(e.to_string()))?),
        None => None,
    };
    let stop_accept = CancellationToken::new();
    let accept = tokio::spawn(listener::serve(app.clone(), listener, Routes::All, stop_accept.clone()));
    if let Some(l) = metrics_listener {
        tokio::spawn(listener::serve(app.clone(), l, Routes::Metrics, stop_accept.clone()));
    }
    // SIGHUP reloads the log filter and limits (src/reload.rs); installed before READY so an
    // early `systemctl reload` is never the default SIGHUP action (terminate).
    crate::reload::spawn(app.clone());
    // The one stdout line tests and scripts wait for.
    println!("listening on {local}");
    tracing::info!(%local, node = %app.config.node_id(), "Listening.");
    crate::systemd::ready();
    // Never cancelled: the watchdog keeps pinging through the drain until the process exits.
    crate::systemd::spawn_watchdog(CancellationToken::new());

    wait_for_signal().await;
    tracing::info!(drain_secs, "Draining.");
    crate::systemd::stopping();
    let grace = Duration::from_secs(app.config.server.accept_grace_secs);
    let drained = tokio::time::timeout(Duration::from_secs(drain_secs), async {
        app.start_draining();
        // Still accepting: health checks get /readyz 503 and take this node out of rotation.
        tokio::time::sleep(grace).await;
        stop_accept.cancel();
        let _ = accept.await;
        // Commit every queued write; its echoes go out before the sockets close.
        drain_writer.cancel();
        for t in batcher_tasks {
            let _ = t.await;
        }
        app.shutdown.cancel();
        app.tasks.close();
        // Workers stop while sockets close; unfinished jobs stay in Redis (or the outbox).
        let stop_notify = async {
            if let Some(n) = notify {
                n.stop().await;
            }
        };
        tokio::join!(app.tasks.wait(), stop_notify);
        app.presence.leave().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Drain deadline reached; exiting with connections still open.");
    }
    cluster_stop.cancel();
    tracing::info!("Stopped.");
    Ok(())
}

/// This node's cluster parts, made before the shared state and started after it.
struct Cluster {
    link: Arc<RedisLink>,
    /// Unique per process, even when two nodes are given the same `LIVECHAT_NODE_ID` or a
    /// node restarts: the origin of its envelopes and its entry in the presence keys.
    instance: String,
    prefix: String,
    presence: Arc<ClusterPresence>,
    changes: tokio::sync::mpsc::UnboundedReceiver<crate::presence::cluster::Change>,
    heartbeat: Duration,
}

impl Cluster {
    async fn new(config: &Config, db: &Store, link: Arc<RedisLink>) -> Result<Self, StartError> {
        let prefix = match config.cluster.key_prefix.as_str() {
            "" => format!("livechat:{}", db.cluster_id().await.map_err(StartError::Database)?),
            p => p.to_string(),
        };
        let instance = format!("{}#{:08x}", config.node_id(), rand::random::<u32>());
        let ttl = Duration::from_millis(config.cluster.node_ttl_ms);
        let (presence, changes) = ClusterPresence::new(link.clone(), instance.clone(), &prefix, ttl);
        let heartbeat = Duration::from_millis(config.cluster.heartbeat_ms);
        Ok(Self { link, instance, prefix, presence, changes, heartbeat })
    }

    fn start(self, app: &Arc<App>, stop: CancellationToken) {
        tracing::info!(prefix = %self.prefix, instance = %self.instance, "Joining the cluster over Redis.");
        Bridge::start(&app.bus, self.link, self.instance, &self.prefix, stop);
        tokio::spawn(crate::presence::cluster::run(self.presence, Arc::downgrade(app), self.changes, self.heartbeat));
    }
}

fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, source };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Waits for SIGTERM or SIGINT.
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
            std::future::pending::<()>().await
        }
    }
}

/// `--dev`: prints the generated secrets and a token for a `demo` user.
async fn print_dev_banner(app: &App, secrets: &Secrets, addr: SocketAddr) {
    let demo = match app.store.create_user("demo", None).await {
        Ok((id, _)) => Some(id),
        Err(StoreError::Conflict(_)) => lookup_demo(app).await,
        Err(_) => None,
    };
    println!("livechat --dev (local use only)");
    println!("  LIVECHAT_JWT_SECRET={}", secrets.jwt_secret);
    println!("  LIVECHAT_ADMIN_TOKEN={}", secrets.admin_token);
    if let Some(id) = demo {
        if let Ok((token, _)) = app.auth.issue(id, 24 * 3600) {
            println!("  sample client token (user {id} \"demo\", 24 h): {token}");
            println!("  connect: ws://{addr}/ws/chat?token={token}");
        }
    }
}

async fn lookup_demo(app: &App) -> Option<i64> {
    let c = app.store.conn().await.ok()?;
    let row = c.query_opt("SELECT id FROM users WHERE username = 'demo'", &[]).await.ok()??;
    Some(row.get(0))
}
