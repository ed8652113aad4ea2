-- Keys revoked because someone reported them leaked (POST /v1/keys/leaks),
-- with where they were found: the banner of the workspace's API Keys page
-- (until dismissed) and the usage flag read them. One row per key (a key
-- is revoked once); `url` and `source` are the reporter's untrusted text,
-- bounded by the API and only ever shown as text. Rows go with their key
-- (revoked keys are forgotten after the usage retention) and so with its
-- workspace.
CREATE TABLE key_leaks (
    key_id        TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL,
    url           TEXT,
    source        TEXT,
    reported_at   BIGINT NOT NULL,
    dismissed_at  BIGINT,
    dismissed_by  TEXT
);
CREATE INDEX key_leaks_workspace_idx ON key_leaks (workspace_id, reported_at);
