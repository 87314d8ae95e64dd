-- Files (issue 15, SPEC §8). One row per upload: ``id`` is the random token its URL names
-- (/files/<id>), never the content hash; the bytes live in the blob store under ``sha256``
-- (content-addressed, so two uploads of the same bytes share one blob). A thumbnail is a
-- blob of its own (``thumb_sha256``). ``message_files`` says which messages reference which
-- upload URL, kept by a trigger on every insert (the send paths stay as they are); a
-- tombstoned message keeps its rows, and every reader joins ``deleted = 0``.
CREATE TABLE files (
    id            TEXT    PRIMARY KEY,
    uploader_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    width         INTEGER,
    height        INTEGER,
    thumb_sha256  TEXT,
    thumb_type    TEXT,
    thumb_size    INTEGER,
    created_at    TEXT    NOT NULL
);
CREATE INDEX files_uploader ON files (uploader_id, created_at);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_thumb_sha256 ON files (thumb_sha256) WHERE thumb_sha256 IS NOT NULL;

CREATE TABLE message_files (
    url        TEXT    NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (url, message_id)
);
CREATE INDEX message_files_message ON message_files (message_id);

CREATE TRIGGER messages_file_refs AFTER INSERT ON messages WHEN NEW.files <> '[]'
BEGIN
    INSERT OR IGNORE INTO message_files (url, message_id)
    SELECT value, NEW.id FROM json_each(NEW.files);
END;

INSERT OR IGNORE INTO message_files (url, message_id)
SELECT j.value, m.id FROM messages m, json_each(m.files) AS j WHERE m.files <> '[]';

CREATE INDEX users_avatar ON users (avatar) WHERE avatar IS NOT NULL;
