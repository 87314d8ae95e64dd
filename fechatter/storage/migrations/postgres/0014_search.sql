-- Search (issue 16, SPEC §9): a tsvector of each live message's shadow, with a GIN index.
--
-- fechatter_search_text is fechatter.search_text.search_text in SQL, character for character
-- (the same regular expressions: PG_PUNCT, PG_CJK there; tests/test_search_text.py checks
-- this file spells them and that both give the same text): ASCII punctuation becomes a
-- space, each CJK run (Han, kana, Hangul) becomes its overlapping bigrams and its last
-- character, so to_tsvector('simple', …) finds a two-character word inside a sentence.
-- A BEFORE trigger, not a change to the write functions: every write of messages.content —
-- the PL/pgSQL group commits (fechatter_insert_batch and its rounds, fenced and outbox
-- variants all insert through it), edits, tombstones — sets search_tsv in the same row
-- write, so a message is searchable as soon as its send commits. Tombstones have none.
-- (pg_trgm ships with the embedded server, but trigram indexes need three characters, so
-- they would not find a two-character Chinese word either; nothing here relies on them.)
CREATE FUNCTION fechatter_search_text(p_content text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN t !~ '[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]' THEN t ELSE
        regexp_replace(
            regexp_replace(t, '(?<=[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f])([\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f])', '\1\1', 'g'),
            '([\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f][\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]?)', ' \1 ', 'g')
    END
    FROM (SELECT regexp_replace(p_content, '[!-/:-@\[-`{-~]', ' ', 'g') AS t) AS punct
$$;

ALTER TABLE messages ADD COLUMN search_tsv tsvector;

CREATE FUNCTION fechatter_messages_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted THEN
        NEW.search_tsv := NULL;
    ELSE
        NEW.search_tsv := to_tsvector('simple', fechatter_search_text(NEW.content));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER messages_search BEFORE INSERT OR UPDATE OF content, deleted ON messages
    FOR EACH ROW EXECUTE FUNCTION fechatter_messages_search();

UPDATE messages SET search_tsv = to_tsvector('simple', fechatter_search_text(content))
    WHERE NOT deleted;

CREATE INDEX messages_search ON messages USING gin (search_tsv);
