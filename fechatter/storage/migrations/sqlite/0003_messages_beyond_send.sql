-- Messages beyond send (issue 11, SPEC §6): edit, tombstone delete, threads, mentions,
-- reactions.
--
-- A deleted message stays as a tombstone (deleted = 1, content '', files '[]', no reactions,
-- no mentions) so seq stays gapless. thread_id names the root of the thread a reply is in;
-- reply_count / last_reply_at are kept on the root by the writer (non-deleted replies only).
-- mentions is a JSON array of user ids (members of the chat when written); mention_count is
-- counted over a viewer's unread messages like unread_count, so it needs no table of its own.
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN thread_id INTEGER;
ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at TEXT;
ALTER TABLE messages ADD COLUMN mentions TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN mentions_channel INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_thread ON messages (chat_id, thread_id, id) WHERE thread_id IS NOT NULL;
CREATE INDEX messages_top_level ON messages (chat_id, id) WHERE thread_id IS NULL;

-- One row per (message, emoji, user). id orders reactions: an emoji's position on a message
-- is that of its first row, its user_ids are listed by id.
CREATE TABLE message_reactions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    UNIQUE (message_id, emoji, user_id)
);
