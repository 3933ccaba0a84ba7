//! `livechat serve`: the composition root. It builds every layer bottom-up, handing each one
//! only the narrow handles it needs (see the layer table in `lib.rs`), starts the tasks, and
//! runs the graceful drain in one place: signal → readiness off → stop accepting → commit
//! queued writes → close sockets 1001 and stop the notification relay and workers → wait for
//! connections → exit, all within `server.drain_secs`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::systemd;
use crate::app::{App, Edge, Ops};
use crate::auth::Auth;
use crate::bus::{bridge, Bridge, Bus};
use crate::chat::rooms::RoomLimits;
use crate::chat::{self, Chat, Publisher, Rooms};
use crate::config::Config;
use crate::error::StoreError;
use crate::http::listener::{self, Routes};
use crate::notify::{self, Online};
use crate::presence::cluster::{self, ClusterPresence};
use crate::presence::{Connections, Local, MembershipFeed, Presence};
use crate::redis_link::RedisLink;
use crate::store::batch_loader::{BatchLoader, Memberships, MessageMetas};
use crate::store::group_commit::{self, Batcher};
use crate::store::search_index::{IndexSettings, SearchIndex};
use crate::store::{self, Store};
use crate::telemetry;

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

    let listener = bind(addr, config.server.reuse_port)?;
    let metrics_listener = match config.metrics_addr().map_err(|e| StartError::Config(e.to_string()))? {
        Some(a) => Some(bind(a, config.server.reuse_port)?),
        None => None,
    };
    let local = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    let auth = Auth::new(&secrets.jwt_secret, &secrets.admin_token, config.auth.leeway_secs);
    let node = Node::assemble(config, db, auth, dev).await?;
    if dev {
        print_dev_banner(&node.app, &secrets, local).await;
    }
    let running = node.start(listener, metrics_listener)?;
    // The one stdout line tests and scripts wait for.
    println!("listening on {local}");
    tracing::info!(%local, node = %running.config.node_id(), "Listening.");
    systemd::ready();
    // Never cancelled: the watchdog keeps pinging through the drain until the process exits.
    systemd::spawn_watchdog(CancellationToken::new());
    super::wait_for_signal().await;
    running.drain().await;
    Ok(())
}

/// Every part of a node, assembled and not yet running.
struct Node {
    config: Config,
    app: Arc<App>,
    batchers: Vec<Batcher<Publisher>>,
    committed: Arc<tokio::sync::Notify>,
    notify_queue: Option<Arc<notify::Queue>>,
    cluster: Option<ClusterParts>,
    local: Arc<Local>,
    search: Arc<SearchIndex>,
}

