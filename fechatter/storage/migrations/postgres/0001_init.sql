-- Fechatter schema, version 1 (PostgreSQL). Same intent as the SQLite schema.
--
-- Case-insensitive uniqueness uses *_key columns holding the lower-cased name, filled by the
-- backend with Python's str.lower, so both backends compare names the same way. Timestamps
-- are timestamptz (microsecond precision, exactly what the API's RFC 3339 strings carry).
-- Columns that reference messages (reply_to, last_message_id, last_read_message_id) carry no
-- foreign key, as in SQLite: those rows go with their chat anyway.
--
-- chats.last_seq is the chat's last message seq. A writer takes the chat row with
-- SELECT ... FOR UPDATE, numbers its batch from last_seq and stores the new value in the same
-- transaction: writers of one chat are serialised across processes and seq stays gapless;
-- UNIQUE (chat_id, seq) is the backstop.

CREATE TABLE users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fullname      text        NOT NULL,
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    avatar        text,
    status        text        NOT NULL DEFAULT 'Active',
    created_at    timestamptz NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE workspaces (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    name_key    text        NOT NULL,
    description text,
    owner_id    bigint      NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    CONSTRAINT workspaces_name_key UNIQUE (name_key)
);

CREATE TABLE workspace_members (
    workspace_id bigint      NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text        NOT NULL,
    joined_at    timestamptz NOT NULL,
    -- insertion order, the tie-break of "oldest member first" (SQLite's rowid)
    ord          bigint      GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT workspace_members_pkey PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id, workspace_id);

CREATE TABLE chats (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id     bigint      NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    type             text        NOT NULL,
    name             text,
    name_key         text,
    pair_key         text,  -- Single chats: 'lo:hi' user ids, so a pair has one direct chat
    description      text,
    owner_id         bigint      NOT NULL REFERENCES users (id),
    last_message_id  bigint,
    last_seq         bigint      NOT NULL DEFAULT 0,
    last_activity_at timestamptz,
    member_count     integer     NOT NULL DEFAULT 0,  -- kept by the triggers below
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX chats_workspace ON chats (workspace_id, type);
CREATE UNIQUE INDEX chats_channel_name ON chats (workspace_id, name_key)
    WHERE name_key IS NOT NULL;
CREATE UNIQUE INDEX chats_single_pair ON chats (workspace_id, pair_key)
    WHERE pair_key IS NOT NULL;

CREATE TABLE chat_members (
    chat_id              bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id              bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role                 text        NOT NULL,
    joined_at            timestamptz NOT NULL,
    last_read_seq        bigint      NOT NULL DEFAULT 0,
    last_read_message_id bigint,
    ord                  bigint      GENERATED ALWAYS AS IDENTITY,
    CONSTRAINT chat_members_pkey PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id, chat_id);

CREATE FUNCTION chat_members_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE chats SET member_count = member_count + 1 WHERE id = NEW.chat_id;
    ELSE
        UPDATE chats SET member_count = member_count - 1 WHERE id = OLD.chat_id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER chat_members_count AFTER INSERT OR DELETE ON chat_members
    FOR EACH ROW EXECUTE FUNCTION chat_members_count();

CREATE TABLE messages (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chat_id    bigint      NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL,
    sender_id  bigint      NOT NULL REFERENCES users (id),
    content    text        NOT NULL,
    files      text[]      NOT NULL DEFAULT '{}',
    reply_to   bigint,
    client_id  text,
    created_at timestamptz NOT NULL,
    edited_at  timestamptz,
    CONSTRAINT messages_chat_seq UNIQUE (chat_id, seq)
);
CREATE INDEX messages_chat_id ON messages (chat_id, id);
-- Idempotent sends: one message per (chat, sender, client_id) when a client_id is given.
CREATE UNIQUE INDEX messages_client_id ON messages (chat_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash text        PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  text        NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
