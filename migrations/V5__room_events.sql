-- Room events (README "Room events"): edits, deletes, reactions and membership changes take
-- the room's next seq like messages do. A message row keeps the message as it stands now
-- (content, edited_at, deleted, reaction counts), so history stays one indexed read; the
-- other events live in room_events at their own seqs. Together the two tables are the room's
-- gapless log: every seq of a room is either a message or a room_events row.
ALTER TABLE messages
    ADD COLUMN reply_to     BIGINT,
    -- Mentioned members (only those that were members at commit); NULL for none.
    ADD COLUMN mentions     BIGINT[],
    ADD COLUMN edited_at    TIMESTAMPTZ,
    ADD COLUMN deleted      BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN reply_count  INTEGER NOT NULL DEFAULT 0,
    -- emoji -> count of users who reacted with it; NULL for none.
    ADD COLUMN reactions    JSONB;

-- Bumped by every membership change of the room. The group commit reads it in its statement's
-- snapshot and reserves seqs only if the row still holds that version when it gets the row's
-- lock: a membership change that committed in between (e.g. a `leave` on another node) makes
-- the write retry, so membership is checked against what is committed when the write commits.
ALTER TABLE rooms ADD COLUMN membership_version BIGINT NOT NULL DEFAULT 0;

-- Threads: the replies to a message, newest first. Partial, so plain messages cost nothing.
CREATE INDEX messages_thread ON messages (reply_to, seq) WHERE reply_to IS NOT NULL;

-- Who reacted with what: one row per (message, user, emoji); the counts live on the message.
CREATE TABLE reactions (
    message_id  BIGINT NOT NULL,
    user_id     BIGINT NOT NULL,
    emoji       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE room_events (
    room_id     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('edit', 'delete', 'reaction', 'member')),
    -- edit, delete, reaction: the message.
    message_id  BIGINT,
    -- edit, reaction: the actor; delete: the actor (NULL for the admin API); member: the member.
    user_id     BIGINT,
    -- reaction: the emoji.
    emoji       TEXT,
    -- reaction: added (true) or removed; member: joined (true) or left.
    flag        BOOLEAN,
    -- member: who made the change (NULL for the admin API and sign-up).
    by_id       BIGINT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq)
);
