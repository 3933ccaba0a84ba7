//! The send side of a traffic run: every sending connection sends on its own schedule
//! (open loop at the step's rate, or closed loop with a window), then the worker waits for
//! the last deliveries.

use super::out::{WStats, WorkerOut};
use super::plan::Plan;
use super::recv::{ConnCtx, Wr};
use super::Live;
use crate::clock::{now_us, sleep_until_us};
use crate::stats::self_cpu_secs;
use crate::ws;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The step timeline, in µs since the epoch.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// start of the first step
    t0: u64,
    /// length of a step
    step_us: u64,
    /// number of steps (at least 1)
    nsteps: usize,
    /// end of the last step
    end: u64,
}

impl Schedule {
    fn new(plan: &Plan, t0: u64) -> Self {
        let nsteps = plan.steps.len().max(1);
        let step_us = (plan.step_secs * 1e6) as u64;
        Schedule { t0, step_us, nsteps, end: t0 + step_us * nsteps as u64 }
    }
}

/// Sends the plan's traffic from `t0` on, waits for the last deliveries, and records this
/// worker's CPU at every step boundary and in total.
pub(super) async fn run_traffic(
    plan: &Plan,
    lives: &[Live],
    t0: u64,
    st: &Rc<RefCell<WStats>>,
    out: &Rc<RefCell<WorkerOut>>,
    cpu0: f64,
) {
    let sched = Schedule::new(plan, t0);
    let marks = spawn_cpu_marks(sched, cpu0);
    let n_senders = plan.n_senders.max(1) as f64;
    let mut senders = Vec::new();
    for (k, l) in lives.iter().enumerate() {
        if plan.conns[l.spec_idx].send_room == 0 {
            continue;
        }
        // offset each sender's send times by a fraction of the interval, by its position
        let phase = (k as f64 / n_senders).fract();
        let sender = Sender::new(plan, l, sched, phase, n_senders, st.clone());
        senders.push(tokio::task::spawn_local(sender.run()));
    }
    sleep_until_us(sched.end).await;
    for s in senders {
        let _ = s.await;
    }
    drain(plan.drain_secs, st).await;
    let mut o = out.borrow_mut();
    o.cpu_marks = marks.borrow().clone();
    o.cpu_total = self_cpu_secs() - cpu0;
}

/// Samples this process's CPU seconds (since `cpu0`) at every step boundary.
fn spawn_cpu_marks(sched: Schedule, cpu0: f64) -> Rc<RefCell<Vec<f64>>> {
    let marks = Rc::new(RefCell::new(vec![0.0f64]));
    let m = marks.clone();
    tokio::task::spawn_local(async move {
        for k in 1..=sched.nsteps as u64 {
            sleep_until_us(sched.t0 + k * sched.step_us).await;
            m.borrow_mut().push(self_cpu_secs() - cpu0);
        }
    });
    marks
}

/// After the last step: waits until deliveries stop for 1 s, at most `drain_secs`.
async fn drain(drain_secs: f64, st: &RefCell<WStats>) {
    let dl = now_us() + (drain_secs * 1e6) as u64;
    let mut last = st.borrow().total_recv;
    let mut quiet_since = now_us();
    while now_us() < dl {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = st.borrow().total_recv;
        if r != last {
            last = r;
            quiet_since = now_us();
        } else if now_us() - quiet_since > 1_000_000 {
            break;
        }
    }
}

/// One sending connection.
struct Sender {
    ctx: Rc<ConnCtx>,
    wr: Wr,
    st: Rc<RefCell<WStats>>,
    sched: Schedule,
    /// offered messages/s per step, all senders together
    steps: Vec<f64>,
    /// closed loop: messages in flight (0 = open loop)
    window: usize,
    n_senders: f64,
    /// offset of this sender's send times, in intervals (0..1)
    phase: f64,
    /// deliveries expected per message
    fanout: i64,
    frames: Frames,
}

impl Sender {
    fn new(plan: &Plan, l: &Live, sched: Schedule, phase: f64, n_senders: f64, st: Rc<RefCell<WStats>>) -> Self {
        let idx = l.spec_idx;
        let spec = &plan.conns[idx];
        Sender {
            ctx: l.ctx.clone(),
            wr: l.wr.clone(),
            st,
            sched,
            steps: plan.steps.clone(),
            window: plan.window,
            n_senders,
            phase,
            fanout: spec.fanout as i64,
            frames: Frames {
                legacy: plan.legacy,
                room: spec.send_room,
                user: spec.user,
                size: plan.size,
                idx,
                mask: ws::mask_for(idx as u64 ^ 0xabcdef),
            },
        }
    }

    async fn run(self) {
        if self.window > 0 {
            self.closed_loop().await;
        } else {
            self.open_loop().await;
        }
    }

