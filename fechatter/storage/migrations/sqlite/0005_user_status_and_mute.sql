-- User status and per-chat mute (issue 14 part B, SPEC §7, docs/api.md "User status,
-- profiles and mute"). One row per user who chose ``away`` or ``busy``; no row = automatic
-- presence. ``expires_at`` is epoch seconds (NULL: until cleared); the expiry timer deletes
-- a lapsed row and announces it.
CREATE TABLE user_status (
    user_id    INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    status     TEXT    NOT NULL CHECK (status IN ('away', 'busy')),
    text       TEXT,
    expires_at REAL
);
CREATE INDEX user_status_expiry ON user_status (expires_at) WHERE expires_at IS NOT NULL;

-- The member's own mute of the chat (synced across their devices); gone when they leave.
ALTER TABLE chat_members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
