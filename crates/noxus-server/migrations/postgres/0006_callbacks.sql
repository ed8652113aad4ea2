-- Run callbacks: one delivery per run that has a callback_url, queued in
-- the transaction that ends the run and claimed by senders with a lease
-- (FOR UPDATE SKIP LOCKED); and the generation of each workspace's signing
-- secret (the secret is derived from a server secret and the generation,
-- never stored).

CREATE TABLE run_callbacks (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    -- Sent as Noxus-Delivery: the same on every attempt.
    id               TEXT PRIMARY KEY NOT NULL,
    run_id           TEXT NOT NULL UNIQUE REFERENCES runs(id) ON DELETE CASCADE,
    workspace_id     TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url              TEXT NOT NULL,
    event            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_attempt_at  BIGINT,
    last_status_code BIGINT,
    last_error       TEXT,
    delivered_at     BIGINT,
    created_at       BIGINT NOT NULL,
    claimed_by       TEXT,
    lease_until      BIGINT
);
-- What senders claim: pending deliveries, soonest due first.
CREATE INDEX run_callbacks_due_idx ON run_callbacks (next_attempt_at, seq)
    WHERE status = 'pending';
-- The quota of waiting callbacks per workspace; also the cascade from a
-- deleted workspace.
CREATE INDEX run_callbacks_workspace_idx ON run_callbacks (workspace_id, status);

CREATE TABLE workspace_callback_secrets (
    workspace_id         TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- No row: generation 1.
    generation           BIGINT NOT NULL,
    -- The previous generation also signs until then (a rotation's grace).
    previous_valid_until BIGINT,
    rotated_at           BIGINT NOT NULL
);
