-- Security webhooks: a workspace may name one URL to be told, signed like
-- its run callbacks, when one of its keys is revoked because someone
-- reported it leaked. Those events go through the queue of run callbacks,
-- which becomes `callback_deliveries`: a delivery is of a `kind`, `run`
-- (the run's current state is posted) or `security` (the event's body,
-- fixed when it is queued, is posted to the workspace's security webhook).

CREATE TABLE workspace_security_webhooks (
    workspace_id TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    updated_by   TEXT
) WITHOUT ROWID;

-- SQLite cannot drop a NOT NULL: the table is rebuilt (nothing refers to it).
CREATE TABLE callback_deliveries (
    -- Sent as Noxus-Delivery: the same on every attempt (and, for a
    -- security event, the event's id).
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('run', 'security')),
    run_id           TEXT UNIQUE REFERENCES runs(id) ON DELETE CASCADE,
    -- The key a security event is about: the event goes with the key
    -- (revoked keys are forgotten after the usage retention).
    key_id           TEXT REFERENCES api_keys(id) ON DELETE CASCADE,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    event            TEXT NOT NULL,
    -- A security event's JSON body, as it is sent on every attempt.
    payload          TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_attempt_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    delivered_at     INTEGER,
    created_at       INTEGER NOT NULL,
    claimed_by       TEXT,
    lease_until      INTEGER,
    CHECK ((kind = 'run') = (run_id IS NOT NULL)),
    CHECK ((kind = 'security') = (payload IS NOT NULL AND key_id IS NOT NULL))
);
INSERT INTO callback_deliveries (id, kind, run_id, workspace_id, url, event, status, attempts,
    next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at, created_at,
    claimed_by, lease_until)
SELECT id, 'run', run_id, workspace_id, url, event, status, attempts, next_attempt_at,
    last_attempt_at, last_status_code, last_error, delivered_at, created_at, claimed_by,
    lease_until
FROM run_callbacks ORDER BY rowid;
DROP TABLE run_callbacks;
-- What senders claim: pending deliveries, soonest due first. Only pending
-- ones are in it.
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- The quota of waiting callbacks per workspace, the per-workspace claims,
-- a workspace's recent security events; also the cascade from a deleted
-- workspace.
CREATE INDEX callback_deliveries_workspace_idx ON callback_deliveries (workspace_id, status);
-- The cascade from a forgotten key.
CREATE INDEX callback_deliveries_key_idx ON callback_deliveries (key_id);