    /// Keeps `window` messages in flight until the end of the last step.
    async fn closed_loop(&self) {
        let Schedule { t0, step_us, nsteps, end } = self.sched;
        let mut buf = Vec::with_capacity(4096);
        let mut n: u64 = 0;
        sleep_until_us(t0).await;
        loop {
            let now = now_us();
            if now >= end {
                break;
            }
            let step = (((now - t0) / step_us) as usize).min(nsteps - 1);
            buf.clear();
            let mut added = 0;
            while self.ctx.inflight.get() < self.window as u32 {
                self.frames.push(&mut buf, now, step, n);
                self.ctx.inflight.set(self.ctx.inflight.get() + 1);
                n += 1;
                added += 1;
            }
            if added > 0 && !self.send(step, added, &buf).await {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), self.ctx.notify.notified()).await;
        }
    }

    /// Each step at its rate (this sender's share of it), whatever the server does.
    async fn open_loop(&self) {
        let mut buf = Vec::with_capacity(4096);
        let mut n: u64 = 0;
        for (si, &rate) in self.steps.iter().enumerate() {
            let per = rate / self.n_senders;
            if per <= 0.0 {
                continue;
            }
            if !self.open_loop_step(si, 1e6 / per, &mut buf, &mut n).await {
                return;
            }
        }
    }

    /// Step `si` with one message every `interval` µs: wakes at each due time and sends
    /// everything due by then in one write. False once the connection is broken.
    async fn open_loop_step(&self, si: usize, interval: f64, buf: &mut Vec<u8>, n: &mut u64) -> bool {
        let s0 = self.sched.t0 + si as u64 * self.sched.step_us;
        let s1 = s0 + self.sched.step_us;
        let due = |i: u64| s0 + ((i as f64 + self.phase) * interval) as u64;
        let mut i: u64 = 0;
        while due(i) < s1 {
            sleep_until_us(due(i)).await;
            let now = now_us();
            buf.clear();
            let mut added = 0u64;
            while due(i) <= now && due(i) < s1 {
                // embed the scheduled time: open-loop latency without coordinated omission
                self.frames.push(buf, due(i), si, *n);
                i += 1;
                *n += 1;
                added += 1;
            }
            if added > 0 && !self.send(si, added, buf).await {
                return false;
            }
        }
        true
    }

    /// Counts `added` messages as sent in `step` and writes them. False if the write failed.
    async fn send(&self, step: usize, added: u64, buf: &[u8]) -> bool {
        {
            let mut s = self.st.borrow_mut();
            s.steps[step].sent += added;
            s.steps[step].expected += self.fanout * added as i64;
        }
        self.wr.lock().await.write_all(buf).await.is_ok()
    }
}

/// The fixed parts of one sender's message frames.
struct Frames {
    legacy: bool,
    room: u64,
    user: u64,
    /// content bytes per message
    size: usize,
    /// the connection's index in the plan (part of `client_msg_id`)
    idx: usize,
    mask: [u8; 4],
}

impl Frames {
    /// Appends message `n` of step `step`, stamped with send time `t` (µs): content
    /// `t=<t>;s=<step>;` padded with `x` to `size`, `client_msg_id` `<step>.<idx>.<n>`.
    fn push(&self, out: &mut Vec<u8>, t: u64, step: usize, n: u64) {
        let cid = format!("{step}.{}.{n}", self.idx);
        let mut content = format!("t={t};s={step};");
        while content.len() < self.size {
            content.push('x');
        }
        let json = if self.legacy {
            format!("{{\"type\":\"message\",\"content\":\"{content}\",\"sender_id\":{}}}", self.user)
        } else {
            format!(
                "{{\"type\":\"message\",\"room_id\":{},\"content\":\"{content}\",\"client_msg_id\":\"{cid}\"}}",
                self.room
            )
        };
        ws::encode_frame(out, ws::OP_TEXT, json.as_bytes(), self.mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(frame: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let h = ws::parse(frame).unwrap();
        frame[h.hlen..h.hlen + h.plen].iter().enumerate().map(|(i, b)| b ^ mask[i & 3]).collect()
    }

    #[test]
    fn message_frames() {
        let mut f = Frames { legacy: false, room: 3, user: 4, size: 16, idx: 7, mask: [1, 2, 3, 4] };
        let mut out = Vec::new();
        f.push(&mut out, 123, 2, 9);
        assert_eq!(
            payload(&out, f.mask),
            br#"{"type":"message","room_id":3,"content":"t=123;s=2;xxxxxx","client_msg_id":"2.7.9"}"#
        );
        f.legacy = true;
        out.clear();
        f.push(&mut out, 5, 0, 0);
        assert_eq!(payload(&out, f.mask), br#"{"type":"message","content":"t=5;s=0;xxxxxxxx","sender_id":4}"#);
    }
}
