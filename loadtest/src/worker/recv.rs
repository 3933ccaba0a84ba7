//! The receive side: one reader task per connection walks every frame of each read in place
//! and counts it.

use super::out::{StepStats, WStats};
use crate::clock::now_us;
use crate::hist::MAX_US;
use crate::ws;
use bytes::{Buf, BytesMut};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

/// Per-connection state shared by its reader and its sender.
pub struct ConnCtx {
    /// the connection's user (its own messages are acks)
    pub user: u64,
    /// deliveries expected per message it sends
    pub fanout: u64,
    /// closed loop: messages sent and not yet acked (or refused)
    pub inflight: Cell<u32>,
    /// wakes the closed-loop sender when a slot frees up
    pub notify: Notify,
    /// highest seq seen, per room: (room, seq)
    pub last: RefCell<Vec<(u64, u64)>>,
}

impl ConnCtx {
    /// Fresh state for a connection of `user`.
    pub fn new(user: u64, fanout: u64) -> Self {
        ConnCtx { user, fanout, inflight: Cell::new(0), notify: Notify::new(), last: RefCell::new(Vec::new()) }
    }

    /// A message in flight was answered (ack or error): free its slot, wake the sender.
    fn release_slot(&self) {
        let f = self.inflight.get();
        if f > 0 {
            self.inflight.set(f - 1);
            self.notify.notify_one();
        }
    }
}

/// A connection's write half, shared by its sender and its reader (which answers pings).
pub type Wr = Rc<tokio::sync::Mutex<OwnedWriteHalf>>;

/// The step out of a `client_msg_id` `<step>.<conn>.<n>`.
fn parse_ref_step(r: &[u8]) -> Option<usize> {
    let end = memchr::memchr(b'.', r)?;
    std::str::from_utf8(&r[..end]).ok()?.parse().ok()
}

/// Handles one text frame of a traffic connection.
#[inline]
pub fn on_text(p: &[u8], now: u64, ctx: &ConnCtx, st: &RefCell<WStats>) {
    match ws::event_type(p) {
        b"message" => on_message(p, now, ctx, st),
        b"error" => on_error(p, ctx, st),
        ty => {
            let mut s = st.borrow_mut();
            let k = String::from_utf8_lossy(ty).into_owned();
            *s.other.entry(k).or_default() += 1;
        }
    }
}

/// A delivery: latency into its step (taken from the content marker), seq check, ack.
#[inline]
fn on_message(p: &[u8], now: u64, ctx: &ConnCtx, st: &RefCell<WStats>) {
    let Some(content) = ws::str_after(p, b"\"content\":\"") else {
        *st.borrow_mut().other.entry("message_unparsed".into()).or_default() += 1;
        return;
    };
    let Some((t, step)) = ws::content_marker(content) else {
        *st.borrow_mut().other.entry("message_foreign".into()).or_default() += 1;
        return;
    };
    let mut s = st.borrow_mut();
    s.total_recv += 1;
    let step = step as usize;
    if step >= s.steps.len() {
        return;
    }
    let lat = now.saturating_sub(t).max(1);
    let ss = &mut s.steps[step];
    ss.recv += 1;
    let _ = ss.lat.as_mut().unwrap().record(lat.min(MAX_US));
    if let Some(seq) = ws::num_after(p, b"\"seq\":") {
        let room = ws::num_after(p, b"\"room_id\":").unwrap_or(0);
        track_seq(&mut ctx.last.borrow_mut(), room, seq, ss);
    }
    if ws::num_after(p, b"\"sender_id\":") == Some(ctx.user) {
        ss.acks += 1;
        let _ = ss.ack.as_mut().unwrap().record(lat.min(MAX_US));
        drop(s);
        ctx.release_slot();
    }
}

/// Per room, seq must go up by one: not above the last one is a duplicate, a jump a gap. The
/// first message seen in a room starts its count: a room's first seqs may belong to events
/// before the run (its members' `join`s; losses are counted from sent and received anyway).
fn track_seq(last: &mut Vec<(u64, u64)>, room: u64, seq: u64, ss: &mut StepStats) {
    let slot = match last.iter_mut().position(|e| e.0 == room) {
        Some(i) => &mut last[i].1,
        None => {
            last.push((room, seq.saturating_sub(1)));
            &mut last.last_mut().unwrap().1
        }
    };
    if seq <= *slot {
        ss.dups += 1;
    } else {
        if seq > *slot + 1 {
            ss.gaps += seq - *slot - 1;
        }
        *slot = seq;
    }
}

