//! Totals over the reconnecting clients of `resume`.

use super::reconnect::ClientOutcome;
use super::wave::ClientResult;
use crate::hist::new_hist;
use crate::ws;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// The wave's totals.
pub(super) struct Tally {
    /// time to `synced`, µs, of the clients that synced
    pub h: Histogram<u64>,
    /// seqs up to the final one that a client never received, all clients
    pub gaps: u64,
    /// extra copies of a seq, all clients
    pub dups: u64,
    /// clients that never got their final `synced`
    pub not_synced: u64,
    /// clients whose task failed
    pub failed: u64,
    /// messages received before `synced`, all clients
    pub replayed: u64,
    /// clients that missed at least one seq
    pub clients_with_gap: u64,
    /// `error` codes and client failures, counted
    pub errs: BTreeMap<String, u64>,
    /// refused upgrades retried, all clients
    pub upgrade_retries: u64,
    /// deliveries below a seq already seen, all clients
    pub out_of_order: u64,
    /// syncs repeated after `unavailable`, all clients
    pub sync_retries: u64,
}

impl Tally {
    /// Tallies the clients' results against the room's `final_seq`.
    pub fn new(final_seq: u64, results: Vec<ClientResult>) -> Self {
        let mut t = Tally {
            h: new_hist(),
            gaps: 0,
            dups: 0,
            not_synced: 0,
            failed: 0,
            replayed: 0,
            clients_with_gap: 0,
            errs: BTreeMap::new(),
            upgrade_retries: 0,
            out_of_order: 0,
            sync_retries: 0,
        };
        for r in results {
            match r {
                Ok(Ok(o)) => t.add(o, final_seq),
                Ok(Err(e)) => {
                    t.failed += 1;
                    let k = e.to_string();
                    *t.errs.entry(format!("client: {}", k.chars().take(60).collect::<String>())).or_default() += 1;
                }
                Err(_) => t.failed += 1,
            }
        }
        t
    }

    /// No client failed, all synced, none missed a seq.
    pub fn passed(&self) -> bool {
        self.gaps == 0 && self.failed == 0 && self.not_synced == 0
    }

    fn add(&mut self, o: ClientOutcome, final_seq: u64) {
        self.upgrade_retries += o.upgrade_retries;
        self.out_of_order += o.out_of_order;
        self.sync_retries += o.sync_retries;
        if o.synced {
            let _ = self.h.record(o.time_to_synced_us.max(1));
        } else {
            self.not_synced += 1;
        }
        self.replayed += o.replayed;
        let (g, d) = missing_and_extra(&o.got, final_seq.saturating_sub(o.from) as usize);
        self.dups += d;
        self.gaps += g;
        if g > 0 {
            self.clients_with_gap += 1;
        }
        for e in o.errors {
            let code = ws::str_after(e.as_bytes(), b"\"code\":\"")
                .map(|x| String::from_utf8_lossy(x).into_owned())
                .unwrap_or_default();
            *self.errs.entry(code).or_default() += 1;
        }
    }
}

/// Over the first `need` seqs of `got` (deliveries per seq): seqs never received, and
/// copies beyond the first.
fn missing_and_extra(got: &[u8], need: usize) -> (u64, u64) {
    let (mut missing, mut extra) = (0, 0);
    for k in 0..need {
        let n = got.get(k).copied().unwrap_or(0);
        if n == 0 {
            missing += 1;
        } else if n > 1 {
            extra += (n - 1) as u64;
        }
    }
    (missing, extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_duplicates() {
        assert_eq!(missing_and_extra(&[1, 0, 3, 1], 6), (3, 2));
        assert_eq!(missing_and_extra(&[1, 1], 2), (0, 0));
        assert_eq!(missing_and_extra(&[2, 0], 1), (0, 1));
    }
}
