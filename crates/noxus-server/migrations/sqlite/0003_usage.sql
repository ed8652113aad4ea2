-- Per-key usage per hour, the addresses each key was used from, and
-- rate-limit settings per workspace (default) and per key (override).

CREATE TABLE key_usage_hourly (
    key_id        TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL,
    hour          INTEGER NOT NULL,   -- Unix time / 3600
    requests      INTEGER NOT NULL DEFAULT 0,
    ok            INTEGER NOT NULL DEFAULT 0,   -- 2xx
    client_errors INTEGER NOT NULL DEFAULT 0,   -- 4xx
    server_errors INTEGER NOT NULL DEFAULT 0,   -- 5xx
    unauthorized  INTEGER NOT NULL DEFAULT 0,   -- 401 (revoked, expired, owner removed)
    forbidden     INTEGER NOT NULL DEFAULT 0,   -- 403
    rate_limited  INTEGER NOT NULL DEFAULT 0,   -- 429
    PRIMARY KEY (key_id, hour)
);
CREATE INDEX key_usage_workspace_idx ON key_usage_hourly (workspace_id, hour);

CREATE TABLE key_addresses (
    key_id         TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    addr           TEXT NOT NULL,
    first_seen_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL,
    PRIMARY KEY (key_id, addr)
);

ALTER TABLE workspaces ADD COLUMN rate_limit_per_second INTEGER;
ALTER TABLE workspaces ADD COLUMN rate_limit_burst INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_second INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_limit_burst INTEGER;
