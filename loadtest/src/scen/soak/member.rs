//! A soak member: receives, checks the room's order, sends receipts and typing, and reconnects
//! with `resume=1` + `sync` when told to.

use super::super::client::{open_retry, Client};
use super::super::setup::resume_path;
use crate::clock::now_us;
use crate::hist::new_hist;
use crate::ws;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// What every task of the run shares.
pub(super) struct Shared {
    pub target: SocketAddr,
    pub room: u64,
    /// Set at the end: members stop.
    pub stop: Cell<bool>,
    /// Set when the traffic ends: sampling stops (the samples cover the traffic only).
    pub draining: Cell<bool>,
    /// Highest seq the sender had acknowledged.
    pub final_seq: Cell<u64>,
    /// Delivery latency of the whole run (µs).
    pub latency: RefCell<Histogram<u64>>,
    /// Delivery latency since the last sample (µs).
    pub interval: RefCell<Histogram<u64>>,
    pub reconnects: Cell<u64>,
    pub receipts: Cell<u64>,
    pub typing: Cell<u64>,
    pub stuck_cut: Cell<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            target: SocketAddr::from(([127, 0, 0, 1], 0)),
            room: 0,
            stop: Cell::new(false),
            draining: Cell::new(false),
            final_seq: Cell::new(0),
            latency: RefCell::new(new_hist()),
            interval: RefCell::new(new_hist()),
            reconnects: Cell::new(0),
            receipts: Cell::new(0),
            typing: Cell::new(0),
            stuck_cut: Cell::new(0),
        }
    }
}

/// One receiving member's position in the room.
pub(super) struct Member {
    index: usize,
    token: String,
    /// Highest seq received in order.
    pub last_seq: Cell<u64>,
    /// Seqs skipped (never received).
    pub gaps: Cell<u64>,
    /// Seqs received again.
    pub dups: Cell<u64>,
    /// Set by the reconnect schedule: drop the connection and resume.
    reconnect: Cell<bool>,
}

impl Member {
    pub(super) fn new(index: usize, token: String) -> Self {
        Self {
            index,
            token,
            last_seq: Cell::new(0),
            gaps: Cell::new(0),
            dups: Cell::new(0),
            reconnect: Cell::new(false),
        }
    }

    /// One room event (a `message`, or another event that took a seq): in order, a repeat,
    /// or past a gap.
    fn on_message(&self, shared: &Shared, f: &[u8]) {
        let Some(seq) = ws::num_after(f, b"\"seq\":") else { return };
        let last = self.last_seq.get();
        if seq <= last {
            self.dups.set(self.dups.get() + 1);
            return;
        }
        if seq > last + 1 {
            self.gaps.set(self.gaps.get() + (seq - last - 1));
        }
        self.last_seq.set(seq);
        if let Some((t, _)) = ws::str_after(f, b"\"content\":\"").and_then(ws::content_marker) {
            let d = now_us().saturating_sub(t).max(1);
            let _ = shared.latency.borrow_mut().record(d);
            let _ = shared.interval.borrow_mut().record(d);
        }
    }
}

/// A member's life: connect, receive until told to reconnect, resume, until the run stops.
pub(super) async fn run(shared: Rc<Shared>, me: Rc<Member>) {
    let mut first = true;
    while !shared.stop.get() {
        let Ok((mut cl, _)) = open_retry(shared.target, me.index, &resume_path(&me.token)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // A first connection has seen nothing; later ones resume from their last seq.
        let from = if first { shared.final_seq.get().max(me.last_seq.get()) } else { me.last_seq.get() };
        if first {
            me.last_seq.set(from);
            first = false;
        }
        if cl.send_text(&sync_json(shared.room, from)).await.is_err() {
            continue;
        }
        let _ = session(&shared, &me, &mut cl).await;
        if me.reconnect.replace(false) {
            shared.reconnects.set(shared.reconnects.get() + 1);
        }
    }
}

/// Reads one connection until it closes or a reconnect is asked for.
async fn session(shared: &Shared, me: &Member, cl: &mut Client) -> anyhow::Result<()> {
    let mut since_receipt = 0u32;
    loop {
        if me.reconnect.get() || shared.stop.get() {
            return Ok(());
        }
        let Ok(f) = tokio::time::timeout(Duration::from_millis(100), cl.next()).await else { continue };
        let Some(f) = f? else { return Ok(()) };
        match ws::event_type(&f) {
            b"message" => {
                me.on_message(shared, &f);
                since_receipt += 1;
                // A read receipt every 20 messages, typing every 50 on a few members.
                if since_receipt.is_multiple_of(20) {
                    if let Some(id) = ws::num_after(&f, b"\"id\":") {
                        cl.send_text(&format!("{{\"type\":\"status_update\",\"message_id\":{id},\"read\":true}}"))
                            .await?;
                        shared.receipts.set(shared.receipts.get() + 1);
                    }
                }
                if me.index.is_multiple_of(10) && since_receipt.is_multiple_of(50) {
                    cl.send_text(&format!("{{\"type\":\"typing\",\"room_id\":{}}}", shared.room)).await?;
                    shared.typing.set(shared.typing.get() + 1);
                }
            }
            // Other room events (the members' joins, replayed by a first `sync`) take seqs too.
            ty if ws::is_room_event(ty) && ws::num_after(&f, b"\"room_id\":") == Some(shared.room) => {
                me.on_message(shared, &f);
            }
            // A capped replay: sync again from where it ended.
            b"synced" if ws::find_after(&f, b"\"more\":").is_some_and(|v| v.starts_with(b"true")) => {
                cl.send_text(&sync_json(shared.room, me.last_seq.get())).await?;
            }
            _ => {}
        }
    }
}

fn sync_json(room: u64, from: u64) -> String {
    format!("{{\"type\":\"sync\",\"rooms\":{{\"{room}\":{from}}}}}")
}

/// The reconnect schedule: one member at a time, round robin.
pub(super) async fn reconnects(shared: Rc<Shared>, members: Vec<Rc<Member>>, every_ms: u64) {
    let mut i = 0;
    while !shared.stop.get() && !members.is_empty() {
        tokio::time::sleep(Duration::from_millis(every_ms.max(10))).await;
        members[i % members.len()].reconnect.set(true);
        i += 1;
    }
}

/// Clients that connect and never read; replaced every 30 s (whether or not the server has cut
/// them off yet, which it must: slow consumer or write deadline).
pub(super) async fn stuck(shared: Rc<Shared>, tokens: Vec<String>) {
    while !shared.stop.get() {
        let mut held = Vec::new();
        for (k, t) in tokens.iter().enumerate() {
            if let Ok(c) = Client::open(shared.target, 10_000 + k, &super::super::setup::ws_path(t)).await {
                held.push(c);
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        for mut c in held {
            // A cut-off client reads what was buffered, then the end.
            let end = tokio::time::timeout(Duration::from_secs(2), async { while let Ok(Some(_)) = c.next().await {} });
            if end.await.is_ok() {
                shared.stuck_cut.set(shared.stuck_cut.get() + 1);
            }
        }
    }
}

/// Counts the sender's own echo (its acknowledgement) and raises `final_seq`.
pub(super) fn count_ack(f: &[u8], sender: u64, final_seq: &Cell<u64>) -> u64 {
    if ws::event_type(f) != b"message" || ws::num_after(f, b"\"sender_id\":") != Some(sender) {
        return 0;
    }
    if let Some(seq) = ws::num_after(f, b"\"seq\":") {
        final_seq.set(final_seq.get().max(seq));
    }
    1
}
