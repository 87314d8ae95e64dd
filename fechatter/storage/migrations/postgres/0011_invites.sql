-- Invitations (issue 14, SPEC §7). A link's token is never stored: only its SHA-256 (the
-- token is 32 random bytes, so a plain hash cannot be reversed by guessing). ``uses`` only
-- grows, by a conditional UPDATE (uses < max_uses) in the accepting transaction, so two
-- concurrent accepts of a single-use invite cannot both succeed (the second re-checks the
-- row after the first commits, READ COMMITTED); a revoked invite is deleted. ``email``
-- (lower-cased) binds the invite to one account.
CREATE TABLE workspace_invites (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint      NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash   text        NOT NULL,
    email        text,
    role         text        NOT NULL,
    uses         integer     NOT NULL DEFAULT 0,
    max_uses     integer     NOT NULL,
    expires_at   timestamptz NOT NULL,
    created_by   bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    CONSTRAINT workspace_invites_token UNIQUE (token_hash)
);
CREATE INDEX workspace_invites_workspace ON workspace_invites (workspace_id, id);
