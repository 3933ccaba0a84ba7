//! Locks that ignore poisoning.
//!
//! Every critical section in this crate is a plain map/vec/queue update that a panic cannot
//! leave half-done, and a panic in one connection must never cascade into every later user of
//! the same lock (the isolation guarantee in the README).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data back from a poisoned lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
