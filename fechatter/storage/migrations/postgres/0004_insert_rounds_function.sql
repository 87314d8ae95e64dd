-- Group commit across chats (issue 10, part 6), as SQLite's writer already does: the sends of
-- many chats that arrive together are stored by ONE call in ONE transaction (one round trip,
-- one WAL flush). ``p_chats`` names each chat once, in ascending id order (the caller sorts:
-- every process then takes the chat row locks in the same order, so two rounds cannot
-- deadlock); ``p_counts`` says how many items of the flat arrays belong to each. Each chat's
-- items go through fechatter_insert_batch (migration 0003), whose rows come back tagged with
-- the chat; a chat that does not exist contributes no rows.
CREATE FUNCTION fechatter_insert_rounds(
    p_chats bigint[],
    p_counts integer[],
    p_senders bigint[],
    p_contents text[],
    p_files text[],
    p_replies bigint[],
    p_clients text[],
    p_now timestamptz
) RETURNS TABLE (
    chat bigint, n bigint, existing_id bigint, new_n bigint, new_seq bigint, new_id bigint,
    e_id bigint, e_chat_id bigint, e_seq bigint, e_sender_id bigint, e_content text,
    e_files text[], e_reply_to bigint, e_client_id text, e_created_at timestamptz,
    e_edited_at timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    first_item integer := 1;
    last_item integer;
BEGIN
    FOR k IN 1 .. coalesce(array_length(p_chats, 1), 0) LOOP
        last_item := first_item + p_counts[k] - 1;
        RETURN QUERY
        SELECT p_chats[k], b.* FROM fechatter_insert_batch(
            p_chats[k],
            p_senders[first_item:last_item],
            p_contents[first_item:last_item],
            p_files[first_item:last_item],
            p_replies[first_item:last_item],
            p_clients[first_item:last_item],
            p_now
        ) AS b;
        first_item := last_item + 1;
    END LOOP;
END
$$;
