//! What a worker counts while it runs, and the result line it prints at the end.

use crate::hist::{hist_to_vec, new_hist};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Live counters of one traffic step, in this worker.
#[derive(Default)]
pub struct StepStats {
    /// messages sent
    pub sent: u64,
    /// messages answered with an `error`
    pub send_err: u64,
    /// deliveries expected for the messages sent
    pub expected: i64,
    /// deliveries received
    pub recv: u64,
    /// deliveries with a seq not above the last one of their room
    pub dups: u64,
    /// seqs skipped
    pub gaps: u64,
    /// own messages received back
    pub acks: u64,
    /// delivery latency, µs
    pub lat: Option<Histogram<u64>>,
    /// ack latency, µs
    pub ack: Option<Histogram<u64>>,
}

impl StepStats {
    /// Zero counters with empty histograms.
    fn new() -> Self {
        StepStats { lat: Some(new_hist()), ack: Some(new_hist()), ..Default::default() }
    }

    /// The serialisable form.
    fn to_out(&self) -> StepOut {
        StepOut {
            sent: self.sent,
            send_err: self.send_err,
            expected: self.expected,
            recv: self.recv,
            dups: self.dups,
            gaps: self.gaps,
            acks: self.acks,
            lat: hist_to_vec(self.lat.as_ref().unwrap()),
            ack: hist_to_vec(self.ack.as_ref().unwrap()),
        }
    }
}

/// [`StepStats`] as sent to the parent (histograms as (µs, count) pairs).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct StepOut {
    /// messages sent
    pub sent: u64,
    /// messages answered with an `error`
    pub send_err: u64,
    /// deliveries expected for the messages sent
    pub expected: i64,
    /// deliveries received
    pub recv: u64,
    /// duplicate deliveries
    pub dups: u64,
    /// seqs skipped
    pub gaps: u64,
    /// own messages received back
    pub acks: u64,
    /// delivery latency (µs, count)
    pub lat: Vec<(u64, u64)>,
    /// ack latency (µs, count)
    pub ack: Vec<(u64, u64)>,
}

/// Everything this worker's reader tasks count.
#[derive(Default)]
pub struct WStats {
    /// per traffic step (one for scenarios without steps)
    pub steps: Vec<StepStats>,
    /// `error` events by code
    pub errors: BTreeMap<String, u64>,
    /// other events by type
    pub other: BTreeMap<String, u64>,
    /// connections the server closed
    pub closed: u64,
    /// messages received in total (drain detection)
    pub total_recv: u64,
}

impl WStats {
    /// Counters for `nsteps` steps.
    pub fn with_steps(nsteps: usize) -> Self {
        WStats { steps: (0..nsteps).map(|_| StepStats::new()).collect(), ..Default::default() }
    }
}

/// A worker's result, printed as one `RESULT <json>` line.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct WorkerOut {
    /// connections assigned to this worker
    pub conns: u64,
    /// connections that upgraded
    pub connected: u64,
    /// connections that failed every attempt
    pub conn_fail: u64,
    /// those failures by error
    pub conn_errors: BTreeMap<String, u64>,
    /// failed attempts that a retry then fixed (200 ms pause each), by error
    pub retried: BTreeMap<String, u64>,
    /// connections the server closed
    pub closed: u64,
    /// per traffic step
    pub steps: Vec<StepOut>,
    /// `error` events by code
    pub errors: BTreeMap<String, u64>,
    /// other events by type
    pub other: BTreeMap<String, u64>,
    /// self CPU seconds at each step boundary (steps+1 samples), from `go`
    pub cpu_marks: Vec<f64>,
    /// self CPU seconds from `go` to the end
    pub cpu_total: f64,
    /// this worker's run-queue wait (CPU contention) from `go` to the end, seconds
    pub runq_wait: f64,
    /// connect (TCP + upgrade) latency, µs
    pub connect_lat: Vec<(u64, u64)>,
    /// time to open all connections, seconds
    pub connect_secs: f64,
}

impl WorkerOut {
    /// Adds the readers' counters `st` to the result.
    pub fn with_stats(mut self, st: &WStats) -> Self {
        self.closed = st.closed;
        self.errors = st.errors.clone();
        self.other = st.other.clone();
        self.steps = st.steps.iter().map(StepStats::to_out).collect();
        self
    }
}
