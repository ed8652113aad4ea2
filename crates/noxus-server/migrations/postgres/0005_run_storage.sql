-- What each run holds, in bytes: its definition, input, output, error and
-- every node's recorded input and output. Set when the run is created and
-- again when it ends, so that the runs of a workspace are bounded in bytes
-- (--max-run-bytes-per-workspace) with one index sum; finished runs older
-- than --run-retention-days are purged oldest first.
ALTER TABLE runs ADD COLUMN stored_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE runs SET stored_bytes =
    octet_length(definition::text) + octet_length(input::text)
    + COALESCE(octet_length(output::text), 0) + COALESCE(octet_length(error), 0)
    + COALESCE((SELECT SUM(octet_length(io.input::text) + octet_length(io.output::text))
                FROM run_node_io io WHERE io.run_id = runs.id), 0);
CREATE INDEX runs_workspace_bytes_idx ON runs (workspace_id) INCLUDE (stored_bytes);
CREATE INDEX runs_finished_idx ON runs (finished_at) WHERE finished_at IS NOT NULL;
