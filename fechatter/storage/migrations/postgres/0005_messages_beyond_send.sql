-- Messages beyond send (issue 11, SPEC §6): edit, tombstone delete, threads, mentions,
-- reactions. Same shape as SQLite's 0003_messages_beyond_send.sql (see its comments);
-- mentions is a bigint[] here.
ALTER TABLE messages ADD COLUMN deleted boolean NOT NULL DEFAULT false;
ALTER TABLE messages ADD COLUMN thread_id bigint;
ALTER TABLE messages ADD COLUMN reply_count integer NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at timestamptz;
ALTER TABLE messages ADD COLUMN mentions bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE messages ADD COLUMN mentions_channel boolean NOT NULL DEFAULT false;
CREATE INDEX messages_thread ON messages (chat_id, thread_id, id) WHERE thread_id IS NOT NULL;
CREATE INDEX messages_top_level ON messages (chat_id, id) WHERE thread_id IS NULL;

CREATE TABLE message_reactions (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id bigint      NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    emoji      text        NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT message_reactions_one UNIQUE (message_id, emoji, user_id)
);
