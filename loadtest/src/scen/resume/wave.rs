//! Phase 3 of `resume`: every receiver reconnects and syncs at once while the sender keeps
//! sending live messages.

use super::reconnect::{self, ClientOutcome};
use super::Room;
use crate::clock::now_us;
use crate::scen::client::{message_json, Client};
use crate::stats::{self_cpu_secs, server_sample};
use crate::ws;
use anyhow::{bail, Result};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;
use tokio::task::{JoinError, JoinHandle};

/// Live traffic runs this long into the wave, µs.
const LIVE_US: u64 = 3_000_000;
/// The wave gets this long before live traffic is stopped regardless, µs.
const WAVE_LIMIT_US: u64 = 60_000_000;

/// A reconnecting client's task result.
pub(super) type ClientResult = std::result::Result<Result<ClientOutcome>, JoinError>;

/// What the reconnect wave produced.
pub(super) struct Wave {
    /// one per receiver
    pub results: Vec<ClientResult>,
    /// live messages sent during the wave
    pub live_sent: u64,
    /// the last seq of the room: every client must have everything up to it
    pub final_seq: u64,
    /// from the start of the wave until every client finished, seconds
    pub secs: f64,
    /// this process's CPU seconds over the wave
    pub client_cpu_s: f64,
    /// the server's CPU seconds over the wave (with `--server-pid`)
    pub server_cpu_s: Option<f64>,
}

/// The live sender task and what the wave shares with it.
struct Live {
    /// set to stop sending (the task still waits for its pending echoes)
    stop: Rc<Cell<bool>>,
    /// highest seq of the sender's own echoes
    last: Rc<Cell<u64>>,
    task: JoinHandle<Result<u64>>,
}

/// Reconnects every receiver from the seq in `pre_seen` while the sender sends `rate`
/// messages/s (the room's last seq so far is `gap_last`).
pub(super) async fn run(
    room: &Rc<Room>,
    sender: Client,
    pre_seen: &[u64],
    gap_last: u64,
    rate: f64,
    server_pid: &[u32],
) -> Result<Wave> {
    let s0 = server_sample(server_pid);
    let cpu0 = self_cpu_secs();
    let wave0 = now_us();
    let live = spawn_live(sender, room, rate, gap_last);
    // each reconnecting client keeps reading until it has seen this seq (set once known)
    let final_target = Rc::new(Cell::new(u64::MAX));
    let handles: Vec<_> = (1..room.tokens.len())
        .map(|i| tokio::task::spawn_local(reconnect::run(room.clone(), i, pre_seen[i], final_target.clone())))
        .collect();
    supervise(&handles, &live, wave0, &final_target).await;
    live.stop.set(true);
    let live_sent = match live.task.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => bail!("live sender: {e}"),
        Err(e) => bail!("live sender: {e}"),
    };
    let final_seq = live.last.get();
    final_target.set(final_seq);
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await);
    }
    let secs = (now_us() - wave0) as f64 / 1e6;
    let client_cpu_s = self_cpu_secs() - cpu0;
    let s1 = server_sample(server_pid);
    let server_cpu_s = s0.zip(s1).map(|(x, y)| y.cpu_secs - x.cpu_secs);
    Ok(Wave { results, live_sent, final_seq, secs, client_cpu_s, server_cpu_s })
}

/// Lets the wave run (at most 60 s): stops live traffic after 3 s and, once the live sender
/// is done, tells the clients the final seq so they can finish.
async fn supervise(handles: &[JoinHandle<Result<ClientOutcome>>], live: &Live, wave0: u64, final_target: &Cell<u64>) {
    let wave_deadline = now_us() + WAVE_LIMIT_US;
    while now_us() < wave_deadline && handles.iter().any(|h| !h.is_finished()) {
        if now_us() > wave0 + LIVE_US && !live.stop.get() {
            live.stop.set(true);
        }
        if live.stop.get() && live.task.is_finished() && final_target.get() == u64::MAX {
            final_target.set(live.last.get());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn spawn_live(sender: Client, room: &Room, rate: f64, gap_last: u64) -> Live {
    let stop = Rc::new(Cell::new(false));
    let last = Rc::new(Cell::new(gap_last));
    let task = tokio::task::spawn_local(live_sender(sender, room.id, room.sender_id, rate, stop.clone(), last.clone()));
    Live { stop, last, task }
}

/// Sends `rate` messages/s until `stop`, then waits for the echoes still pending; records the
/// highest echoed seq in `last`. Returns the number sent.
async fn live_sender(
    mut sender: Client,
    room: u64,
    uid: u64,
    rate: f64,
    stop: Rc<Cell<bool>>,
    last: Rc<Cell<u64>>,
) -> Result<u64> {
    let mut n = 0u64;
    let iv = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(iv);
    let mut pending = 0u64;
    while !stop.get() || pending > 0 {
        tokio::select! {
            _ = tick.tick(), if !stop.get() && rate > 0.0 => {
                let content = format!("t={};s=0;live", now_us());
                sender.send_text(&message_json(room, &content, &format!("l{n}"))).await?;
                n += 1;
                pending += 1;
            }
            f = tokio::time::timeout(Duration::from_millis(50), sender.next()) => {
                if let Ok(f) = f {
                    let Some(f) = f? else { bail!("sender closed") };
                    if ws::event_type(&f) == b"message" && ws::num_after(&f, b"\"sender_id\":") == Some(uid) {
                        pending = pending.saturating_sub(1);
                        last.set(last.get().max(ws::num_after(&f, b"\"seq\":").unwrap_or(0)));
                    }
                }
            }
        }
    }
    Ok(n)
}
