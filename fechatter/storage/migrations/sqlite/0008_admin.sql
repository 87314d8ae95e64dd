-- Admin command line (issue 17): the audit log of admin actions and password-reset links.
--
-- admin_audit is append-only: each row is written in the transaction of the action it
-- records (fechatter.domain.admin), so an action and its audit row commit together or not
-- at all. actor is 'cli:<os user>'; target names what was acted on (user:<email>,
-- workspace:<id>); details is a JSON object (text).
CREATE TABLE admin_audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    details TEXT    NOT NULL
);
-- A reset link's token is never stored: only its SHA-256 (32 random bytes, as invites).
-- Single use: used_at is set by a conditional UPDATE in the transaction that sets the password.
CREATE TABLE password_resets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT,
    created_at TEXT    NOT NULL
);
CREATE UNIQUE INDEX password_resets_token ON password_resets (token_hash);
CREATE INDEX password_resets_user ON password_resets (user_id);
