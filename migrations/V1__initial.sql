-- Users, rooms, memberships with receipt watermarks, and the message log.
CREATE TABLE users (
    id          BIGSERIAL PRIMARY KEY,
    username    TEXT NOT NULL UNIQUE CHECK (char_length(username) BETWEEN 1 AND 50),
    email       TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE rooms (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Highest seq handed out; the writer reserves ranges with UPDATE ... RETURNING, so the row
    -- lock makes seq order equal commit order (gapless sync across nodes).
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- Kept by membership changes so presence can skip big rooms without counting rows.
    member_count  INTEGER NOT NULL DEFAULT 0
);

-- Room 1 is the seed's single shared chat.
INSERT INTO rooms (id, name) VALUES (1, 'general');
SELECT setval(pg_get_serial_sequence('rooms', 'id'), 1);

CREATE TABLE room_members (
    room_id        BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id        BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    delivered_seq  BIGINT NOT NULL DEFAULT 0,
    read_seq       BIGINT NOT NULL DEFAULT 0,
    joined_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_by_user ON room_members (user_id);

CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    room_id        BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq            BIGINT NOT NULL,
    sender_id      BIGINT NOT NULL REFERENCES users (id),
    content        TEXT NOT NULL,
    client_msg_id  TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered      BOOLEAN NOT NULL DEFAULT false,
    read           BOOLEAN NOT NULL DEFAULT false,
    -- Also the index that pages history and sync by (room_id, seq).
    CONSTRAINT messages_room_seq UNIQUE (room_id, seq)
);
-- Idempotent send: one row per (sender, client_msg_id).
CREATE UNIQUE INDEX messages_idempotency ON messages (sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
