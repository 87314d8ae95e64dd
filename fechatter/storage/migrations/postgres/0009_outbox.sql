-- The transactional outbox (issue 12, docs/cluster.md §4, plan step B1): every chat write of
-- a ChatStore with ``outbox`` on inserts its events here in its own transaction, numbered
-- gapless per chat from ``chats.last_event_seq``; a publisher (B2) sends them to NATS after
-- the commit and deletes them once acknowledged, and the next owner sends what a dead one
-- left. PostgreSQL only (SQLite has no cluster).
ALTER TABLE chats ADD COLUMN last_event_seq bigint NOT NULL DEFAULT 0;
-- Workspace events (SPEC §7) get their own sequence (§4); no write numbers them yet (B1 covers
-- the chat writes; docs/cluster.md "Built: B1").
ALTER TABLE workspaces ADD COLUMN last_event_seq bigint NOT NULL DEFAULT 0;

-- One row per event not yet acknowledged by NATS. No foreign key: a chat's last event
-- (chat.deleted) outlives the chat row. ``data`` is ``json`` (validated on insert, stored as
-- the exact text given): rows the owner writes from Python hold the very bytes the actor
-- publishes (events.dumps); rows the group-commit function writes are built by
-- json_build_object (same values, other whitespace); a thread root's update there is a
-- ``{"$ref": "message", "id": …, "reply_count": …, "last_reply_at": …}`` to rehydrate.
CREATE TABLE outbox (
    topic      char(1)     NOT NULL CHECK (topic IN ('c', 'w')),  -- chat, workspace
    topic_id   bigint      NOT NULL,
    event_seq  bigint      NOT NULL,                -- gapless per topic, commit order
    name       text        NOT NULL,                -- message.created, reaction.added, …
    data       json        NOT NULL,
    notify     bigint[]    NOT NULL DEFAULT '{}',   -- users to send a membership notice
    created_at timestamptz NOT NULL DEFAULT now(),
    -- The publisher reads a topic's rows in event_seq order and deletes by this key.
    PRIMARY KEY (topic, topic_id, event_seq)
);
-- The orphan sweeper (§4) looks for rows older than 2 s.
CREATE INDEX outbox_created ON outbox (created_at);

