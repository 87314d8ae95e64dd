-- Admin command line (issue 17): the audit log of admin actions and password-reset links.
--
-- admin_audit is append-only: each row is written in the transaction of the action it
-- records (fechatter.domain.admin), so an action and its audit row commit together or not
-- at all. actor is 'cli:<os user>'; target names what was acted on (user:<email>,
-- workspace:<id>); details is a JSON object, kept as text (the same in both dialects).
CREATE TABLE admin_audit (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    target  text        NOT NULL,
    details text        NOT NULL
);
-- A reset link's token is never stored: only its SHA-256 (32 random bytes, as invites).
-- Single use: used_at is set by a conditional UPDATE in the transaction that sets the password.
CREATE TABLE password_resets (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash text        NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL,
    CONSTRAINT password_resets_token UNIQUE (token_hash)
);
CREATE INDEX password_resets_user ON password_resets (user_id);
