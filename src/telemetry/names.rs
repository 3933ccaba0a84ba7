//! Metric names, one constant each (see [`super`] for the conventions).

/// Open WebSocket connections.
pub const WS_CONNECTIONS: &str = "livechat_ws_connections";
/// WebSocket upgrades refused, by reason.
pub const WS_UPGRADES_REFUSED_TOTAL: &str = "livechat_ws_upgrades_refused_total";
/// Client events received, by type.
pub const WS_EVENTS_IN_TOTAL: &str = "livechat_ws_events_in_total";
/// Error events sent to clients, by code.
pub const WS_ERRORS_TOTAL: &str = "livechat_ws_errors_total";
/// Frames written to client sockets.
pub const WS_DELIVERIES_TOTAL: &str = "livechat_ws_deliveries_total";
/// Bus publish of a room message to the socket write that carried it (oldest message per written batch).
pub const WS_DELIVERY_LATENCY_SECONDS: &str = "livechat_ws_delivery_latency_seconds";
/// Frames for room subscribers discarded: outbound queue overflow (slow consumer) or a closing connection.
pub const WS_OUTBOUND_DROPPED_FRAMES_TOTAL: &str = "livechat_ws_outbound_dropped_frames_total";
/// Connections closed 1013 for a full outbound queue.
pub const WS_SLOW_CONSUMER_CLOSES_TOTAL: &str = "livechat_ws_slow_consumer_closes_total";
/// Connections closed for a protocol violation or limit.
pub const WS_PROTOCOL_CLOSES_TOTAL: &str = "livechat_ws_protocol_closes_total";
/// sync requests served.
pub const WS_SYNC_REPLAYS_TOTAL: &str = "livechat_ws_sync_replays_total";
/// Messages replayed by sync.
pub const WS_SYNC_REPLAYED_MESSAGES_TOTAL: &str = "livechat_ws_sync_replayed_messages_total";
/// Frames queued to subscriber outboxes.
pub const BUS_FANOUT_TOTAL: &str = "livechat_bus_fanout_total";
/// Room sequence gaps filled from PostgreSQL.
pub const BUS_GAP_FILLS_TOTAL: &str = "livechat_bus_gap_fills_total";
/// 1 while the Redis pub/sub bridge to the other nodes is up.
pub const BUS_BRIDGE_CONNECTED: &str = "livechat_bus_bridge_connected";
/// Connections of the Redis pub/sub bridge (1 + reconnects).
pub const BUS_BRIDGE_CONNECTS_TOTAL: &str = "livechat_bus_bridge_connects_total";
/// Envelopes published to the other nodes over Redis.
pub const BUS_BRIDGE_PUBLISHED_TOTAL: &str = "livechat_bus_bridge_published_total";
/// Envelopes received from the other nodes over Redis.
pub const BUS_BRIDGE_RECEIVED_TOTAL: &str = "livechat_bus_bridge_received_total";
/// Pipelined Redis publishes that failed.
pub const BUS_BRIDGE_PUBLISH_ERRORS_TOTAL: &str = "livechat_bus_bridge_publish_errors_total";
/// Unordered events (typing, presence, receipts) not published to the other nodes.
pub const BUS_BRIDGE_DROPPED_TOTAL: &str = "livechat_bus_bridge_dropped_total";
/// Room catch-ups from PostgreSQL (after a room's SUBSCRIBE, a Redis reconnect, or a catch-up hint).
pub const BUS_BRIDGE_CATCHUPS_TOTAL: &str = "livechat_bus_bridge_catchups_total";
/// Cluster presence calls to Redis that failed.
pub const PRESENCE_REDIS_ERRORS_TOTAL: &str = "livechat_presence_redis_errors_total";
/// Expired cluster nodes removed from the presence keys.
pub const PRESENCE_NODES_REAPED_TOTAL: &str = "livechat_presence_nodes_reaped_total";
/// Group-commit transaction latency.
pub const STORAGE_COMMIT_SECONDS: &str = "livechat_storage_commit_seconds";
/// Writes per group commit.
pub const STORAGE_BATCH_ROWS: &str = "livechat_storage_batch_rows";
/// Users per membership look-up query (WebSocket upgrades are batched).
pub const WS_MEMBERSHIP_BATCH_ROWS: &str = "livechat_ws_membership_batch_rows";
/// Messages committed.
pub const STORAGE_MESSAGES_COMMITTED_TOTAL: &str = "livechat_storage_messages_committed_total";
/// Counter: edits, deletes and reactions committed (membership events are written by REST).
pub const STORAGE_EVENTS_COMMITTED_TOTAL: &str = "livechat_storage_events_committed_total";
/// Batches retried after a failure before COMMIT.
pub const STORAGE_BATCH_RETRIES_TOTAL: &str = "livechat_storage_batch_retries_total";
/// Writes answered with `unavailable`.
pub const STORAGE_UNAVAILABLE_TOTAL: &str = "livechat_storage_unavailable_total";
/// Messages (re)indexed for search.
pub const SEARCH_INDEXED_TOTAL: &str = "livechat_search_indexed_total";
/// Rooms with events not yet indexed for search, as this node's indexer knows them.
pub const SEARCH_ROOMS_BEHIND: &str = "livechat_search_rooms_behind";
/// Writes waiting for the group-commit writer.
pub const STORAGE_QUEUE_DEPTH: &str = "livechat_storage_queue_depth";
/// 1 when PostgreSQL answered the last readiness probe.
pub const POSTGRES_UP: &str = "livechat_postgres_up";
/// 1 when Redis answered the last readiness probe.
pub const REDIS_UP: &str = "livechat_redis_up";
/// Failed accept() calls.
pub const HTTP_ACCEPT_ERRORS_TOTAL: &str = "livechat_http_accept_errors_total";
/// Notification jobs enqueued.
pub const NOTIFY_JOBS_ENQUEUED_TOTAL: &str = "livechat_notify_jobs_enqueued_total";
/// Notification jobs delivered, by sink.
pub const NOTIFY_JOBS_DELIVERED_TOTAL: &str = "livechat_notify_jobs_delivered_total";
/// Failed notification deliveries scheduled for a retry.
pub const NOTIFY_JOBS_RETRIED_TOTAL: &str = "livechat_notify_jobs_retried_total";
/// Notification jobs moved to the dead letters.
pub const NOTIFY_JOBS_DEAD_LETTERED_TOTAL: &str = "livechat_notify_jobs_dead_lettered_total";
/// Notification jobs taken over from a dead worker.
pub const NOTIFY_JOBS_RECLAIMED_TOTAL: &str = "livechat_notify_jobs_reclaimed_total";
/// Relay passes refused by a full queue (rows wait in the outbox).
pub const NOTIFY_ENQUEUE_REFUSED_TOTAL: &str = "livechat_notify_enqueue_refused_total";
/// Notification jobs queued, in flight or waiting for a retry.
pub const NOTIFY_QUEUE_DEPTH: &str = "livechat_notify_queue_depth";
/// Notification jobs in the dead letters.
pub const NOTIFY_DEAD_LETTERS: &str = "livechat_notify_dead_letters";
/// From enqueue to successful delivery.
pub const NOTIFY_DELIVERY_SECONDS: &str = "livechat_notify_delivery_seconds";
/// SIGHUP configuration reloads, by result (ok, error).
pub const CONFIG_RELOADS_TOTAL: &str = "livechat_config_reloads_total";
/// Resident set size.
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "livechat_process_resident_memory_bytes";
/// Open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "livechat_process_open_fds";
/// Messages per receipt look-up query (receipts are batched).
pub const STORAGE_MESSAGE_LOOKUP_BATCH_ROWS: &str = "livechat_storage_message_lookup_batch_rows";
/// Room sequence gaps skipped: never committed, or unreadable past the fill's patience.
pub const BUS_GAPS_SKIPPED_TOTAL: &str = "livechat_bus_gaps_skipped_total";
