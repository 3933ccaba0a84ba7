-- One random id per database: every node on this database shares it, so it namespaces the
-- cluster's Redis channels and presence keys by default. Two clusters (or two test runs) on
-- different databases that share one Redis then never see each other's rooms.
CREATE TABLE cluster (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    cluster_id  TEXT NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '')
);
INSERT INTO cluster DEFAULT VALUES;
