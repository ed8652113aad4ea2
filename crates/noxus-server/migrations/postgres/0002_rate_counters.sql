-- The replicas' shared rate-limit counters (src/cluster_limits.rs): what all
-- replicas spent per scope (a key, an address, a login counter) and
-- one-second window of the wall clock. Unlogged: not written to the WAL nor
-- replicated; a crash of the database empties it, which forgets the last
-- seconds of spending and nothing else. Windows older than a few seconds
-- are deleted by the replicas.
CREATE UNLOGGED TABLE rate_counters (
    scope TEXT NOT NULL,
    win BIGINT NOT NULL,
    total BIGINT NOT NULL,
    PRIMARY KEY (scope, win)
);

CREATE INDEX rate_counters_by_window ON rate_counters (win);
