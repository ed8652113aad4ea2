-- Security webhooks: a workspace may name one URL to be told, signed like
-- its run callbacks, when one of its keys is revoked because someone
-- reported it leaked. Those events go through the queue of run callbacks,
-- which becomes `callback_deliveries`: a delivery is of a `kind`, `run`
-- (the run's current state is posted) or `security` (the event's body,
-- fixed when it is queued, is posted to the workspace's security webhook).

CREATE TABLE workspace_security_webhooks (
    workspace_id TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    url          TEXT NOT NULL,
    updated_at   BIGINT NOT NULL,
    updated_by   TEXT
);

ALTER TABLE run_callbacks RENAME TO callback_deliveries;
ALTER INDEX run_callbacks_due_idx RENAME TO callback_deliveries_due_idx;
ALTER INDEX run_callbacks_workspace_idx RENAME TO callback_deliveries_workspace_idx;
ALTER TABLE callback_deliveries ALTER COLUMN run_id DROP NOT NULL;
ALTER TABLE callback_deliveries
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'run' CHECK (kind IN ('run', 'security'));
ALTER TABLE callback_deliveries ALTER COLUMN kind DROP DEFAULT;
-- The key a security event is about: the event goes with the key (revoked
-- keys are forgotten after the usage retention).
ALTER TABLE callback_deliveries
    ADD COLUMN key_id TEXT REFERENCES api_keys(id) ON DELETE CASCADE;
-- A security event's JSON body, as it is sent on every attempt.
ALTER TABLE callback_deliveries ADD COLUMN payload TEXT;
ALTER TABLE callback_deliveries ADD CONSTRAINT callback_deliveries_run_check
    CHECK ((kind = 'run') = (run_id IS NOT NULL));
ALTER TABLE callback_deliveries ADD CONSTRAINT callback_deliveries_security_check
    CHECK ((kind = 'security') = (payload IS NOT NULL AND key_id IS NOT NULL));
-- The cascade from a forgotten key.
CREATE INDEX callback_deliveries_key_idx ON callback_deliveries (key_id);