/// An `error`: counted by code; one that refers to a message of ours (by `client_msg_id`)
/// takes that message out of its step's expected deliveries.
fn on_error(p: &[u8], ctx: &ConnCtx, st: &RefCell<WStats>) {
    let code = ws::str_after(p, b"\"code\":\"").unwrap_or(b"?");
    let mut s = st.borrow_mut();
    *s.errors.entry(String::from_utf8_lossy(code).into_owned()).or_default() += 1;
    let Some(step) = ws::str_after(p, b"\"ref\":\"").and_then(parse_ref_step) else { return };
    if let Some(ss) = s.steps.get_mut(step) {
        ss.send_err += 1;
        ss.expected -= ctx.fanout as i64;
    }
    drop(s);
    ctx.release_slot();
}

/// Handles one text frame of an idle or storm connection: errors by code, the rest by type.
pub fn count_event(p: &[u8], st: &RefCell<WStats>) {
    let ty = ws::event_type(p);
    let mut s = st.borrow_mut();
    if ty == b"error" {
        let code = ws::str_after(p, b"\"code\":\"").unwrap_or(b"?");
        *s.errors.entry(String::from_utf8_lossy(code).into_owned()).or_default() += 1;
    } else {
        *s.other.entry(String::from_utf8_lossy(ty).into_owned()).or_default() += 1;
    }
}

/// Reads frames until the connection closes. `f` gets each complete text frame.
pub async fn read_loop<F: FnMut(&[u8], u64)>(
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    wr: Wr,
    mask: [u8; 4],
    mut f: F,
) {
    loop {
        let now = now_us();
        while let Some(h) = ws::parse(&buf) {
            let end = h.hlen + h.plen;
            match h.op {
                ws::OP_TEXT | ws::OP_CONT => f(&buf[h.hlen..end], now),
                ws::OP_PING => {
                    let mut out = Vec::with_capacity(h.plen + 8);
                    ws::encode_frame(&mut out, ws::OP_PONG, &buf[h.hlen..end], mask);
                    let _ = wr.lock().await.write_all(&out).await;
                }
                ws::OP_CLOSE => return,
                _ => {}
            }
            buf.advance(end);
        }
        if buf.capacity() - buf.len() < 8192 {
            buf.reserve(32768);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_step() {
        assert_eq!(parse_ref_step(b"3.17.42"), Some(3));
        assert_eq!(parse_ref_step(b"x.1"), None);
        assert_eq!(parse_ref_step(b"7"), None);
    }

    #[test]
    fn seq_tracking_counts_dups_and_gaps() {
        let mut last = Vec::new();
        let mut ss = StepStats::default();
        for (room, seq) in [(1, 1), (1, 2), (2, 5), (1, 2), (1, 6), (2, 6)] {
            track_seq(&mut last, room, seq, &mut ss);
        }
        assert_eq!((ss.dups, ss.gaps), (1, 3), "room 2 starts at its first seq; room 1 skips 3..=5");
        assert_eq!(last, [(1, 6), (2, 6)]);
    }

    #[test]
    fn deliveries_and_errors() {
        let st = RefCell::new(WStats::with_steps(1));
        let ctx = ConnCtx::new(4, 10);
        ctx.inflight.set(2);
        let m = br#"{"type":"message","room_id":3,"seq":1,"sender_id":4,"content":"t=100;s=0;xx"}"#;
        on_text(m, 1100, &ctx, &st);
        on_text(br#"{"type":"error","code":"rate_limited","ref":"0.1.1"}"#, 0, &ctx, &st);
        on_text(br#"{"type":"presence"}"#, 0, &ctx, &st);
        let s = st.borrow();
        let ss = &s.steps[0];
        assert_eq!((ss.recv, ss.acks, ss.send_err, ss.expected), (1, 1, 1, -10));
        assert_eq!(ss.lat.as_ref().unwrap().max(), 1000);
        assert_eq!((s.errors["rate_limited"], s.other["presence"]), (1, 1));
        assert_eq!(ctx.inflight.get(), 0);
    }
}
