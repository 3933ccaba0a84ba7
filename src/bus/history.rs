//! Where gap fills read committed room events from: PostgreSQL in the server, a fake in tests.

use futures_util::future::BoxFuture;

use crate::error::StoreError;
use crate::model::RoomEvent;
use crate::store::Store;

/// Committed room events by room and seq range.
pub trait History: Send + Sync + 'static {
    /// Events of `room` with `after < seq < before`, ascending, at most `limit`.
    fn between(
        &self,
        room: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>>;
}

impl History for Store {
    fn between(
        &self,
        room: i64,
        after: i64,
        before: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>> {
        Box::pin(self.events_between(room, after, before, limit))
    }
}

/// No rows at all (tests): a gap stays parked until its message arrives live.
#[cfg(test)]
pub(crate) struct NoHistory;

#[cfg(test)]
impl History for NoHistory {
    fn between(&self, _: i64, _: i64, _: i64, _: i64) -> BoxFuture<'_, Result<Vec<RoomEvent>, StoreError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
