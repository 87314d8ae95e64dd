-- Security versions (issue 9): every access token carries the version it was issued under;
-- raising a user's version (logout everywhere, password change, suspension) voids them all.
-- security_changes is the log every process follows to learn of raises made elsewhere.
ALTER TABLE users ADD COLUMN security_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE security_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL
);
CREATE INDEX security_changes_created_at ON security_changes (created_at);
