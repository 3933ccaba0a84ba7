//! Opening this worker's connections and starting one reader task per connection.

use super::out::{WStats, WorkerOut};
use super::plan::{ws_path, ConnSpec, Mode, Plan};
use super::recv::{count_event, on_text, read_loop, ConnCtx, Wr};
use super::Live;
use crate::backoff::{retry, Backoff};
use crate::clock::now_us;
use crate::hist::{hist_to_vec, new_hist};
use crate::ws;
use bytes::BytesMut;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Attempts per connection (a refused upgrade or a failed connect is retried).
const CONNECT_ATTEMPTS: u64 = 3;
/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// An error's text, cut to a map key.
fn error_key(e: &std::io::Error) -> String {
    let mut k = e.to_string();
    if k.len() > 60 {
        let mut cut = 60;
        while !k.is_char_boundary(cut) {
            cut -= 1;
        }
        k.truncate(cut);
    }
    k
}

/// Opens the connections `mine` (indexes into the plan), `plan.concurrency` at a time, and
/// starts their readers. Records connect latency, failures and retries in `out`.
pub(super) async fn connect_all(
    plan: &Plan,
    mine: &[usize],
    st: &Rc<RefCell<WStats>>,
    out: &Rc<RefCell<WorkerOut>>,
) -> Vec<Live> {
    let target: SocketAddr = plan.target.parse().expect("target host:port");
    let sem = Rc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let lives = Rc::new(RefCell::new(Vec::with_capacity(mine.len())));
    let hist = Rc::new(RefCell::new(new_hist()));
    let t0 = std::time::Instant::now();
    let mut handles = Vec::with_capacity(mine.len());
    for &i in mine {
        let spec = plan.conns[i].clone();
        let path = ws_path(plan, &spec.token);
        let (sem, lives, st, out, hist) = (sem.clone(), lives.clone(), st.clone(), out.clone(), hist.clone());
        let mode = plan.mode.clone();
        handles.push(tokio::task::spawn_local(async move {
            let permit = sem.acquire().await.unwrap();
            let res = connect_with_retry(target, i, &path, &hist, &out).await;
            drop(permit);
            match res {
                Err(e) => {
                    let mut o = out.borrow_mut();
                    o.conn_fail += 1;
                    *o.conn_errors.entry(error_key(&e)).or_default() += 1;
                }
                Ok((s, buf)) => {
                    out.borrow_mut().connected += 1;
                    lives.borrow_mut().push(start_reader(s, buf, &spec, i, mode, st));
                }
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let mut o = out.borrow_mut();
    o.connect_secs = t0.elapsed().as_secs_f64();
    o.connect_lat = hist_to_vec(&hist.borrow());
    drop(o);
    Rc::try_unwrap(lives).ok().map(|c| c.into_inner()).unwrap_or_default()
}

/// TCP connect + upgrade of connection `i`, retried; the latency of the successful attempt
/// goes into `hist`, every retried failure into `out.retried`.
async fn connect_with_retry(
    target: SocketAddr,
    i: usize,
    path: &str,
    hist: &RefCell<Histogram<u64>>,
    out: &RefCell<WorkerOut>,
) -> std::io::Result<(TcpStream, BytesMut)> {
    let attempt = || async move {
        let start = now_us();
        ws::connect(target, i, path).await.map(|c| (c, now_us() - start))
    };
    let on_retry = |e: &std::io::Error| *out.borrow_mut().retried.entry(error_key(e)).or_default() += 1;
    let ((conn, took), _) = retry(CONNECT_ATTEMPTS, Backoff::fixed(RETRY_PAUSE), attempt, on_retry).await?;
    let _ = hist.borrow_mut().record(took.max(1));
    Ok(conn)
}

/// Splits an open connection and spawns its reader; returns the sender's handle on it.
fn start_reader(s: TcpStream, buf: BytesMut, spec: &ConnSpec, i: usize, mode: Mode, st: Rc<RefCell<WStats>>) -> Live {
    let (rd, wr) = s.into_split();
    let wr: Wr = Rc::new(tokio::sync::Mutex::new(wr));
    let ctx = Rc::new(ConnCtx::new(spec.user, spec.fanout));
    let mask = ws::mask_for(i as u64);
    let (ctx2, wr2) = (ctx.clone(), wr.clone());
    tokio::task::spawn_local(async move {
        if mode == Mode::Traffic {
            read_loop(rd, buf, wr2, mask, |p, now| on_text(p, now, &ctx2, &st)).await;
        } else {
            read_loop(rd, buf, wr2, mask, |p, _| count_event(p, &st)).await;
        }
        st.borrow_mut().closed += 1;
    });
    Live { ctx, wr, spec_idx: i }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_keys_are_cut_on_a_char_boundary() {
        let e = std::io::Error::other("é".repeat(40));
        let k = error_key(&e);
        assert_eq!(k.len(), 60);
        let e = std::io::Error::other(format!("x{}", "é".repeat(40)));
        assert_eq!(error_key(&e).len(), 59);
        assert_eq!(error_key(&std::io::Error::other("short")), "short");
    }
}
