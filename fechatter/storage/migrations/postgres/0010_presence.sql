-- Presence across nodes (issue 12, docs/cluster.md §6, plan step C2): one row per (user, node)
-- where the user has a live stream, or had one less than ``presence_grace`` ago. Online = a
-- row whose node counts (its ``cluster_nodes`` row is live, or expired less than
-- ``presence_grace`` ago); a node inserts its row when a user's first local stream arrives
-- and deletes it after the grace. Rows of dead nodes are deleted by whichever node reaps them
-- first (DELETE … RETURNING), which announces ``offline`` for users left without a row.
-- PostgreSQL only (SQLite has no cluster).
CREATE TABLE user_presence (
    user_id bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    node_id text        NOT NULL,
    since   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, node_id)
);
-- The reaper deletes a dead node's rows by node.
CREATE INDEX user_presence_node ON user_presence (node_id);
