-- Search index off the write path (README "Search"). V6's GIN index over messages cost the
-- group commit about 11-15 % of its throughput (BENCHMARKS.md "Search"), past the 10 % the
-- write path allows, so the words of each message now live in their own table, filled by the
-- search indexer from each room's event log behind a persisted per-room cursor: a room's seqs
-- commit in order, so "every seq up to last_seq is indexed" is exact, and the edits and
-- deletes in that log re-index the message they changed (from its current text).
DROP INDEX IF EXISTS messages_search;

CREATE TABLE search_docs (
    message_id  BIGINT PRIMARY KEY,
    -- to_tsvector('simple', content) of the message as it stood when last indexed
    tsv         TSVECTOR NOT NULL
);
CREATE INDEX search_docs_tsv ON search_docs USING gin (tsv);

-- Per room: every event with seq <= last_seq is indexed. Rooms without a row start at 0, so
-- an upgraded database is indexed from the beginning, in the background.
CREATE TABLE search_cursor (
    room_id   BIGINT PRIMARY KEY,
    last_seq  BIGINT NOT NULL
);
