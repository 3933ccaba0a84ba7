//! Black-box test harness for `livechat`.
//!
//! Everything here talks to real parts only: the real `livechat` binary
//! (`CARGO_BIN_EXE_livechat`), a real PostgreSQL (a fresh database per test, created on the
//! cluster named by `LIVECHAT_TEST_PG_URL`), a real Redis (`LIVECHAT_TEST_REDIS_URL`), real
//! WebSocket clients over real sockets and a real webhook receiver.
//!
//! Every wait is bounded ([`RECV_TIMEOUT`], [`START_TIMEOUT`]) so a hang fails fast with a
//! message instead of stalling the suite.
//!
//! Each test binary compiles this module on its own (`mod common;`) and uses only part of it,
//! hence the module-wide `dead_code` allowance. Everything is re-exported here, so
//! `use common::*;` reaches every helper.
#![allow(dead_code)]

mod asserts;
mod cli;
mod cluster;
mod db;
mod events;
mod http;
mod jwt;
mod private_pg;
mod process;
mod raw;
mod redis;
mod server;
mod util;
mod wait;
mod webhook;
mod ws;

// Each test binary uses only part of these: an unused re-export is expected, not a mistake.
#[allow(unused_imports)]
pub use self::{
    asserts::*, cli::*, cluster::*, db::*, events::*, http::*, jwt::*, private_pg::*, process::*, raw::*, redis::*,
    server::*, util::*, wait::*, webhook::*, ws::*,
};
