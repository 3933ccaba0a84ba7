//! Phase 1 of `resume`: every receiver online, tracking the highest seq it sees, while the
//! sender sends `--before` messages; then they all disconnect.

use super::Room;
use crate::clock::now_us;
use crate::scen::client::{open_retry, seed_messages, Client};
use crate::scen::setup::ws_path;
use crate::ws;
use anyhow::Result;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Where each receiver stood when it went offline.
pub(super) struct Online {
    /// highest seq seen, per member (index 0, the sender, stays 0)
    pub pre_seen: Vec<u64>,
    /// the last seq of phase 1
    pub before_last: u64,
}

impl Online {
    /// Receivers that had not seen the last phase-1 message when they disconnected.
    pub fn behind(&self) -> usize {
        self.pre_seen[1..].iter().filter(|&&s| s < self.before_last).count()
    }
}

/// Connects every receiver, sends `before` messages, waits (at most 30 s) until all have
/// seen the last one, then disconnects them.
pub(super) async fn run(room: &Rc<Room>, sender: &mut Client, before: usize) -> Result<Online> {
    let m = room.tokens.len();
    let seen: Rc<RefCell<Vec<u64>>> = Rc::new(RefCell::new(vec![0; m]));
    let online = Rc::new(Cell::new(0usize));
    let handles: Vec<_> =
        (1..m).map(|i| tokio::task::spawn_local(listen(room.clone(), i, seen.clone(), online.clone()))).collect();
    // wait until they are connected
    let dl = now_us() + 60_000_000;
    while online.get() < m - 1 && now_us() < dl && handles.iter().any(|h| !h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // the server subscribes a connection after the upgrade; give the last ones a moment
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_last = seed_messages(sender, room.id, room.sender_id, before, 64, "b").await?;
    let dl = now_us() + 30_000_000;
    while now_us() < dl && seen.borrow()[1..].iter().any(|&s| s < before_last) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    disconnect(handles).await;
    let pre_seen = seen.borrow().clone();
    Ok(Online { pre_seen, before_last })
}

/// Receiver `i`: connects, counts itself online, then records the highest seq of the room it
/// sees until its task is aborted.
async fn listen(room: Rc<Room>, i: usize, seen: Rc<RefCell<Vec<u64>>>, online: Rc<Cell<usize>>) -> Result<()> {
    let mut cl = {
        let _p = room.connect.acquire().await.unwrap();
        open_retry(room.target, i, &ws_path(&room.tokens[i])).await?.0
    };
    online.set(online.get() + 1);
    loop {
        let Some(f) = cl.next().await? else { return Ok(()) };
        if ws::event_type(&f) == b"message" && ws::num_after(&f, b"\"room_id\":") == Some(room.id) {
            let sq = ws::num_after(&f, b"\"seq\":").unwrap_or(0);
            let mut s = seen.borrow_mut();
            if sq > s[i] {
                s[i] = sq;
            }
        }
    }
}

/// Disconnects everybody but the sender (aborting a task drops its connection).
async fn disconnect(handles: Vec<JoinHandle<Result<()>>>) {
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
}
