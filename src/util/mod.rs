//! Small infrastructure shared by every layer: retry pacing, clocks, and poison-tolerant locks.
//! Imports nothing of the crate (the bottom of the layer table in `lib.rs`).

pub mod backoff;
pub mod clock;
pub mod lock;

pub use backoff::Backoff;
pub use lock::lock;
