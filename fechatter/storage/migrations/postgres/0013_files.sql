-- Files (issue 15, SPEC §8). One row per upload: ``id`` is the random token its URL names
-- (/files/<id>), never the content hash; the bytes live in the blob store under ``sha256``
-- (content-addressed, so two uploads of the same bytes share one blob). A thumbnail is a
-- blob of its own (``thumb_sha256``). ``message_files`` says which messages reference which
-- upload URL, kept by a trigger on every insert (the send paths and the batch functions stay
-- as they are); a tombstoned message keeps its rows, and every reader joins ``NOT deleted``.
CREATE TABLE files (
    id            text        PRIMARY KEY,
    uploader_id   bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text        NOT NULL,
    size          bigint      NOT NULL,
    content_type  text        NOT NULL,
    sha256        text        NOT NULL,
    width         integer,
    height        integer,
    thumb_sha256  text,
    thumb_type    text,
    thumb_size    bigint,
    created_at    timestamptz NOT NULL
);
CREATE INDEX files_uploader ON files (uploader_id, created_at);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_thumb_sha256 ON files (thumb_sha256) WHERE thumb_sha256 IS NOT NULL;

CREATE TABLE message_files (
    url        text   NOT NULL,
    message_id bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (url, message_id)
);
CREATE INDEX message_files_message ON message_files (message_id);

CREATE FUNCTION fechatter_message_file_refs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_files (url, message_id)
    SELECT DISTINCT u, NEW.id FROM unnest(NEW.files) AS u
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_file_refs AFTER INSERT ON messages
    FOR EACH ROW WHEN (cardinality(NEW.files) > 0)
    EXECUTE FUNCTION fechatter_message_file_refs();

INSERT INTO message_files (url, message_id)
SELECT DISTINCT u, m.id FROM messages m, unnest(m.files) AS u WHERE cardinality(m.files) > 0
ON CONFLICT DO NOTHING;

CREATE INDEX users_avatar ON users (avatar) WHERE avatar IS NOT NULL;
