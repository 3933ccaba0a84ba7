-- Search (README "Search"): a GIN index over the words of each message's current text.
-- The 'simple' configuration lower-cases and keeps every word (no stemming, no stop words),
-- which is what whole-word-or-prefix matching needs: `deploy` must find "deployment" as a
-- prefix, not as a stem, and short words like "go" must stay findable. An edit rewrites the
-- row, so the index holds the current text; a delete erases content, so a tombstone has no
-- words. GIN's pending list (fastupdate, on by default) batches index work off the insert
-- path; BENCHMARKS.md "Search" records its cost to the group commit.
CREATE INDEX messages_search ON messages USING gin (to_tsvector('simple', content));
