-- Fechatter schema, version 1 (SQLite).
--
-- Case-insensitive uniqueness uses *_key columns holding the lower-cased name, filled by the
-- backend, so every backend compares names the same way (Python's str.lower, not SQLite's
-- ASCII-only lower()). Columns that reference messages (reply_to, last_message_id,
-- last_read_message_id) carry no foreign key on purpose: SQLite would scan the referencing
-- table once per deleted message when a chat goes, and those rows go with the chat anyway.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    fullname      TEXT    NOT NULL,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    avatar        TEXT,
    status        TEXT    NOT NULL DEFAULT 'Active',
    created_at    TEXT    NOT NULL
);

CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    name_key    TEXT    NOT NULL,
    description TEXT,
    owner_id    INTEGER NOT NULL REFERENCES users (id),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX workspaces_name_key ON workspaces (name_key);

CREATE TABLE workspace_members (
    workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         TEXT    NOT NULL,
    joined_at    TEXT    NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user ON workspace_members (user_id, workspace_id);

CREATE TABLE chats (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id     INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    type             TEXT    NOT NULL,
    name             TEXT,
    name_key         TEXT,
    pair_key         TEXT,  -- Single chats: 'lo:hi' user ids, so a pair has one direct chat
    description      TEXT,
    owner_id         INTEGER NOT NULL REFERENCES users (id),
    last_message_id  INTEGER,
    last_activity_at TEXT,
    member_count     INTEGER NOT NULL DEFAULT 0,  -- kept by the triggers below
    created_at       TEXT    NOT NULL,
    updated_at       TEXT    NOT NULL
);
CREATE INDEX chats_workspace ON chats (workspace_id, type);
CREATE UNIQUE INDEX chats_channel_name ON chats (workspace_id, name_key)
    WHERE name_key IS NOT NULL;
CREATE UNIQUE INDEX chats_single_pair ON chats (workspace_id, pair_key)
    WHERE pair_key IS NOT NULL;

CREATE TABLE chat_members (
    chat_id              INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    user_id              INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role                 TEXT    NOT NULL,
    joined_at            TEXT    NOT NULL,
    last_read_seq        INTEGER NOT NULL DEFAULT 0,
    last_read_message_id INTEGER,
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user ON chat_members (user_id, chat_id);

CREATE TRIGGER chat_members_count_insert AFTER INSERT ON chat_members BEGIN
    UPDATE chats SET member_count = member_count + 1 WHERE id = NEW.chat_id;
END;
CREATE TRIGGER chat_members_count_delete AFTER DELETE ON chat_members BEGIN
    UPDATE chats SET member_count = member_count - 1 WHERE id = OLD.chat_id;
END;

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id    INTEGER NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    sender_id  INTEGER NOT NULL REFERENCES users (id),
    content    TEXT    NOT NULL,
    files      TEXT    NOT NULL DEFAULT '[]',
    reply_to   INTEGER,
    client_id  TEXT,
    created_at TEXT    NOT NULL,
    edited_at  TEXT,
    UNIQUE (chat_id, seq),
    UNIQUE (chat_id, sender_id, client_id)
);
CREATE INDEX messages_chat_id ON messages (chat_id, id);

CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id  TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT,
    revoked_at TEXT,
    created_at TEXT    NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
