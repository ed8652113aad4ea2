-- People leave, sessions end, keys follow their owners (security review).

-- A deactivated user cannot log in, has no sessions, and their keys were
-- revoked when they were deactivated. Reactivation does not bring keys back.
ALTER TABLE users ADD COLUMN deactivated_at INTEGER;
-- Set for a user created (or reset) with a password someone else chose:
-- the first login must change it before anything else.
ALTER TABLE users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;

-- Idle timeout: a session unused for 30 minutes ends (NULL: created_at).
ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER;
-- Sudo mode: when the password was last entered in this session.
ALTER TABLE sessions ADD COLUMN reauth_at INTEGER;
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
CREATE INDEX form_nonces_used_idx ON form_nonces (used_at);

-- Why a key stopped working: `revoked` (by someone), `rotated` (rotation
-- without grace), `owner_removed` (its owner left the workspace),
-- `owner_deactivated` (its owner was deactivated).
ALTER TABLE api_keys ADD COLUMN revoked_reason TEXT;
-- Counting a user's live keys in a workspace (quotas) and finding a user's
-- keys (deactivation) without a scan.
CREATE INDEX api_keys_user_idx ON api_keys (user_id, workspace_id);

-- Platform settings: the pepper's fingerprint, the one-time setup token's digest.
CREATE TABLE settings (
    name   TEXT PRIMARY KEY NOT NULL,
    value  TEXT NOT NULL
);
