//! The plan file: everything a worker process needs, written by the parent.

use serde::{Deserialize, Serialize};

/// One connection of the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnSpec {
    /// bearer token for the upgrade (empty for the token-less legacy format)
    pub token: String,
    /// the token's user id
    pub user: u64,
    /// room this connection sends to (0 = receive only)
    pub send_room: u64,
    /// deliveries expected per message sent by this connection (members of send_room)
    pub fanout: u64,
}

/// What the workers do once connected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Mode {
    /// send on schedule and record every delivery, step by step
    Traffic,
    /// hold the connections until the end time
    Idle,
    /// connect only after `go`, measuring the handshakes
    Storm,
}

/// The run, shared by all workers; each takes every `count`-th connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// what to do once connected
    pub mode: Mode,
    /// server address, host:port
    pub target: String,
    /// speak the original app's token-less event format
    pub legacy: bool,
    /// legacy format but with `?token=` (livechat's seed-compatible path)
    #[serde(default)]
    pub legacy_auth: bool,
    /// every connection of the run
    pub conns: Vec<ConnSpec>,
    /// offered messages/s (all senders together) per step
    pub steps: Vec<f64>,
    /// length of each step, seconds
    pub step_secs: f64,
    /// content bytes per message
    pub size: usize,
    /// closed loop: messages in flight per sender (0 = open loop)
    pub window: usize,
    /// longest wait for late deliveries after the last step, seconds
    pub drain_secs: f64,
    /// upgrade handshakes in flight per worker while connecting
    pub concurrency: usize,
    /// sending connections in the whole plan (the offered rate is split among them)
    pub n_senders: usize,
}

/// The upgrade path for a connection with `token`.
pub fn ws_path(plan: &Plan, token: &str) -> String {
    if plan.legacy && !plan.legacy_auth {
        "/ws/chat".to_string()
    } else {
        format!("/ws/chat?token={token}")
    }
}
