-- Workflow runs: the run (a snapshot of the definition it runs), what each
-- node received and produced, and the numbered events an event stream
-- replays from any point; full-text search over inputs and outputs.

CREATE TABLE runs (
    seq                 BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                  TEXT PRIMARY KEY NOT NULL,
    group_id            TEXT NOT NULL,
    organization_id     TEXT NOT NULL,
    workspace_id        TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflow_id         TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    workflow_version_id TEXT,
    -- JSON text, as stored (see workflows.definition).
    definition          TEXT NOT NULL,
    input               TEXT NOT NULL,
    status              TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'stopped')),
    progress            BIGINT NOT NULL DEFAULT 0,
    progress_details    TEXT,
    output              TEXT,
    error               TEXT,
    callback_url        TEXT,
    started_by_user     TEXT NOT NULL,
    started_by_key      TEXT,
    created_at          BIGINT NOT NULL,
    started_at          BIGINT,
    finished_at         BIGINT,
    attempts            BIGINT NOT NULL DEFAULT 0,
    claimed_by          TEXT,
    lease_until         BIGINT,
    -- The seq of the run's last event: appending bumps it (the row lock
    -- orders concurrent appends), so that events are numbered 1, 2, ...
    last_event_seq      BIGINT NOT NULL DEFAULT 0,
    -- The strings and numbers of the input and output, for search.
    search              tsvector GENERATED ALWAYS AS (
        jsonb_to_tsvector('simple'::regconfig, input::jsonb, '["string", "numeric"]')
        || jsonb_to_tsvector('simple'::regconfig, COALESCE(output, 'null')::jsonb,
                             '["string", "numeric"]')
    ) STORED
);
-- A workflow's runs newest first; also the cascade from a deleted workflow.
CREATE INDEX runs_workflow_idx ON runs (workflow_id, seq);
-- The quota of queued and running runs per workspace; also the cascade
-- from a deleted workspace.
CREATE INDEX runs_workspace_status_idx ON runs (workspace_id, status);
-- What workers claim, oldest first: only runs that have not ended.
CREATE INDEX runs_claim_idx ON runs (seq) WHERE status IN ('queued', 'running');
CREATE INDEX runs_search_idx ON runs USING GIN (search);

CREATE TABLE run_node_io (
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    node_id    TEXT NOT NULL,
    iteration  BIGINT NOT NULL DEFAULT 0,
    input      TEXT NOT NULL,
    output     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration)
);

CREATE TABLE run_events (
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
