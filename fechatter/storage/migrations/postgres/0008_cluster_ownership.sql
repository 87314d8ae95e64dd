-- Cluster ownership (issue 12, docs/cluster.md §1–§2, plan steps A1 and A2): node liveness,
-- chat leases whose epoch is a fencing token, and the fence every chat write runs first.
-- PostgreSQL only: a cluster shares one PostgreSQL database (SQLite has no cluster tables).
-- Every time here is the database's clock (now()); no node clock is ever compared with it.

-- One row per node boot (node_id = <name>.<boot>, never reused). Live = expires_at > now().
-- A heartbeat only extends a live row: an expired node never comes back under the same id.
CREATE TABLE cluster_nodes (
    node_id      text        PRIMARY KEY,
    role         text        NOT NULL CHECK (role IN ('all', 'api', 'realtime')),
    protocol     integer     NOT NULL,          -- highest command protocol it speaks
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,          -- now() + node TTL at the last beat
    nats_ok      boolean     NOT NULL DEFAULT true,
    draining     boolean     NOT NULL DEFAULT false
);
CREATE INDEX cluster_nodes_expires ON cluster_nodes (expires_at);

-- Who owns a chat. No expiry of its own: valid while its node's row is live. ``epoch`` is +1
-- at every change of owner and never goes back (rows are not deleted when a node leaves).
CREATE TABLE chat_leases (
    chat_id     bigint      PRIMARY KEY REFERENCES chats (id) ON DELETE CASCADE,
    node_id     text        NOT NULL,
    epoch       bigint      NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_leases_node ON chat_leases (node_id);

-- The fence: the first statement of every transaction that writes a chat's state on behalf
-- of its owner. FOR SHARE on the lease row conflicts with a takeover's UPDATE of it (not with
-- other fences): either the write commits first and the takeover waits for it, or the
-- takeover commits first and this check, re-reading the updated row (READ COMMITTED), finds
-- another owner and raises. FX001: not the owner at that epoch (errors.ChatMoved);
-- FX002: the chat does not exist (NotFound chat_not_found). Lock order everywhere: the lease
-- row, then the chat row.
CREATE FUNCTION fechatter_fence(p_chat bigint, p_node text, p_epoch bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM chat_leases
        WHERE chat_id = p_chat AND node_id = p_node AND epoch = p_epoch FOR SHARE;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM chats WHERE id = p_chat) THEN
            RAISE EXCEPTION 'chat % is gone', p_chat USING ERRCODE = 'FX002';
        END IF;
        RAISE EXCEPTION 'chat % not owned by % at epoch %', p_chat, p_node, p_epoch
            USING ERRCODE = 'FX001';
    END IF;
END
$$;

-- The fenced group commit of one chat: the fence, then fechatter_insert_batch (0007), in one
-- call — still one round trip and one statement in autocommit, with server-side binding and
-- a cached plan like the unfenced call.
CREATE FUNCTION fechatter_insert_batch_fenced(
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
    e_last_reply_at timestamptz, e_mentions bigint[], e_mentions_channel boolean
) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM fechatter_fence(p_chat, p_node, p_epoch);
    RETURN QUERY SELECT * FROM fechatter_insert_batch(
        p_chat, p_senders, p_contents, p_files, p_replies, p_clients, p_threads, p_mentions,
        p_channel, p_now);
END
$$;

-- The fenced round across chats: every chat's fence first (ascending chat ids, as the caller
-- sorts them: lease rows before any chat row, in one order for every process), then
-- fechatter_insert_rounds (0006). A NULL node means that chat's batch is not fenced. A fence
-- that raises fails the whole call (nothing written); the caller then stores the round batch
-- by batch, so the moved chat fails alone (PostgresStorage._store_round).
CREATE FUNCTION fechatter_insert_rounds_fenced(
    p_nodes text[],
    p_epochs bigint[],
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
    e_mentions_channel boolean
) LANGUAGE plpgsql AS $$
DECLARE
    k integer;
BEGIN
    FOR k IN 1 .. coalesce(array_length(p_chats, 1), 0) LOOP
        IF p_nodes[k] IS NOT NULL THEN
            PERFORM fechatter_fence(p_chats[k], p_nodes[k], p_epochs[k]);
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM fechatter_insert_rounds(
        p_chats, p_counts, p_senders, p_contents, p_files, p_replies, p_clients, p_threads,
        p_mentions, p_channel, p_now);
END
$$;
