//! One client of the `resume` reconnect wave: upgrade, `sync` from where it left off, and
//! record every seq it receives until it has the final one.

use super::Room;
use crate::clock::now_us;
use crate::scen::client::{open_retry, Client};
use crate::scen::setup::resume_path;
use crate::ws;
use anyhow::Result;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// A client gives up this long after it started reconnecting, µs.
const CLIENT_LIMIT_US: u64 = 90_000_000;
/// Re-syncs after `unavailable` errors, at most.
const MAX_SYNC_RETRIES: u64 = 20;

/// What one reconnecting client saw.
pub(super) struct ClientOutcome {
    /// the seq it synced from
    pub from: u64,
    /// deliveries per seq above `from` (index k: seq `from + 1 + k`)
    pub got: Vec<u8>,
    /// from the start of its reconnect to the final `synced`, µs
    pub time_to_synced_us: u64,
    /// it got a `synced` without `more`
    pub synced: bool,
    /// messages received before that `synced`
    pub replayed: u64,
    /// the `error` events it received, verbatim
    pub errors: Vec<String>,
    /// refused upgrades before it got in
    pub upgrade_retries: u64,
    /// deliveries with a seq below one already seen
    pub out_of_order: u64,
    /// syncs repeated after `unavailable`
    pub sync_retries: u64,
}

/// The `sync` request for `room` from seq `from`.
fn sync_json(room: u64, from: u64) -> String {
    format!("{{\"type\":\"sync\",\"rooms\":{{\"{room}\":{from}}}}}")
}

/// Receiver `i` reconnects and syncs from `from`; it stops once it is synced and has seen
/// `final_target` (set when the live traffic is over), when the server closes, or after 90 s.
pub(super) async fn run(room: Rc<Room>, i: usize, from: u64, final_target: Rc<Cell<u64>>) -> Result<ClientOutcome> {
    let start = now_us();
    let (mut cl, retries) = {
        let _p = room.connect.acquire().await.unwrap();
        open_retry(room.target, i, &resume_path(&room.tokens[i])).await?
    };
    cl.send_text(&sync_json(room.id, from)).await?;
    let mut st = SyncState::new(from);
    loop {
        if st.synced_at != 0 && st.max_seen >= final_target.get() {
            break;
        }
        let f = match tokio::time::timeout(Duration::from_millis(300), cl.next()).await {
            Err(_) => {
                if now_us() > start + CLIENT_LIMIT_US {
                    break;
                }
                continue;
            }
            Ok(f) => f?,
        };
        let Some(f) = f else { break };
        st.on_frame(&mut cl, room.id, &f).await?;
    }
    Ok(st.finish(start, retries))
}

/// A reconnecting client's progress.
struct SyncState {
    from: u64,
    got: Vec<u8>,
    max_seen: u64,
    /// when the final `synced` arrived (µs), 0 before
    synced_at: u64,
    replayed: u64,
    out_of_order: u64,
    sync_retries: u64,
    errors: Vec<String>,
}

impl SyncState {
    fn new(from: u64) -> Self {
        SyncState {
            from,
            got: Vec::new(),
            max_seen: from,
            synced_at: 0,
            replayed: 0,
            out_of_order: 0,
            sync_retries: 0,
            errors: Vec::new(),
        }
    }

    async fn on_frame(&mut self, cl: &mut Client, room: u64, f: &[u8]) -> Result<()> {
        let ty = ws::event_type(f);
        if ws::is_room_event(ty) && ws::num_after(f, b"\"room_id\":") == Some(room) {
            self.on_message(ws::num_after(f, b"\"seq\":").unwrap_or(0));
        } else if ty == b"synced" {
            if memchr::memmem::find(f, b"\"more\":true").is_some() {
                // continue from what the server says it sent for this room (contiguous),
                // not from the highest seq seen (live messages may have overtaken)
                let rooms = ws::find_after(f, b"\"rooms\":").unwrap_or(b"");
                let key = format!("\"{room}\":");
                let upto = ws::num_after(rooms, key.as_bytes()).unwrap_or(self.from);
                cl.send_text(&sync_json(room, upto)).await?;
            } else if self.synced_at == 0 {
                self.synced_at = now_us();
            }
        } else if ty == b"error" {
            self.on_error(cl, room, f).await?;
        }
        Ok(())
    }

    fn on_message(&mut self, sq: u64) {
        if sq < self.max_seen {
            self.out_of_order += 1;
        }
        if sq > self.from {
            let k = (sq - self.from - 1) as usize;
            if self.got.len() <= k {
                self.got.resize(k + 1, 0);
            }
            self.got[k] = self.got[k].saturating_add(1);
            self.max_seen = self.max_seen.max(sq);
        }
        if self.synced_at == 0 {
            self.replayed += 1;
        }
    }

    /// Records the error; on `unavailable` before the client is synced, backs off as the
    /// server asks (`retry_after_ms`) and syncs again from the contiguous point.
    async fn on_error(&mut self, cl: &mut Client, room: u64, f: &[u8]) -> Result<()> {
        let code = ws::str_after(f, b"\"code\":\"").unwrap_or(b"");
        if code == b"unavailable" && self.synced_at == 0 && self.sync_retries < MAX_SYNC_RETRIES {
            self.sync_retries += 1;
            let ra = ws::num_after(f, b"\"retry_after_ms\":").unwrap_or(200).clamp(10, 5000);
            tokio::time::sleep(Duration::from_millis(ra)).await;
            let contig = self.from + self.got.iter().take_while(|&&n| n > 0).count() as u64;
            cl.send_text(&sync_json(room, contig)).await?;
        }
        self.errors.push(String::from_utf8_lossy(f).into_owned());
        Ok(())
    }

    fn finish(self, start: u64, upgrade_retries: u64) -> ClientOutcome {
        ClientOutcome {
            from: self.from,
            got: self.got,
            time_to_synced_us: self.synced_at.saturating_sub(start),
            synced: self.synced_at != 0,
            replayed: self.replayed,
            errors: self.errors,
            upgrade_retries,
            out_of_order: self.out_of_order,
            sync_retries: self.sync_retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_request() {
        assert_eq!(sync_json(7, 42), r#"{"type":"sync","rooms":{"7":42}}"#);
    }

    #[test]
    fn messages_are_counted_per_seq_above_from() {
        let mut st = SyncState::new(10);
        for sq in [11, 13, 12, 13, 9] {
            st.on_message(sq);
        }
        assert_eq!(st.got, [1, 1, 2]);
        assert_eq!((st.max_seen, st.out_of_order, st.replayed), (13, 2, 5));
    }
}
