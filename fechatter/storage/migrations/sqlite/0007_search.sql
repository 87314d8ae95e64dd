-- Search (issue 16, SPEC §9): a contentless FTS5 index over the shadow of each live message.
--
-- The shadow (fechatter.search_text.search_text, registered on every connection as the
-- deterministic SQL function fechatter_search_text) spells each CJK run as its overlapping
-- bigrams, so unicode61 finds a two-character word inside a sentence. rowid = messages.id.
-- Contentless (content=''): the text is never read back (highlights are computed from
-- messages.content), so the index stores tokens only. Removing a row from a contentless table
-- needs its old tokens: the triggers recompute them from old.content with the same
-- deterministic function (so changing search_text needs a migration that rebuilds this
-- table: 'delete-all', then re-insert every live message).
--
-- New messages are indexed by the one SQLite insert path itself (storage/messages.py,
-- _insert_batch_sqlite: the shadow text computed in Python before the statement, in the same
-- transaction; a trigger calling the Python function would take the GIL back once per message
-- in the middle of the group commit). Every other write of messages.content — edit,
-- tombstone, chat/workspace deletion cascade — is kept in step by the triggers below, in the
-- same transaction, whoever writes it. Tombstones (deleted = 1) are not indexed.
-- remove_diacritics 0: the same as PostgreSQL's 'simple' configuration (café is not cafe).
CREATE VIRTUAL TABLE messages_fts USING fts5(
    body, content = '', tokenize = 'unicode61 remove_diacritics 0'
);

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, deleted ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
        SELECT 'delete', old.id, fechatter_search_text(old.content) WHERE NOT old.deleted;
    INSERT INTO messages_fts (rowid, body)
        SELECT new.id, fechatter_search_text(new.content) WHERE NOT new.deleted;
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN NOT old.deleted BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body)
        VALUES ('delete', old.id, fechatter_search_text(old.content));
END;

INSERT INTO messages_fts (rowid, body)
    SELECT id, fechatter_search_text(content) FROM messages WHERE NOT deleted;
