-- The whole schema on PostgreSQL: the same tables, columns and rules as
-- every SQLite migration (migrations/sqlite/0001..0006) together.
--
-- Times are BIGINT Unix milliseconds (UTC), as on SQLite, so that records
-- map the same way. Flags are BOOLEAN. Listings that SQLite returns in
-- rowid (insertion) order are ordered here by an explicit `seq` identity
-- column. Text that is sorted or compared as a range (emails, audit
-- actions, key ids of usage rows) uses the "C" collation, so that it sorts
-- bytewise as SQLite's BINARY collation does, whatever the database's
-- locale.

CREATE TABLE organizations (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                   TEXT PRIMARY KEY NOT NULL,
    organization_id      TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    email                TEXT COLLATE "C" NOT NULL,
    name                 TEXT NOT NULL,
    password_hash        TEXT NOT NULL,
    is_org_admin         BOOLEAN NOT NULL DEFAULT FALSE,
    created_at           BIGINT NOT NULL,
    -- A deactivated user cannot log in, has no sessions, and their keys were
    -- revoked when they were deactivated. Reactivation does not bring keys back.
    deactivated_at       BIGINT,
    -- Set for a user created (or reset) with a password someone else chose.
    must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
    CONSTRAINT users_email_key UNIQUE (email)
);
CREATE INDEX users_org_idx ON users (organization_id, email);

CREATE TABLE workspaces (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                    TEXT PRIMARY KEY NOT NULL,
    organization_id       TEXT NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    description           TEXT,
    created_at            BIGINT NOT NULL,
    rate_limit_per_second BIGINT,
    rate_limit_burst      BIGINT,
    CONSTRAINT workspaces_org_name_key UNIQUE (organization_id, name)
);
CREATE INDEX workspaces_org_seq_idx ON workspaces (organization_id, seq);

CREATE TABLE memberships (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE api_keys (
    seq                   BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                    TEXT PRIMARY KEY NOT NULL,
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id               TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    digest                TEXT NOT NULL,
    prefix                TEXT NOT NULL,
    suffix                TEXT NOT NULL,
    tenant_admin          BOOLEAN NOT NULL DEFAULT FALSE,
    restriction           TEXT,
    created_at            BIGINT NOT NULL,
    expires_at            BIGINT,
    revoked_at            BIGINT,
    replaced_by           TEXT,
    -- When and from where the key was last used; written in batches by the
    -- usage flusher, never on the request path.
    last_used_at          BIGINT,
    last_used_addr        TEXT,
    rate_limit_per_second BIGINT,
    rate_limit_burst      BIGINT,
    -- Why a key stopped working: `revoked`, `rotated`, `owner_removed`,
    -- `owner_deactivated`.
    revoked_reason        TEXT,
    CONSTRAINT api_keys_digest_key UNIQUE (digest)
);
-- Listing a workspace's keys newest first.
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id, seq);
-- Counting a user's live keys in a workspace (quotas) and finding a user's
-- keys (deactivation) without a scan.
CREATE INDEX api_keys_user_idx ON api_keys (user_id, workspace_id);

