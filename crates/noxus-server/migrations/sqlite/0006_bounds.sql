-- Bounds on what one key or one workspace can make the server keep, the
-- indexes the usage views' audit queries need, and a deliberate,
-- audited way out of the append-only audit log.

-- Addresses of a key: the flusher keeps the N most recently seen per key
-- (evicting in last-seen order), the hourly prune drops those not seen
-- within the usage retention.
CREATE INDEX key_addresses_key_seen_idx ON key_addresses (key_id, last_seen_at);
CREATE INDEX key_addresses_seen_idx ON key_addresses (last_seen_at);

-- Quotas: each workspace's number of workflows and the bytes of all its
-- stored definitions (workflows and their versions), kept exact by the
-- triggers below whatever writes or deletes them (cascades included), so
-- that a write checks its quota with one row read inside its transaction.
CREATE TABLE workspace_totals (
    workspace_id     TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflows        INTEGER NOT NULL DEFAULT 0,
    definition_bytes INTEGER NOT NULL DEFAULT 0
);
INSERT INTO workspace_totals (workspace_id, workflows, definition_bytes)
SELECT w.id,
       (SELECT COUNT(*) FROM workflows f WHERE f.workspace_id = w.id),
       COALESCE((SELECT SUM(octet_length(f.definition)) FROM workflows f
                 WHERE f.workspace_id = w.id), 0)
     + COALESCE((SELECT SUM(octet_length(v.definition)) FROM workflow_versions v
                 JOIN workflows f ON f.id = v.workflow_id WHERE f.workspace_id = w.id), 0)
FROM workspaces w;

CREATE TRIGGER workflows_totals_insert AFTER INSERT ON workflows
BEGIN
    INSERT INTO workspace_totals (workspace_id, workflows, definition_bytes)
    VALUES (NEW.workspace_id, 1, octet_length(NEW.definition))
    ON CONFLICT (workspace_id) DO UPDATE SET
        workflows = workflows + 1,
        definition_bytes = definition_bytes + excluded.definition_bytes;
END;
CREATE TRIGGER workflows_totals_update AFTER UPDATE OF definition ON workflows
BEGIN
    UPDATE workspace_totals
    SET definition_bytes = definition_bytes - octet_length(OLD.definition) + octet_length(NEW.definition)
    WHERE workspace_id = NEW.workspace_id;
END;
-- Before the delete, while the workflow's versions still exist: their
-- cascaded deletes run after the workflow row is gone, when the version
-- trigger below no longer finds the workspace (so nothing counts twice).
CREATE TRIGGER workflows_totals_delete BEFORE DELETE ON workflows
BEGIN
    UPDATE workspace_totals
    SET workflows = workflows - 1,
        definition_bytes = definition_bytes - octet_length(OLD.definition)
            - COALESCE((SELECT SUM(octet_length(definition)) FROM workflow_versions
                        WHERE workflow_id = OLD.id), 0)
    WHERE workspace_id = OLD.workspace_id;
END;
CREATE TRIGGER workflow_versions_totals_insert AFTER INSERT ON workflow_versions
BEGIN
    UPDATE workspace_totals
    SET definition_bytes = definition_bytes + octet_length(NEW.definition)
    WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = NEW.workflow_id);
END;
CREATE TRIGGER workflow_versions_totals_update AFTER UPDATE OF definition ON workflow_versions
BEGIN
    UPDATE workspace_totals
    SET definition_bytes = definition_bytes - octet_length(OLD.definition) + octet_length(NEW.definition)
    WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = NEW.workflow_id);
END;
CREATE TRIGGER workflow_versions_totals_delete AFTER DELETE ON workflow_versions
BEGIN
    UPDATE workspace_totals
    SET definition_bytes = definition_bytes - octet_length(OLD.definition)
    WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = OLD.workflow_id);
END;

-- Pages of a workflow's versions come in rowid order, straight from this
-- index (which ends with the rowid); it replaces (workflow_id, created_at),
-- whose order no query used.
DROP INDEX workflow_versions_workflow_idx;
CREATE INDEX workflow_versions_page_idx ON workflow_versions (workflow_id);

-- The audit queries of the API, the Audit tab and the usage flags
-- (a workspace's rows, newest first, optionally of actions with a prefix).
CREATE INDEX audit_log_workspace_idx ON audit_log (organization_id, workspace_id, id);
CREATE INDEX audit_log_workspace_action_idx ON audit_log (organization_id, workspace_id, action, id);
CREATE INDEX audit_log_action_idx ON audit_log (organization_id, action, id);

-- The audit log stays append-only, except inside a deliberate archive
-- (`noxus audit-archive`): that transaction opens this one-row window with
-- the last id it archives, deletes exactly the rows it wrote to its file,
-- closes the window and appends an `audit.archive` row. Outside it (empty
-- table) every DELETE is refused, as every UPDATE always is.
CREATE TABLE audit_archive_window (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_id  INTEGER NOT NULL
);
DROP TRIGGER audit_log_no_delete;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
WHEN OLD.id > COALESCE((SELECT last_id FROM audit_archive_window WHERE id = 1), 0)
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only; only `noxus audit-archive` removes old rows');
END;
