-- The group commit's plans (fechatter_insert_batch, 0007): PL/pgSQL caches each statement's
-- plan, but kept choosing a custom plan for the big statement (its generic plan's estimate was
-- worse), so PostgreSQL re-planned it on every call: planning was about half its CPU per
-- message (docs/storage.md "Planning the group commit"). Forcing the generic plan alone was
-- worse still: that plan hashed the chat's whole history for the idempotency lookup (the join
-- on messages_client_id) and for the reply_to check (the EXISTS), so its cost grew with the
-- chat. Now each lookup is a scalar subquery naming at most one row, which every plan runs as
-- one index probe per item, the roots lock probes each root, and the
-- function forces the generic plan: planned once per connection. Same signature, rows, lock
-- order and semantics as 0007; the rounds, fenced and outbox functions call it unchanged.
CREATE OR REPLACE FUNCTION fechatter_insert_batch(
    p_chat bigint,
    p_senders bigint[],
    p_contents text[],
    p_files text[],
    p_replies bigint[],
    p_clients text[],
    p_threads bigint[],
    p_mentions text[],
    p_channel boolean[],
    p_now timestamptz
) RETURNS TABLE (
    n bigint, existing_id bigint, bad_field text, new_n bigint, new_seq bigint, new_id bigint,
    e_id bigint, e_chat_id bigint, e_seq bigint, e_sender_id bigint, e_content text,
    e_files text[], e_reply_to bigint, e_client_id text, e_created_at timestamptz,
    e_edited_at timestamptz, e_deleted boolean, e_thread_id bigint, e_reply_count integer,
    e_last_reply_at timestamptz, e_mentions bigint[], e_mentions_channel boolean
) LANGUAGE plpgsql
-- Plan once per connection (see the header): every statement below has a plan whose cost
-- does not depend on the parameters' values.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM chats WHERE id = p_chat FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Lock order (deadlock-free): the chat row first (above), then the thread roots this
    -- batch names, ascending ids. delete_message (fechatter/storage/messages.py) never takes
    -- a chat row: it locks the message it deletes, then that message's root. Neither ever
    -- waits for a lock the other takes before its own, and this function never locks a
    -- reply. The roots' lock level is the one their UPDATE below takes anyway; the statement
    -- below runs after the wait, in a new snapshot (READ COMMITTED), so it sees a deletion
    -- committed meanwhile and rejects replies to that root.
    -- One index probe per distinct root, in ascending order (the nested loop keeps the
    -- sorted outer order): a plain ``t.id IN (…)`` / ``= ANY`` let the generic plan scan the
    -- chat's whole index (messages_chat_id) and hash or AND it with the ids. Deadlock freedom
    -- does not rest on that order alone: the chat row lock above already queues every writer
    -- of this chat, and a deletion locks one root only.
    PERFORM 1
        FROM (SELECT DISTINCT th FROM unnest(p_threads) AS th WHERE th IS NOT NULL
              ORDER BY th) AS ids,
        LATERAL (SELECT 1 FROM messages t WHERE t.id = ids.th AND t.chat_id = p_chat
                 FOR NO KEY UPDATE) AS locked;
    RETURN QUERY
    WITH items AS (
        SELECT * FROM unnest(p_senders, p_contents, p_files, p_replies, p_clients, p_threads,
                p_mentions, p_channel)
            WITH ORDINALITY AS i (sender_id, content, files, reply_to, client_id, thread_id,
                mentions, mentions_channel, n)
    ), classified AS (
        -- One scalar subquery per lookup (each names at most one row: the unique
        -- messages_client_id, the primary key), so every plan probes an index per item; a
        -- join or an EXISTS let the generic plan hash the chat's whole history instead.
        SELECT i.*,
            (SELECT e.id FROM messages e WHERE e.chat_id = p_chat
                AND e.sender_id = i.sender_id AND e.client_id = i.client_id) AS existing_id,
            i.reply_to IS NOT NULL AND (
                SELECT r.id FROM messages r WHERE r.id = i.reply_to AND r.chat_id = p_chat
            ) IS NULL AS bad_reply,
            i.thread_id IS NOT NULL AND (
                SELECT t.id FROM messages t WHERE t.id = i.thread_id AND t.chat_id = p_chat
                    AND NOT t.deleted AND t.thread_id IS NULL
            ) IS NULL AS bad_thread
        FROM items i
    ), eligible AS (
        SELECT c.*, min(c.n) OVER (PARTITION BY c.sender_id, c.client_id) AS first_n
        FROM classified c WHERE c.existing_id IS NULL AND NOT c.bad_reply AND NOT c.bad_thread
    ), fresh AS (
        SELECT e.*, ch.last_seq + row_number() OVER (ORDER BY e.n) AS seq
        FROM eligible e, chats ch
        WHERE ch.id = p_chat AND (e.client_id IS NULL OR e.n = e.first_n)
    ), ins AS (
        INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,
            thread_id, mentions, mentions_channel, created_at)
        SELECT p_chat, f.seq, f.sender_id, f.content, CAST(f.files AS text[]), f.reply_to,
            f.client_id, f.thread_id, CAST(f.mentions AS bigint[]), f.mentions_channel, p_now
        FROM fresh f ORDER BY f.seq
        RETURNING messages.id, messages.seq, messages.sender_id, messages.thread_id
    ), marks AS (
        UPDATE chat_members cm SET last_read_seq = r.seq, last_read_message_id = r.id
        FROM (SELECT DISTINCT ON (sender_id) sender_id, seq, id FROM ins
              ORDER BY sender_id, seq DESC) r
        WHERE cm.chat_id = p_chat AND cm.user_id = r.sender_id AND cm.last_read_seq < r.seq
    ), roots AS (
        UPDATE messages root SET reply_count = root.reply_count + r.replies,
            last_reply_at = p_now
        FROM (SELECT ins.thread_id AS root_id, count(*) AS replies FROM ins
              WHERE ins.thread_id IS NOT NULL GROUP BY ins.thread_id) r
        WHERE root.id = r.root_id AND NOT root.deleted
    ), bump AS (
        UPDATE chats SET last_seq = l.seq, last_message_id = l.id, last_activity_at = p_now
        FROM (SELECT seq, id FROM ins ORDER BY seq DESC LIMIT 1) l WHERE chats.id = p_chat
    )
    SELECT c.n, c.existing_id,
        CASE WHEN c.bad_reply THEN 'reply_to' WHEN c.bad_thread THEN 'thread_id' END,
        f.n, f.seq, ins.id,
        e.id, e.chat_id, e.seq, e.sender_id, e.content, e.files, e.reply_to, e.client_id,
        e.created_at, e.edited_at, e.deleted, e.thread_id, e.reply_count, e.last_reply_at,
        e.mentions, e.mentions_channel
    FROM classified c
    -- LATERAL … LIMIT 1 (the primary key names at most one row): a probe per item in every
    -- plan; a plain join let a generic plan built before the table had statistics hash a
    -- sequential scan of all messages.
    LEFT JOIN LATERAL (
        SELECT * FROM messages e WHERE e.id = c.existing_id LIMIT 1
    ) e ON true
    LEFT JOIN fresh f ON f.n = c.n OR (c.existing_id IS NULL AND c.client_id IS NOT NULL
        AND f.sender_id = c.sender_id AND f.client_id = c.client_id AND f.n <= c.n)
    LEFT JOIN ins ON ins.seq = f.seq
    ORDER BY c.n;
END
$$;
