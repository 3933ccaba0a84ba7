//! livechat: a self-hosted real-time chat backend.
//!
//! ```text
//! TCP accept ─► http::listener (hyper http1, with_upgrades, header timeout)
//!                ├─ http::rest ────────────────────────────► store (bb8 pool, queries)
//!                └─ /ws/chat: auth BEFORE 101 ─► ws (reader task + writer task)
//!                                                  │ decoded client event (ws::protocol)
//!                                                  ▼
//!                                               session (identity, rooms, rate limits)
//!                       message / status_update │              │ typing / presence
//!                                               ▼              ▼
//!                                      store::batcher      bus (shard = hash(room) % 64)
//!                                      (group commit) ───► room sequencer + subscribers
//!                                                              │ frame encoded ONCE (Bytes)
//!                                                              ▼
//!                                                    ws::outbox per connection (bounded)
//!                                                              │ many frames, one writev
//!                                                              ▼
//!                                                    ws::writer ─► socket
//! ```
//!
//! Module map: [`config`] (TOML + env), [`error`] (one enum per boundary), [`server`]
//! (start-up and graceful drain), [`telemetry`] (logs, metrics), [`http`] (accept loop,
//! REST), [`ws`] (frames, protocol, reader, writer, outbox), [`session`] (per-connection chat
//! logic), [`presence`] (connections by user), [`redis_link`] (lazy Redis connection), [`bus`] (fan-out), [`store`] (PostgreSQL:
//! migrations, queries, group-commit writer), [`auth`] (JWT and admin token), [`systemd`]
//! (READY/STOPPING/watchdog), [`reload`] (SIGHUP: log filter and limits), [`notify`]
//! (outbox relay, job queue on a Redis Stream, workers, webhook/e-mail/log sinks).

pub mod app;
pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
pub mod http;
pub mod notify;
pub mod presence;
pub mod redis_link;
pub mod reload;
pub mod server;
pub mod session;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod ws;