impl Node {
    /// Builds the layers bottom-up: bus (and bridge), presence, group commit, chat, app.
    async fn assemble(config: Config, db: Store, auth: Auth, dev: bool) -> Result<Self, StartError> {
        let redis = match config.redis.url.as_deref() {
            Some(url) => Some(Arc::new(
                RedisLink::with_ca_file(url, config.redis.ca_file.as_deref())
                    .map_err(|e| StartError::Config(e.to_string()))?,
            )),
            None => None,
        };
        let cluster = match &redis {
            Some(link) => Some(ClusterParts::new(&config, &db, link.clone()).await?),
            None => None,
        };
        let bus = Bus::new(Arc::new(db.clone()), cluster.as_ref().map(|c| c.bridge.clone()));
        let connections = Arc::new(Connections::default());
        let local = Arc::new(Local {
            connections: connections.clone(),
            bus: bus.clone(),
            store: db.clone(),
            max_room_members: config.presence.max_room_members,
        });
        let presence = Arc::new(match &cluster {
            Some(c) => Presence::clustered(local.clone(), c.presence.clone()),
            None => Presence::local(local.clone()),
        });
        let memberships = BatchLoader::spawn(Memberships(db.clone()));
        // Membership changes from every node move this node's connections (README "Room events").
        MembershipFeed::install(connections.clone(), &bus, memberships.clone());
        let committed = Arc::new(tokio::sync::Notify::new());
        let settings = group_commit::Settings {
            writers: config.storage.writers,
            queue_max: config.storage.queue_max,
            batch_max: config.storage.batch_max,
            timeout: config.write_timeout(),
            outbox: config.notify.enabled(),
            reactions_max: config.limits.reactions_per_message as i64,
        };
        let search = SearchIndex::new(
            db.clone(),
            IndexSettings {
                delay: Duration::from_millis(config.search.index_delay_ms),
                batch: config.search.index_batch.max(1),
                sweep_every: Duration::from_secs(config.search.sweep_secs.max(1)),
            },
        );
        let publisher = Publisher::new(bus.clone(), Some(search.clone()));
        let (writer, batchers) = group_commit::new(db.clone(), publisher, &settings, committed.clone());
        let load = writer.clone();
        search.pace_by(move || load.backlogged());
        let parts = chat::Parts {
            reads: Arc::new(chat::StoreReads {
                store: db.clone(),
                metas: BatchLoader::spawn(MessageMetas(db.clone())),
            }),
            writer,
            bus: bus.clone(),
            presence,
            memberships: memberships.clone(),
            rooms: Rooms::new(
                Arc::new(db.clone()),
                bus.clone(),
                RoomLimits {
                    rooms_per_user: config.limits.rooms_per_user as i64,
                    create_members: config.limits.room_create_members,
                    created_per_minute: config.limits.rooms_created_per_minute,
                },
            ),
        };
        let chat_settings = chat::Settings {
            max_replay: config.sync.max_replay,
            initial_hold_ms: config.sync.initial_hold_ms,
            sync_max_rooms: config.sync.max_rooms,
            presence_max_room_members: config.presence.max_room_members,
        };
        let chat = Chat::new(parts, chat_settings, config.limits.clone());
        let notify_queue = (config.notify.enabled() || redis.is_some()).then(|| notify::queue(&config, redis.clone()));
        let edge = Edge {
            dev,
            web_client: config.server.web_client,
            allowed_origins: config.server.allowed_origins.clone(),
            conformance_echo: config.server.conformance_echo,
            metrics_on_main: config.server.metrics_listen.is_none(),
            max_connections: config.server.max_connections,
            header_timeout: Duration::from_secs(config.limits.header_timeout_secs),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let ops = Ops { metrics: telemetry::install(), redis };
        let app = Arc::new(App { chat, store: db, auth, edge, ops, notify: notify_queue.clone() });
        Ok(Self { config, app, batchers, committed, notify_queue, cluster, local, search })
    }

    /// Starts the tasks: cluster links, writers, notifications, listeners, SIGHUP reload.
    fn start(self, listener: TcpListener, metrics_listener: Option<TcpListener>) -> Result<Running, StartError> {
        let Node { config, app, batchers, committed, notify_queue, cluster, local, search } = self;
        // Runs until the process exits: the drain's last echoes still cross to the other nodes.
        let cluster_stop = CancellationToken::new();
        // Until the process exits too: what it did not index, the next start's sweep does.
        tokio::spawn(search.run(cluster_stop.clone()));
        if let Some(c) = cluster {
            c.start(&local, cluster_stop.clone());
        }
        let drain_writer = CancellationToken::new();
        let batchers = batchers.into_iter().map(|b| tokio::spawn(b.run(drain_writer.clone()))).collect();
        let notify = match notify_queue {
            Some(q) => {
                let ctx = notify::Context {
                    config: config.notify.clone(),
                    consumer: notify::consumer_name(&config),
                    store: app.store.clone(),
                    online: Arc::new(PresenceOnline(app.chat.presence().clone())),
                    committed,
                };
                Some(notify::start(ctx, q).map_err(|e| StartError::Config(e.to_string()))?)
            }
            None => None,
        };
        let stop_accept = CancellationToken::new();
        let accept = tokio::spawn(listener::serve(app.clone(), listener, Routes::All, stop_accept.clone()));
        if let Some(l) = metrics_listener {
            tokio::spawn(listener::serve(app.clone(), l, Routes::Metrics, stop_accept.clone()));
        }
        // SIGHUP reloads the log filter and limits; installed before READY so an early
        // `systemctl reload` is never the default SIGHUP action (terminate).
        super::reload::spawn(app.chat.clone(), config.source.clone());
        Ok(Running { config, app, batchers, drain_writer, notify, stop_accept, accept, cluster_stop })
    }
}

/// A node that is serving.
struct Running {
    config: Config,
    app: Arc<App>,
    batchers: Vec<JoinHandle<()>>,
    drain_writer: CancellationToken,
    notify: Option<notify::Running>,
    stop_accept: CancellationToken,
    accept: JoinHandle<()>,
    cluster_stop: CancellationToken,
}

impl Running {
    /// The graceful drain, bounded by `server.drain_secs`.
    async fn drain(self) {
        let drain_secs = self.config.server.drain_secs;
        tracing::info!(drain_secs, "Draining.");
        systemd::stopping();
        let grace = Duration::from_secs(self.config.server.accept_grace_secs);
        let app = self.app.clone();
        let drained = tokio::time::timeout(Duration::from_secs(drain_secs), async {
            app.chat.start_draining();
            // Still accepting: health checks get /readyz 503 and take this node out of rotation.
            tokio::time::sleep(grace).await;
            self.stop_accept.cancel();
            let _ = self.accept.await;
            // Commit every queued write; its echoes go out before the sockets close.
            self.drain_writer.cancel();
            for t in self.batchers {
                let _ = t.await;
            }
            app.edge.shutdown.cancel();
            app.edge.tasks.close();
            // Workers stop while sockets close; unfinished jobs stay in Redis (or the outbox).
            let stop_notify = async {
                if let Some(n) = self.notify {
                    n.stop().await;
                }
            };
            tokio::join!(app.edge.tasks.wait(), stop_notify);
            app.chat.presence().leave().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("Drain deadline reached; exiting with connections still open.");
        }
        self.cluster_stop.cancel();
        tracing::info!("Stopped.");
    }
}

/// The notification relay's view of presence.
struct PresenceOnline(Arc<Presence>);

impl Online for PresenceOnline {
    fn online_among(&self, users: Vec<i64>) -> BoxFuture<'_, HashSet<i64>> {
        Box::pin(self.0.online_among(users))
    }
}

/// This node's cluster parts, made before the bus and started after it.
struct ClusterParts {
    link: Arc<RedisLink>,
    /// Unique per process, even when two nodes are given the same `LIVECHAT_NODE_ID` or a
    /// node restarts: the origin of its envelopes and its entry in the presence keys.
    instance: String,
    prefix: String,
    bridge: Arc<Bridge>,
    bridge_tasks: bridge::Tasks,
    presence: Arc<ClusterPresence>,
    changes: tokio::sync::mpsc::Receiver<cluster::Change>,
    heartbeat: Duration,
}

impl ClusterParts {
    async fn new(config: &Config, db: &Store, link: Arc<RedisLink>) -> Result<Self, StartError> {
        let prefix = match config.cluster.key_prefix.as_str() {
            "" => format!("livechat:{}", db.cluster_id().await.map_err(StartError::Database)?),
            p => p.to_string(),
        };
        let instance = format!("{}#{:08x}", config.node_id(), rand::random::<u32>());
        let ttl = Duration::from_millis(config.cluster.node_ttl_ms);
        let (presence, changes) = ClusterPresence::new(link.clone(), instance.clone(), &prefix, ttl);
        let (bridge, bridge_tasks) = Bridge::new(instance.clone(), &prefix);
        let heartbeat = Duration::from_millis(config.cluster.heartbeat_ms);
        Ok(Self { link, instance, prefix, bridge, bridge_tasks, presence, changes, heartbeat })
    }

    fn start(self, local: &Arc<Local>, stop: CancellationToken) {
        tracing::info!(prefix = %self.prefix, instance = %self.instance, "Joining the cluster over Redis.");
        self.bridge_tasks.start(local.bus.clone(), self.link, stop.clone());
        tokio::spawn(cluster::run(self.presence, local.clone(), self.changes, self.heartbeat, stop));
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

/// `--dev`: prints the generated secrets, a token for a `demo` user and the page's address.
async fn print_dev_banner(app: &App, secrets: &Secrets, addr: SocketAddr) {
    let demo = crate::http::web::find_or_sign_up(app, "demo").await.ok();
    println!("livechat --dev (local use only)");
    println!("  LIVECHAT_JWT_SECRET={}", secrets.jwt_secret);
    println!("  LIVECHAT_ADMIN_TOKEN={}", secrets.admin_token);
    if let Some(id) = demo {
        if let Ok((token, _)) = app.auth.issue(id, 24 * 3600) {
            println!("  sample client token (user {id} \"demo\", 24 h): {token}");
            println!("  connect: ws://{addr}/ws/chat?token={token}");
        }
    }
    if app.edge.web_client {
        println!("  web client: open http://{addr}/ and sign in as any username (two tabs, two names: chat)");
    }
}
