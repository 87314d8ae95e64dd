"""Presence across nodes in PostgreSQL (issue 12, docs/cluster.md §6, plan step C2).

``user_presence(user_id, node_id, since)`` (migration 0010) holds one row per user and node
where the user has a live stream (or had one less than ``presence_grace`` ago). A row
**counts** while its node's ``cluster_nodes`` row is live or expired less than ``grace``
seconds ago: a user is online when they have a counted row. The grace on a dead node's rows
is the same grace a single process gives a closed stream: clients of a node that stopped
reconnect elsewhere within it and nobody sees them flap offline and online.

Every change of a user's rows runs under a per-user transaction-scoped advisory lock, so the
question "was this the user's only row?" is answered in the order the changes commit: of two
nodes claiming a user at once at least one learns it brought the user online, and of two
releasing at once exactly the second learns the user went offline. A dead node's rows are
deleted by whichever node reaps them first (``DELETE … RETURNING``: one node gets each row).

Every method raises ``Unavailable`` when the database does not answer (the pool's bounds).
SQLite has no cluster: this needs ``PostgresStorage``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fechatter.storage.sql import Op, Sql, only, q

if TYPE_CHECKING:
    from fechatter.storage.postgres import PostgresStorage

# ``grace`` seconds (float) as an interval on the database clock.
_GRACE = "make_interval(secs => CAST(:grace AS double precision))"
# A row of ``p`` counts: its node is live, or expired less than the grace ago.
_COUNTED_NODE = f"JOIN cluster_nodes n ON n.node_id = p.node_id AND n.expires_at > now() - {_GRACE}"
_LOCK = Sql("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# Taken after the lock, so its snapshot sees every change committed by earlier holders.
_ELSEWHERE = (
    f"EXISTS (SELECT 1 FROM user_presence p {_COUNTED_NODE}"
    " WHERE p.user_id = :user AND p.node_id <> :node) AS elsewhere"
)
_CLAIM = Sql(
    "WITH ins AS (INSERT INTO user_presence (user_id, node_id) VALUES (:user, :node)"
    " ON CONFLICT (user_id, node_id) DO NOTHING RETURNING 1)"
    f" SELECT EXISTS (SELECT 1 FROM ins) AS changed, {_ELSEWHERE}"
)
_RELEASE = Sql(
    "WITH del AS (DELETE FROM user_presence WHERE user_id = :user AND node_id = :node"
    " RETURNING 1)"
    f" SELECT EXISTS (SELECT 1 FROM del) AS changed, {_ELSEWHERE}"
)
# The rows of nodes dead for longer than the grace, deleted; the users they leave without a
# counted row. The subquery reads the statement's snapshot (before the delete), where the
# deleted rows do not count anyway (their nodes are past the grace).
_REAP = Sql(
    "WITH dead AS (DELETE FROM user_presence WHERE node_id IN ("
    f" SELECT node_id FROM cluster_nodes WHERE expires_at <= now() - {_GRACE})"
    " RETURNING user_id)"
    " SELECT DISTINCT d.user_id FROM dead d WHERE NOT EXISTS ("
    f" SELECT 1 FROM user_presence p {_COUNTED_NODE} WHERE p.user_id = d.user_id)"
    " ORDER BY d.user_id"
)
# Delete and re-insert rather than UPDATE: the new id may already have a row of a user (a
# move that committed while its caller saw a timeout, then syncs under the old id again);
# such rows merge instead of failing the whole move with a unique violation.
_MOVE = Sql(
    "WITH gone AS (DELETE FROM user_presence WHERE node_id = :old RETURNING user_id, since),"
    " ins AS (INSERT INTO user_presence (user_id, node_id, since)"
    " SELECT user_id, :new, since FROM gone ON CONFLICT (user_id, node_id) DO NOTHING)"
    " SELECT user_id FROM gone"
)
_ONLINE = Sql(
    f"SELECT DISTINCT p.user_id FROM user_presence p {_COUNTED_NODE}"
    " WHERE p.user_id = ANY(CAST(:ids AS bigint[]))"
)
# Every presence peer (SPEC §6: users sharing a chat of at most :max members, as
# ``chats.presence_peer_ids``) with each live node it has a row on (NULL: none).
_PEERS = Sql(
    "SELECT peers.user_id, n.node_id FROM ("
    " SELECT DISTINCT other.user_id FROM chat_members mine"
    " JOIN chats c ON c.id = mine.chat_id AND c.member_count <= :max"
    " JOIN chat_members other ON other.chat_id = mine.chat_id"
    " WHERE mine.user_id = :user AND other.user_id <> :user) peers"
    " LEFT JOIN user_presence p ON p.user_id = peers.user_id"
    " LEFT JOIN cluster_nodes n ON n.node_id = p.node_id AND n.expires_at > now()"
)


def lock_key(user_id: int) -> str:
    """The advisory lock key text of a user's presence rows (``hashtextextended(key, 0)``)."""
    return f"p:{user_id}"


