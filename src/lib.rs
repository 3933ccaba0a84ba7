//! livechat: a self-hosted real-time chat backend.
//!
//! ```text
//! TCP accept ─► http::listener (hyper http1, with_upgrades, header timeout)
//!                ├─ http::rest ──► chat::rooms / store (bb8 pool, queries)
//!                └─ /ws/chat: http::upgrade, auth BEFORE 101 ─► ws (reader task + writer task)
//!                                                  │ decoded client event (wire::client)
//!                                                  ▼
//!                                               chat::session (identity, rooms, rate limits)
//!                       message / status_update │              │ typing
//!                                               ▼              ▼
//!                               store::group_commit      bus (shard = hash(room) % 64)
//!                       (one transaction per batch)       ▲    │ room order + subscribers
//!                         CommitSink ─► chat::publisher ──┘    │ frame encoded ONCE (Bytes)
//!                                                              ▼
//!                                                    conn::outbox per connection (bounded)
//!                                                              │ many frames, one writev
//!                                                              ▼
//!                                                    ws::writer ─► socket
//! ```
//!
//! # Layers
//!
//! A module imports only modules listed before it in this table (and itself); `tests/layers.rs`
//! reads the source and fails on an import that points up. Lower layers get narrow handles or
//! small traits (`store::group_commit::CommitSink`, `bus::History`, `chat::Reads`,
//! `notify::Online`, `ws::Handler`); only the composition root (`cmd::serve`) sees everything.
//!
//! | layer | modules | what it is |
//! | --- | --- | --- |
//! | 0 | [`util`], [`error`], [`telemetry`], [`model`] | backoff, clocks, locks; error enums; metric names; domain values |
//! | 1 | [`config`] | TOML + environment, validated |
//! | 2 | [`auth`], [`redis_link`] | tokens; the lazy Redis connection |
//! | 3 | [`wire`] | frames, client events in, server events out |
//! | 4 | [`conn`] | one connection's outbox, close requests, stream order |
//! | 5 | [`store`] | PostgreSQL: pool, migrations, queries, group commit |
//! | 6 | [`bus`] | fan-out, per-room order, Redis bridge |
//! | 7 | [`presence`] | live connections, online state (cluster-wide with Redis) |
//! | 8 | [`chat`] | sessions, connect/disconnect, membership changes, the commit publisher |
//! | 9 | [`notify`] | outbox relay, job queue, workers, sinks |
//! | 10 | [`ws`] | the WebSocket transport driving a `Handler` |
//! | 11 | [`app`] | the HTTP edge's state |
//! | 12 | [`http`] | accept loop, routing, REST, upgrade, `/metrics` |
//! | 13 | [`cmd`] | serve (composition root), worker, logging, reload, systemd |

// Modules only the crate itself uses are `pub(crate)`; the rest are the library's API for the
// `livechat` binary, the benches and the integration tests.
#![forbid(unsafe_code)]
// Nothing a client, the network, the configuration or a database can make fail may panic; tests
// may unwrap what they set up themselves.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod app;
pub mod auth;
pub mod bus;
pub mod chat;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod error;
pub(crate) mod http;
pub mod model;
pub mod notify;
pub(crate) mod presence;
pub mod redis_link;
pub mod store;
pub(crate) mod telemetry;
pub(crate) mod util;
pub mod wire;
pub(crate) mod ws;