-- The events of the messages a group commit just inserted into chat p_chat (those with
-- seq > p_after_seq), in commit order: per message (ascending seq) its message.created and,
-- for a thread reply, its root's message.updated. Numbers them from chats.last_event_seq
-- (the caller holds the chat row: lease row, then chat row) and moves it on. Returns the
-- last_event_seq before them (the caller numbers the same events the same way).
CREATE FUNCTION fechatter_outbox_sends(p_chat bigint, p_after_seq bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_base bigint;
    v_count bigint;
BEGIN
    SELECT last_event_seq INTO v_base FROM chats WHERE id = p_chat FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    WITH created AS (
        SELECT m.* FROM messages m WHERE m.chat_id = p_chat AND m.seq > p_after_seq
    ), ev AS (
        SELECT m.seq, 0 AS part, 'message.created' AS name, json_build_object(
            'id', m.id, 'chat_id', m.chat_id, 'seq', m.seq, 'sender_id', m.sender_id,
            'content', m.content, 'files', to_json(m.files), 'reply_to', m.reply_to,
            'client_id', m.client_id,
            'created_at', to_char(m.created_at AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'edited_at', NULL, 'deleted', false, 'thread_id', m.thread_id,
            'reply_count', 0, 'last_reply_at', NULL, 'reactions', json_build_array(),
            'mentions', to_json(m.mentions), 'mentions_channel', m.mentions_channel
        ) AS data
        FROM created m
        UNION ALL
        -- The root as it was right after this reply: its counters less the later replies
        -- of this commit (the chat row is locked: every reply above p_after_seq is ours).
        SELECT m.seq, 1, 'message.updated', json_build_object(
            '$ref', 'message', 'id', m.thread_id,
            'reply_count', r.reply_count - (
                SELECT count(*) FROM created x WHERE x.thread_id = m.thread_id AND x.seq > m.seq),
            'last_reply_at', to_char(m.created_at AT TIME ZONE 'UTC',
                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        )
        FROM created m JOIN messages r ON r.id = m.thread_id
    ), ins AS (
        INSERT INTO outbox (topic, topic_id, event_seq, name, data)
        SELECT 'c', p_chat, v_base + row_number() OVER (ORDER BY ev.seq, ev.part), ev.name,
            ev.data
        FROM ev
        RETURNING 1
    )
    SELECT count(*) INTO v_count FROM ins;
    UPDATE chats SET last_event_seq = v_base + v_count WHERE id = p_chat AND v_count > 0;
    RETURN v_base;
END
$$;

-- The group commit of one chat with its outbox rows, in one call (one round trip, one
-- statement in autocommit, as 0003/0008): the fence when p_node is not NULL, the chat row,
-- fechatter_insert_batch (0007), then fechatter_outbox_sends. The rows of
-- fechatter_insert_batch plus ev_base (last_event_seq before this commit's events; NULL on
-- every row when the chat does not exist).
CREATE FUNCTION fechatter_insert_batch_outbox(
    p_node text,
    p_epoch bigint,
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
    e_last_reply_at timestamptz, e_mentions bigint[], e_mentions_channel boolean,
    ev_base bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_base bigint;
BEGIN
    IF p_node IS NOT NULL THEN
        PERFORM fechatter_fence(p_chat, p_node, p_epoch);
    END IF;
    SELECT c.last_seq, c.last_event_seq INTO v_last, v_base
        FROM chats c WHERE c.id = p_chat FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT b.*, v_base FROM fechatter_insert_batch(
        p_chat, p_senders, p_contents, p_files, p_replies, p_clients, p_threads, p_mentions,
        p_channel, p_now) AS b;
    PERFORM fechatter_outbox_sends(p_chat, v_last);
END
$$;

-- The round across chats (0006/0008) with outbox rows: every fence first (ascending chat
-- ids, as the caller sorts them), then per chat its batch and, where p_outbox[k], its
-- events. A NULL node: that chat is not fenced. One call, one round trip; any error fails
-- the whole call (nothing written) and the caller stores batch by batch. ev_base as in
-- fechatter_insert_batch_outbox (NULL for a chat without outbox).
CREATE FUNCTION fechatter_insert_rounds_outbox(
    p_nodes text[],
    p_epochs bigint[],
    p_outbox boolean[],
    p_chats bigint[],
    p_counts integer[],
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
    chat bigint, n bigint, existing_id bigint, bad_field text, new_n bigint, new_seq bigint,
    new_id bigint, e_id bigint, e_chat_id bigint, e_seq bigint, e_sender_id bigint,
    e_content text, e_files text[], e_reply_to bigint, e_client_id text,
    e_created_at timestamptz, e_edited_at timestamptz, e_deleted boolean, e_thread_id bigint,
    e_reply_count integer, e_last_reply_at timestamptz, e_mentions bigint[],
    e_mentions_channel boolean, ev_base bigint
) LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    first_item integer := 1;
    last_item integer;
    v_last bigint;
    v_base bigint;
BEGIN
    FOR k IN 1 .. coalesce(array_length(p_chats, 1), 0) LOOP
        IF p_nodes[k] IS NOT NULL THEN
            PERFORM fechatter_fence(p_chats[k], p_nodes[k], p_epochs[k]);
        END IF;
    END LOOP;
    FOR k IN 1 .. coalesce(array_length(p_chats, 1), 0) LOOP
        last_item := first_item + p_counts[k] - 1;
        v_last := NULL;
        v_base := NULL;
        IF p_outbox[k] THEN
            SELECT c.last_seq, c.last_event_seq INTO v_last, v_base
                FROM chats c WHERE c.id = p_chats[k] FOR UPDATE;
        END IF;
        RETURN QUERY
        SELECT p_chats[k], b.*, v_base FROM fechatter_insert_batch(
            p_chats[k],
            p_senders[first_item:last_item],
            p_contents[first_item:last_item],
            p_files[first_item:last_item],
            p_replies[first_item:last_item],
            p_clients[first_item:last_item],
            p_threads[first_item:last_item],
            p_mentions[first_item:last_item],
            p_channel[first_item:last_item],
            p_now
        ) AS b;
        IF v_last IS NOT NULL THEN
            PERFORM fechatter_outbox_sends(p_chats[k], v_last);
        END IF;
        first_item := last_item + 1;
    END LOOP;
END
$$;