@dataclass(frozen=True, slots=True)
class Change:
    """What one claim or release did: ``changed`` — this node's row was inserted / deleted
    (False: it already was / was not there); ``elsewhere`` — the user has a counted row on
    another node (after the change, in commit order)."""

    changed: bool
    elsewhere: bool

    @property
    def global_change(self) -> bool:
        """The user's cluster-wide state flipped (online ↔ offline) with this change."""
        return self.changed and not self.elsewhere


def _change(sql: Sql, user_id: int, node_id: str, grace: float) -> Op[Change]:
    yield q(_LOCK, {"key": lock_key(user_id)})
    row = only((yield q(sql, {"user": user_id, "node": node_id, "grace": grace})))
    return Change(bool(row["changed"]), bool(row["elsewhere"]))


def _reap(grace: float) -> Op[list[int]]:
    return [int(r["user_id"]) for r in (yield q(_REAP, {"grace": grace})).rows]


def _move(old: str, new: str) -> Op[list[int]]:
    return [int(r["user_id"]) for r in (yield q(_MOVE, {"old": old, "new": new})).rows]


def _online(user_ids: list[int], grace: float) -> Op[set[int]]:
    rows = (yield q(_ONLINE, {"ids": user_ids, "grace": grace})).rows
    return {int(r["user_id"]) for r in rows}


def _peers(user_id: int, max_chat_size: int) -> Op[list[tuple[int, str | None]]]:
    rows = (yield q(_PEERS, {"user": user_id, "max": max_chat_size})).rows
    return [(int(r["user_id"]), r["node_id"]) for r in rows]


class PresenceStore:
    """``user_presence`` on a ``PostgresStorage``. ``grace`` (seconds, ≥ 0) is
    ``presence_grace``: how long a dead node's rows still count."""

    def __init__(self, storage: PostgresStorage, grace: float) -> None:
        if grace < 0:
            raise ValueError("grace must be ≥ 0 seconds")
        self.storage = storage
        self.grace = grace

    async def claim(self, user_id: int, node_id: str) -> Change:
        """Insert the row (user, node) if missing, under the user's lock; ``Change`` says
        whether it was inserted and whether another node's row counts (so: whether the
        user just came online cluster-wide)."""
        op = _change(_CLAIM, user_id, node_id, self.grace)
        return await self.storage._write_op(op)

    async def release(self, user_id: int, node_id: str) -> Change:
        """Delete the row (user, node) if present, under the user's lock; ``Change`` says
        whether it was deleted and whether another node's row still counts (so: whether
        the user just went offline cluster-wide)."""
        op = _change(_RELEASE, user_id, node_id, self.grace)
        return await self.storage._write_op(op)

    async def reap(self) -> list[int]:
        """Delete the rows of nodes expired more than ``grace`` ago (one statement; of
        nodes reaping at once each row goes to one); returns, ascending, the users left
        with no counted row — the ones the caller announces ``offline``."""
        return await self.storage._write_op(_reap(self.grace), one_statement=True)

    async def move(self, old_node: str, new_node: str) -> list[int]:
        """Re-key this node's rows after it registered again under a new id (its old row
        expired); returns the users whose rows moved (rows reaped meanwhile are gone). A
        user with a row under both ids keeps one (merged, never a conflict)."""
        return await self.storage._write_op(_move(old_node, new_node), one_statement=True)

    async def online(self, user_ids: Sequence[int]) -> set[int]:
        """Which of ``user_ids`` have a counted row (one query)."""
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return set()
        return await self.storage._read_op(_online(ids, self.grace))

    async def peers(self, user_id: int, max_chat_size: int) -> list[tuple[int, str | None]]:
        """``user_id``'s presence peers (sharing a chat of at most ``max_chat_size``
        members), each with every live node it has a row on, as ``(peer, node_id)`` pairs;
        a peer with no row on a live node appears once with None."""
        return await self.storage._read_op(_peers(user_id, max_chat_size))
