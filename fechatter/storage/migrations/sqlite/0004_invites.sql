-- Invitations (issue 14, SPEC §7). A link's token is never stored: only its SHA-256 (the
-- token is 32 random bytes, so a plain hash cannot be reversed by guessing). ``uses`` only
-- grows, by a conditional UPDATE (uses < max_uses) in the accepting transaction; a revoked
-- invite is deleted. ``email`` (lower-cased) binds the invite to one account.
CREATE TABLE workspace_invites (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL,
    email        TEXT,
    role         TEXT    NOT NULL,
    uses         INTEGER NOT NULL DEFAULT 0,
    max_uses     INTEGER NOT NULL,
    expires_at   TEXT    NOT NULL,
    created_by   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   TEXT    NOT NULL
);
CREATE UNIQUE INDEX workspace_invites_token ON workspace_invites (token_hash);
CREATE INDEX workspace_invites_workspace ON workspace_invites (workspace_id, id);
