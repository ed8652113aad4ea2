-- Workflow runs: the run (a snapshot of the definition it runs), what each
-- node received and produced, and the numbered events an event stream
-- replays from any point; full-text search over inputs and outputs.

CREATE TABLE runs (
    id                  TEXT PRIMARY KEY NOT NULL,
    group_id            TEXT NOT NULL,
    organization_id     TEXT NOT NULL,
    workspace_id        TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflow_id         TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    workflow_version_id TEXT,
    definition          TEXT NOT NULL,
    input               TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'stopped')),
    progress            INTEGER NOT NULL DEFAULT 0,
    progress_details    TEXT,
    output              TEXT,
    error               TEXT,
    callback_url        TEXT,
    started_by_user     TEXT NOT NULL,
    started_by_key      TEXT,
    created_at          INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    claimed_by          TEXT,
    lease_until         INTEGER,
    -- The seq of the run's last event: appending bumps it, so that events
    -- are numbered 1, 2, ... without gaps or duplicates.
    last_event_seq      INTEGER NOT NULL DEFAULT 0
);
-- A workflow's runs newest first (rowid order, which the index ends with);
-- also the cascade from a deleted workflow.
CREATE INDEX runs_workflow_idx ON runs (workflow_id);
-- The quota of queued and running runs per workspace; also the cascade
-- from a deleted workspace.
CREATE INDEX runs_workspace_status_idx ON runs (workspace_id, status);
-- What workers claim: queued runs oldest first, and running runs whose
-- lease ran out. Only runs that have not ended are in it.
CREATE INDEX runs_claim_idx ON runs (status, lease_until)
    WHERE status IN ('queued', 'running');

CREATE TABLE run_node_io (
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    node_id    TEXT NOT NULL,
    iteration  INTEGER NOT NULL DEFAULT 0,
    input      TEXT NOT NULL,
    output     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration)
) WITHOUT ROWID;

CREATE TABLE run_events (
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

-- Search: one row per run (rowid = the run's rowid) holding the strings
-- and numbers of its input and output, kept by the triggers below whatever
-- writes or deletes runs (cascades included). Diacritics are kept, as
-- PostgreSQL's 'simple' configuration keeps them.
CREATE VIRTUAL TABLE run_search USING fts5 (
    body,
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TRIGGER runs_search_insert AFTER INSERT ON runs
BEGIN
    INSERT INTO run_search (rowid, body)
    SELECT NEW.rowid, COALESCE(group_concat(value, ' '), '')
    FROM json_tree(NEW.input) WHERE type IN ('text', 'integer', 'real');
END;
CREATE TRIGGER runs_search_update AFTER UPDATE OF input, output ON runs
BEGIN
    DELETE FROM run_search WHERE rowid = OLD.rowid;
    INSERT INTO run_search (rowid, body)
    SELECT NEW.rowid, COALESCE(group_concat(value, ' '), '')
    FROM (SELECT value FROM json_tree(NEW.input) WHERE type IN ('text', 'integer', 'real')
          UNION ALL
          SELECT value FROM json_tree(COALESCE(NEW.output, 'null'))
          WHERE type IN ('text', 'integer', 'real'));
END;
CREATE TRIGGER runs_search_delete AFTER DELETE ON runs
BEGIN
    DELETE FROM run_search WHERE rowid = OLD.rowid;
END;
