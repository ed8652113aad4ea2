-- Dashboard sessions and single-use form nonces.

CREATE TABLE sessions (
    token_digest  TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- A form that shows a secret (create / rotate a key) carries a nonce that
-- can be used once, so that a resubmission never creates or shows another key.
CREATE TABLE form_nonces (
    nonce    TEXT PRIMARY KEY NOT NULL,
    used_at  INTEGER NOT NULL
);

-- When and from where each key was last used; written in batches (at most
-- one second behind) by the usage flusher, never on the request path.
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_addr TEXT;
