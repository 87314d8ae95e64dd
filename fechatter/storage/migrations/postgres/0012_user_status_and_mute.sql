-- User status and per-chat mute (issue 14 part B, SPEC §7, docs/api.md "User status,
-- profiles and mute"). One row per user who chose ``away`` or ``busy``; no row = automatic
-- presence. ``expires_at`` is epoch seconds (NULL: until cleared); a node's expiry timer
-- deletes a lapsed row (DELETE … RETURNING: of several nodes one announces it).
CREATE TABLE user_status (
    user_id    bigint           PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    status     text             NOT NULL CHECK (status IN ('away', 'busy')),
    text       text,
    expires_at double precision
);
CREATE INDEX user_status_expiry ON user_status (expires_at) WHERE expires_at IS NOT NULL;

-- The member's own mute of the chat (synced across their devices); gone when they leave.
ALTER TABLE chat_members ADD COLUMN muted boolean NOT NULL DEFAULT false;
