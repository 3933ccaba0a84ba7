-- The message log is append-only and its writer already guarantees what the foreign keys
-- checked: the room row is locked and updated in the same statement that inserts (an unknown
-- room inserts nothing), and senders are authenticated users that are never deleted. The
-- per-row RI triggers cost the group commit a large share of its throughput.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_room_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_sender_id_fkey;
