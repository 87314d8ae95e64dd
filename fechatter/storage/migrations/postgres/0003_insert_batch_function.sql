-- One group commit as one prepared call (issue 10, part 6): the batch rules of
-- fechatter/storage/messages.py (see its docstring) as a PL/pgSQL function, so the statement
-- is parsed and planned once per connection (PL/pgSQL caches its plans; the call itself is
-- prepared by psycopg) and its arrays are bound server-side, instead of a two-statement
-- query that had to be bound on the client and planned on every call.
--
-- It takes the chat row lock first (every writer of the chat, in any process, waits there),
-- then numbers the batch from chats.last_seq. Its rows: one per batch item, in order, with
-- the stored message an existing key names (e_*), or the new message the item maps to
-- (new_*: itself, or the first item of its key), or neither (a bad reply_to); none at all
-- for an unknown chat.
CREATE FUNCTION fechatter_insert_batch(
    p_chat bigint,
    p_senders bigint[],
    p_contents text[],
    p_files text[],
    p_replies bigint[],
    p_clients text[],
    p_now timestamptz
) RETURNS TABLE (
    n bigint, existing_id bigint, new_n bigint, new_seq bigint, new_id bigint,
    e_id bigint, e_chat_id bigint, e_seq bigint, e_sender_id bigint, e_content text,
    e_files text[], e_reply_to bigint, e_client_id text, e_created_at timestamptz,
    e_edited_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM chats WHERE id = p_chat FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH items AS (
        SELECT * FROM unnest(p_senders, p_contents, p_files, p_replies, p_clients)
            WITH ORDINALITY AS i (sender_id, content, files, reply_to, client_id, n)
    ), classified AS (
        SELECT i.*, e.id AS existing_id,
            i.reply_to IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM messages r WHERE r.id = i.reply_to AND r.chat_id = p_chat
            ) AS bad_reply
        FROM items i LEFT JOIN messages e
            ON e.chat_id = p_chat AND e.sender_id = i.sender_id AND e.client_id = i.client_id
    ), eligible AS (
        SELECT c.*, min(c.n) OVER (PARTITION BY c.sender_id, c.client_id) AS first_n
        FROM classified c WHERE c.existing_id IS NULL AND NOT c.bad_reply
    ), fresh AS (
        SELECT e.*, ch.last_seq + row_number() OVER (ORDER BY e.n) AS seq
        FROM eligible e, chats ch
        WHERE ch.id = p_chat AND (e.client_id IS NULL OR e.n = e.first_n)
    ), ins AS (
        INSERT INTO messages (chat_id, seq, sender_id, content, files, reply_to, client_id,
            created_at)
        SELECT p_chat, f.seq, f.sender_id, f.content, CAST(f.files AS text[]), f.reply_to,
            f.client_id, p_now
        FROM fresh f ORDER BY f.seq
        RETURNING messages.id, messages.seq, messages.sender_id
    ), marks AS (
        UPDATE chat_members cm SET last_read_seq = r.seq, last_read_message_id = r.id
        FROM (SELECT DISTINCT ON (sender_id) sender_id, seq, id FROM ins
              ORDER BY sender_id, seq DESC) r
        WHERE cm.chat_id = p_chat AND cm.user_id = r.sender_id AND cm.last_read_seq < r.seq
    ), bump AS (
        UPDATE chats SET last_seq = l.seq, last_message_id = l.id, last_activity_at = p_now
        FROM (SELECT seq, id FROM ins ORDER BY seq DESC LIMIT 1) l WHERE chats.id = p_chat
    )
    SELECT c.n, c.existing_id, f.n, f.seq, ins.id,
        e.id, e.chat_id, e.seq, e.sender_id, e.content, e.files, e.reply_to, e.client_id,
        e.created_at, e.edited_at
    FROM classified c
    LEFT JOIN messages e ON e.id = c.existing_id
    LEFT JOIN fresh f ON f.n = c.n OR (c.existing_id IS NULL AND c.client_id IS NOT NULL
        AND f.sender_id = c.sender_id AND f.client_id = c.client_id AND f.n <= c.n)
    LEFT JOIN ins ON ins.seq = f.seq
    ORDER BY c.n;
END
$$;
