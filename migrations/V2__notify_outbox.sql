-- Transactional outbox for notifications: one row per committed message, written in the same
-- transaction as the message, deleted once its jobs are enqueued. A crash between commit and
-- enqueue leaves the row, so no job is ever lost (at-least-once; job ids are stable).
CREATE TABLE notify_outbox (
    message_id  BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