-- Append-only: the application never updates or deletes rows, and the
-- triggers below refuse it at the database level too (except inside a
-- deliberate archive window, see audit_archive_window).
CREATE TABLE audit_log (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id TEXT NOT NULL,
    workspace_id    TEXT,
    actor_user_id   TEXT,
    actor_key_id    TEXT,
    action          TEXT COLLATE "C" NOT NULL,
    target_type     TEXT NOT NULL,
    target_id       TEXT NOT NULL,
    details         TEXT NOT NULL DEFAULT '{}',
    client_addr     TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX audit_log_org_idx ON audit_log (organization_id, id);
CREATE INDEX audit_log_workspace_idx ON audit_log (organization_id, workspace_id, id);
CREATE INDEX audit_log_workspace_action_idx ON audit_log (organization_id, workspace_id, action, id);
CREATE INDEX audit_log_action_idx ON audit_log (organization_id, action, id);

-- The audit log stays append-only, except inside a deliberate archive:
-- that transaction opens this one-row window with the last id it archives,
-- deletes exactly those rows, and closes the window. Outside it (empty
-- table) every DELETE is refused, as every UPDATE always is.
CREATE TABLE audit_archive_window (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    last_id  BIGINT NOT NULL
);

CREATE FUNCTION audit_log_no_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'P0001';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_no_update();
-- TRUNCATE skips row triggers: refuse it too.
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_no_update();

CREATE FUNCTION audit_log_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.id > COALESCE((SELECT last_id FROM audit_archive_window WHERE id = 1), 0) THEN
        RAISE EXCEPTION 'audit_log is append-only; only `noxus audit-archive` removes old rows'
            USING ERRCODE = 'P0001';
    END IF;
    RETURN OLD;
END;
$$;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_no_delete();

CREATE TABLE workflows (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              TEXT PRIMARY KEY NOT NULL,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    -- JSON text, verbatim (TEXT, not JSONB: served as stored, and its byte
    -- count is the same as on SQLite).
    definition      TEXT NOT NULL,
    error_handler   TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- Pages of a workspace's workflows (of every type, or of one) in seq order.
CREATE INDEX workflows_workspace_page_idx ON workflows (workspace_id, seq);
CREATE INDEX workflows_workspace_kind_page_idx ON workflows (workspace_id, kind, seq);

CREATE TABLE workflow_versions (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id           TEXT PRIMARY KEY NOT NULL,
    workflow_id  TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    definition   TEXT NOT NULL,
    created_by   TEXT,
    created_at   BIGINT NOT NULL
);
-- Pages of a workflow's versions in saving (seq) order.
CREATE INDEX workflow_versions_page_idx ON workflow_versions (workflow_id, seq);

-- Dashboard sessions (only token digests).
CREATE TABLE sessions (
    token_digest  TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    -- Idle timeout: NULL means created_at.
    last_seen_at  BIGINT,
    -- Sudo mode: when the password was last entered in this session.
    reauth_at     BIGINT
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

-- Single-use form nonces.
CREATE TABLE form_nonces (
    nonce    TEXT PRIMARY KEY NOT NULL,
    used_at  BIGINT NOT NULL
);
CREATE INDEX form_nonces_used_idx ON form_nonces (used_at);

-- Per-key usage per hour.
CREATE TABLE key_usage_hourly (
    key_id        TEXT COLLATE "C" NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    workspace_id  TEXT NOT NULL,
    hour          BIGINT NOT NULL,   -- Unix time / 3600
    requests      BIGINT NOT NULL DEFAULT 0,
    ok            BIGINT NOT NULL DEFAULT 0,   -- 2xx
    client_errors BIGINT NOT NULL DEFAULT 0,   -- 4xx
    server_errors BIGINT NOT NULL DEFAULT 0,   -- 5xx
    unauthorized  BIGINT NOT NULL DEFAULT 0,   -- 401
    forbidden     BIGINT NOT NULL DEFAULT 0,   -- 403
    rate_limited  BIGINT NOT NULL DEFAULT 0,   -- 429
    PRIMARY KEY (key_id, hour)
);
CREATE INDEX key_usage_workspace_idx ON key_usage_hourly (workspace_id, hour);
CREATE INDEX key_usage_hour_idx ON key_usage_hourly (hour);

-- The addresses each key was used from: the flusher keeps the N most
-- recently seen per key (evicting in last-seen order, then insertion order).
CREATE TABLE key_addresses (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    key_id         TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    addr           TEXT NOT NULL,
    first_seen_at  BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL,
    PRIMARY KEY (key_id, addr)
);
CREATE INDEX key_addresses_key_seen_idx ON key_addresses (key_id, last_seen_at, seq);
CREATE INDEX key_addresses_seen_idx ON key_addresses (last_seen_at);

-- Platform settings: the pepper's fingerprint, the one-time setup token's digest.
CREATE TABLE settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);

-- Quotas: each workspace's number of workflows and the bytes of all its
-- stored definitions (workflows and their versions), kept exact by the
-- triggers below whatever writes or deletes them (cascades included).
CREATE TABLE workspace_totals (
    workspace_id     TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    workflows        BIGINT NOT NULL DEFAULT 0,
    definition_bytes BIGINT NOT NULL DEFAULT 0
);

CREATE FUNCTION workflows_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO workspace_totals (workspace_id, workflows, definition_bytes)
        VALUES (NEW.workspace_id, 1, octet_length(NEW.definition))
        ON CONFLICT (workspace_id) DO UPDATE SET
            workflows = workspace_totals.workflows + 1,
            definition_bytes = workspace_totals.definition_bytes + EXCLUDED.definition_bytes;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE workspace_totals
        SET definition_bytes = definition_bytes - octet_length(OLD.definition)
                                                + octet_length(NEW.definition)
        WHERE workspace_id = NEW.workspace_id;
        RETURN NEW;
    ELSE
        -- Before the delete, while the workflow's versions still exist:
        -- their cascaded deletes run after the workflow row is gone, when the
        -- version trigger no longer finds the workspace (nothing counts twice).
        UPDATE workspace_totals
        SET workflows = workflows - 1,
            definition_bytes = definition_bytes - octet_length(OLD.definition)
                - COALESCE((SELECT SUM(octet_length(definition)) FROM workflow_versions
                            WHERE workflow_id = OLD.id), 0)
        WHERE workspace_id = OLD.workspace_id;
        RETURN OLD;
    END IF;
END;
$$;
CREATE TRIGGER workflows_totals_insert AFTER INSERT ON workflows
FOR EACH ROW EXECUTE FUNCTION workflows_totals();
CREATE TRIGGER workflows_totals_update AFTER UPDATE OF definition ON workflows
FOR EACH ROW EXECUTE FUNCTION workflows_totals();
CREATE TRIGGER workflows_totals_delete BEFORE DELETE ON workflows
FOR EACH ROW EXECUTE FUNCTION workflows_totals();

CREATE FUNCTION workflow_versions_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE workspace_totals
        SET definition_bytes = definition_bytes + octet_length(NEW.definition)
        WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = NEW.workflow_id);
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE workspace_totals
        SET definition_bytes = definition_bytes - octet_length(OLD.definition)
                                                + octet_length(NEW.definition)
        WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = NEW.workflow_id);
        RETURN NEW;
    ELSE
        UPDATE workspace_totals
        SET definition_bytes = definition_bytes - octet_length(OLD.definition)
        WHERE workspace_id = (SELECT workspace_id FROM workflows WHERE id = OLD.workflow_id);
        RETURN OLD;
    END IF;
END;
$$;
CREATE TRIGGER workflow_versions_totals_insert AFTER INSERT ON workflow_versions
FOR EACH ROW EXECUTE FUNCTION workflow_versions_totals();
CREATE TRIGGER workflow_versions_totals_update AFTER UPDATE OF definition ON workflow_versions
FOR EACH ROW EXECUTE FUNCTION workflow_versions_totals();
CREATE TRIGGER workflow_versions_totals_delete AFTER DELETE ON workflow_versions
FOR EACH ROW EXECUTE FUNCTION workflow_versions_totals();
