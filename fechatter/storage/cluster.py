"""Cluster ownership in PostgreSQL (issue 12, docs/cluster.md §1, §2): node liveness, chat
leases with a fencing epoch, and the fenced view of the chat writes.

Three parts, all storage-only (nothing here runs a task or talks to NATS):

- **Nodes** (``cluster_nodes``, migration 0008): ``ClusterStore.register_node`` inserts a
  node's row, ``heartbeat`` extends it while it is still live, ``live_nodes`` lists the rows
  with ``expires_at > now()``. Every expiry is the database's clock; a node never compares
  its own clock with a stored time.
- **Leases** (``chat_leases``): ``acquire_chat`` takes a chat for a node in one statement
  when nobody live owns it (epoch + 1 at each change of owner) and otherwise answers the
  current owner; ``release_node`` ends a node's row so its chats can be taken at once.
- **Fence** (``fechatter_fence``): ``ChatStore`` (from ``SqlStorage.chat_store(fence)``) has
  exactly the chat writes the ``ChatActor`` makes; with a ``Fence`` each runs the fence first
  in its own transaction, so a node that lost the chat writes nothing (``ChatMoved``).

SQLite has no cluster tables: ``ClusterStore`` needs ``PostgresStorage``, and
``chat_store`` with a fence refuses SQLite (``ValueError``). This module imports no backend
at run time (``postgres.py`` imports ``Fence`` from here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import trio

from fechatter import events as ev
from fechatter.errors import ChatMoved
from fechatter.models import (
    Chat,
    ChatRecord,
    ChatType,
    Deleted,
    Inserted,
    Member,
    Message,
    NewMessage,
    Role,
)
from fechatter.storage import accounts, chats, messages, outbox, reactions
from fechatter.storage.rows import as_time
from fechatter.storage.sql import Op, Row, Sql, first, q

if TYPE_CHECKING:
    from fechatter.storage.core import SqlStorage
    from fechatter.storage.postgres import PostgresStorage

T = TypeVar("T")

NodeRole = Literal["all", "api", "realtime"]
ROLES: tuple[NodeRole, ...] = ("all", "api", "realtime")
# The command protocol a node speaks (docs/cluster.md §3); stored on its row.
PROTOCOL = 1


@dataclass(frozen=True, slots=True)
class Fence:
    """The right to write one chat: its lease at ``epoch`` held by ``node_id``."""

    chat_id: int
    node_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Owner:
    """A chat's lease as stored: the node that holds it and the epoch (fencing token)."""

    node_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Node:
    """A ``cluster_nodes`` row; times are RFC 3339 UTC text of the database's clock."""

    node_id: str
    role: str
    protocol: int
    started_at: str
    heartbeat_at: str
    expires_at: str
    nats_ok: bool
    draining: bool


# -- statements ----------------------------------------------------------------------------
# A TTL in seconds (float) as an interval on the database clock.
_TTL = "make_interval(secs => CAST(:ttl AS double precision))"
_REGISTER = Sql(
    "INSERT INTO cluster_nodes (node_id, role, protocol, expires_at, nats_ok)"
    f" VALUES (:node, :role, :protocol, now() + {_TTL}, :nats_ok)"
)
# Only a live row is extended: zero rows means the node expired and must self-fence.
_HEARTBEAT = Sql(
    f"UPDATE cluster_nodes SET heartbeat_at = now(), expires_at = now() + {_TTL},"
    " nats_ok = :nats_ok WHERE node_id = :node AND expires_at > now()"
)
_NODE_COLUMNS = "node_id, role, protocol, started_at, heartbeat_at, expires_at, nats_ok, draining"
_LIVE_NODES = Sql(
    f"SELECT {_NODE_COLUMNS} FROM cluster_nodes WHERE expires_at > now() ORDER BY node_id"
)
# Ends the row now (kept, not deleted: it is history for debugging and the presence janitor):
# the node's leases become takeable at once, their epochs keep counting up.
_RELEASE = Sql(
    "UPDATE cluster_nodes SET expires_at = now(), draining = true"
    " WHERE node_id = :node AND expires_at > now()"
)
# docs/cluster.md §2, in one statement. Returns a row when :me holds the lease afterwards:
# newly inserted (epoch 1), taken from an owner that is not live (epoch + 1; with :nats,
# also from a live owner that has lost NATS), or already ours (the no-op update returns it,
# epoch unchanged, so re-activating an own chat is one round trip too). The ON CONFLICT
# path locks the lease row: concurrent acquirers serialise and exactly one bumps the epoch;
# it also waits for every in-flight fenced write of the chat (they hold the row FOR SHARE).
# How long an acquire waits for the lease row's lock (held FOR SHARE by the old owner's
# fenced writes for milliseconds; for up to the server's idle-in-transaction timeout by a dead
# or frozen node's session): past it, the acquire fails fast as ``Unavailable`` (retryable)
# instead of burning the whole operation timeout. Whole milliseconds.
ACQUIRE_LOCK_TIMEOUT_MS = 1000
_ACQUIRE = Sql(
    f"SET LOCAL lock_timeout = {ACQUIRE_LOCK_TIMEOUT_MS};"
    " INSERT INTO chat_leases AS l (chat_id, node_id, epoch)"
    " SELECT :chat, :node, 1 WHERE EXISTS (SELECT 1 FROM chats WHERE id = :chat)"
    " ON CONFLICT (chat_id) DO UPDATE"
    " SET node_id = EXCLUDED.node_id,"
    " epoch = CASE WHEN l.node_id = EXCLUDED.node_id THEN l.epoch ELSE l.epoch + 1 END,"
    " acquired_at = CASE WHEN l.node_id = EXCLUDED.node_id THEN l.acquired_at ELSE now() END"
    " WHERE l.node_id = EXCLUDED.node_id OR NOT EXISTS ("
    " SELECT 1 FROM cluster_nodes n WHERE n.node_id = l.node_id AND n.expires_at > now()"
    " AND (n.nats_ok OR NOT CAST(:nats AS boolean)))"
    " RETURNING node_id, epoch"
)
_LEASE = Sql("SELECT node_id, epoch FROM chat_leases WHERE chat_id = ?")
_USER_CHATS = Sql("SELECT chat_id FROM chat_members WHERE user_id = ? ORDER BY chat_id")


def _to_node(row: Row) -> Node:
    return Node(
        node_id=row["node_id"],
        role=row["role"],
        protocol=int(row["protocol"]),
        started_at=as_time(row["started_at"]),
        heartbeat_at=as_time(row["heartbeat_at"]),
        expires_at=as_time(row["expires_at"]),
        nats_ok=bool(row["nats_ok"]),
        draining=bool(row["draining"]),
    )


def _to_owner(row: Row | None) -> Owner | None:
    return None if row is None else Owner(row["node_id"], int(row["epoch"]))


# -- operations ----------------------------------------------------------------------------
def register_node(
    node_id: str, role: NodeRole, ttl: float, protocol: int, nats_ok: bool
) -> Op[None]:
    yield q(
        _REGISTER,
        {"node": node_id, "role": role, "protocol": protocol, "ttl": ttl, "nats_ok": nats_ok},
    )


def heartbeat(node_id: str, ttl: float, nats_ok: bool) -> Op[bool]:
    result = yield q(_HEARTBEAT, {"node": node_id, "ttl": ttl, "nats_ok": nats_ok})
    return result.rowcount == 1


def live_nodes() -> Op[list[Node]]:
    return [_to_node(r) for r in (yield q(_LIVE_NODES)).rows]


def release_node(node_id: str) -> Op[bool]:
    return (yield q(_RELEASE, {"node": node_id})).rowcount == 1


def try_acquire_chat(chat_id: int, node_id: str, have_nats: bool) -> Op[Owner | None]:
    """The lease when ``node_id`` holds it after the statement, else None (someone live
    holds it, or the chat does not exist: ``lease_of`` tells which)."""
    params = {"chat": chat_id, "node": node_id, "nats": have_nats}
    return _to_owner(first((yield q(_ACQUIRE, params))))


def lease_of(chat_id: int) -> Op[Owner | None]:
    return _to_owner(first((yield q(_LEASE, (chat_id,)))))


def user_chat_ids(user_id: int) -> Op[list[int]]:
    return [int(r["chat_id"]) for r in (yield q(_USER_CHATS, (user_id,))).rows]


# -- the fenced chat writes ----------------------------------------------------------------
class ChatStore:
    """The chat writes a ``ChatActor`` makes, for one chat, fenced or not, with or without
    the transactional outbox.

    ``fence=None, outbox=False``: each method is exactly the ``Storage`` method of the same
    name (today's SQL, any backend). With a ``Fence`` (PostgreSQL only): each runs
    ``fechatter_fence(chat, node, epoch)`` first, in the same transaction —
    ``insert_messages`` in the same function call of the group commit (one round trip; a
    cross-chat round fences each chat and a moved chat fails alone), every other write as
    ``BEGIN; SELECT fechatter_fence(…)`` in one round trip before its statements. A failed
    fence raises ``ChatMoved`` (another node or epoch holds the lease) or ``NotFound``
    (``chat_not_found``: the chat is gone), and the transaction wrote nothing. A fenced
    store serves only its fence's chat: another ``chat_id`` is a programming error
    (``ValueError``). Reads are not here: they need no fence and stay on ``Storage``.

    ``outbox=True`` (PostgreSQL only, docs/cluster.md §4, migration 0009): each write also
    inserts the events the ``ChatActor`` publishes for it into ``outbox`` in the same
    transaction (none when the write changed nothing, as the actor publishes none),
    numbered gapless per chat from ``chats.last_event_seq``: the chat row is locked right
    after the fence, in the same round trip as ``BEGIN`` (lock order: lease row, chat row,
    then what the write locks), and the rows cost one more statement (``insert_messages``:
    none, its function writes them). The payloads are built here from the write's result,
    as the actor builds them; writes whose payload names the acting user take ``by``
    (``ValueError`` without it). Pass ``events=[]`` to get the rows written (with their
    ``event_seq``), appended after the commit — the publisher sends those.
    """

    # Every write method; the enumerating tests (tests/storage/test_cluster_ownership.py,
    # tests/storage/test_outbox.py) check this against the class and call each one.
    WRITES: tuple[str, ...] = (
        "insert_messages",
        "edit_message",
        "delete_message",
        "add_reaction",
        "remove_reaction",
        "add_chat_members",
        "remove_chat_member",
        "set_chat_member_role",
        "update_chat",
        "mark_read",
        "delete_chat",
    )
    # Its other public coroutine: a lease check that writes nothing (typing, A4 review fix).
    CHECKS: tuple[str, ...] = ("confirm_lease",)

    def __init__(self, storage: SqlStorage, fence: Fence | None, *, outbox: bool = False) -> None:
        if fence is not None and storage.dialect != "postgres":
            raise ValueError("a chat fence needs PostgreSQL (SQLite has no chat leases)")
        if outbox and storage.dialect != "postgres":
            raise ValueError("the outbox needs PostgreSQL (SQLite has no cluster tables)")
        self._storage = storage
        self.fence = fence
        self.outbox = outbox
        # trio.current_time() when the fence last held: built right after the acquire that
        # gave it, then at each fenced write that committed and each ``confirm_lease`` read.
        self.confirmed_at = trio.current_time()

    @property
    def plain(self) -> bool:
        """True when every write is the ``Storage`` method itself (no fence, no outbox)."""
        return self.fence is None and not self.outbox

    async def confirm_lease(self, max_age: float) -> None:
        """Check that the fence still holds without writing (for commands that never write,
        e.g. typing): when it was last confirmed over ``max_age`` seconds ago, one read of the
        chat's ``chat_leases`` row. Raises ``ChatMoved`` when another node or epoch holds it
        (or it is gone), ``Unavailable`` if the database does not answer. No-op unfenced."""
        fence = self.fence
        if fence is None or trio.current_time() - self.confirmed_at < max_age:
            return
        checked = trio.current_time()
        owner = await self._storage._read_op(lease_of(fence.chat_id))
        if owner != Owner(fence.node_id, fence.epoch):
            raise ChatMoved(f"chat {fence.chat_id}: lease moved from epoch {fence.epoch}")
        self.confirmed_at = checked

    def _fence_for(self, chat_id: int) -> Fence:
        assert self.fence is not None
        if chat_id != self.fence.chat_id:
            raise ValueError(f"this store is fenced for chat {self.fence.chat_id}, not {chat_id}")
        return self.fence

    async def _write(
        self,
        chat_id: int,
        op: Op[T],
        build: Callable[[T], Sequence[outbox.NewEvent]],
        sink: list[outbox.OutboxEvent] | None,
    ) -> T:
        fence = None if self.fence is None else self._fence_for(chat_id)
        sent = trio.current_time()
        if not self.outbox:
            assert fence is not None
            value = await self._storage._fenced_write_op(op, fence)
            self.confirmed_at = sent
            return value
        written: list[outbox.OutboxEvent] = []
        result = await self._storage._chat_write_op(
            _with_events(chat_id, op, build, written), chat_id, fence, lock_chat=True
        )
        if fence is not None:
            self.confirmed_at = sent
        if sink is not None:
            sink.extend(written)
        return result

    async def insert_messages(
        self,
        chat_id: int,
        batch: Sequence[NewMessage],
        *,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> list[Inserted]:
        """``Storage.insert_messages``, fenced; with the outbox, per message created (seq
        order) its ``message.created`` and, for a thread reply, its root's
        ``message.updated`` (a ``$ref``: ``outbox.send_events``), in the same call."""
        if self.plain:
            return await self._storage.insert_messages(chat_id, batch)
        fence = None if self.fence is None else self._fence_for(chat_id)
        if not batch:
            return []
        sent = trio.current_time()
        if not self.outbox:
            assert fence is not None
            inserted = await self._storage._fenced_insert_messages(chat_id, batch, fence)
            self.confirmed_at = sent
            return inserted
        results, written = await self._storage._outbox_insert_messages(chat_id, batch, fence)
        if fence is not None:
            self.confirmed_at = sent
        if events is not None:
            events.extend(written)
        return results

    async def edit_message(
        self,
        chat_id: int,
        message_id: int,
        content: str,
        mentions: Sequence[int],
        mentions_channel: bool,
        *,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> Message:
        """``Storage.edit_message``, fenced; outbox: ``message.updated`` (the message)."""
        if self.plain:
            return await self._storage.edit_message(
                chat_id, message_id, content, mentions, mentions_channel
            )
        op = messages.edit_message(chat_id, message_id, content, mentions, mentions_channel)
        return await self._write(
            chat_id, op, lambda m: [(ev.MESSAGE_UPDATED, m.to_json(), ())], events
        )

    async def delete_message(
        self, chat_id: int, message_id: int, *, events: list[outbox.OutboxEvent] | None = None
    ) -> Deleted:
        """``Storage.delete_message``, fenced; outbox: ``message.deleted`` and, for a
        reply, its root's ``message.updated``."""
        if self.plain:
            return await self._storage.delete_message(chat_id, message_id)

        def build(d: Deleted) -> list[outbox.NewEvent]:
            t = d.tombstone
            out: list[outbox.NewEvent] = [
                (ev.MESSAGE_DELETED, {"id": t.id, "chat_id": t.chat_id, "seq": t.seq}, ())
            ]
            if d.root is not None:
                out.append((ev.MESSAGE_UPDATED, d.root.to_json(), ()))
            return out

        return await self._write(
            chat_id, messages.delete_message(chat_id, message_id), build, events
        )

    async def add_reaction(
        self,
        chat_id: int,
        message_id: int,
        user_id: int,
        emoji: str,
        max_distinct: int,
        *,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> bool:
        """``Storage.add_reaction``, fenced; outbox: ``reaction.added`` when it changed."""
        if self.plain:
            return await self._storage.add_reaction(
                chat_id, message_id, user_id, emoji, max_distinct
            )
        op = reactions.add_reaction(chat_id, message_id, user_id, emoji, max_distinct)
        build = _reaction(ev.REACTION_ADDED, chat_id, message_id, user_id, emoji)
        return await self._write(chat_id, op, build, events)

    async def remove_reaction(
        self,
        chat_id: int,
        message_id: int,
        user_id: int,
        emoji: str,
        *,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> bool:
        """``Storage.remove_reaction``, fenced; outbox: ``reaction.removed`` when it
        changed."""
        if self.plain:
            return await self._storage.remove_reaction(chat_id, message_id, user_id, emoji)
        op = reactions.remove_reaction(chat_id, message_id, user_id, emoji)
        build = _reaction(ev.REACTION_REMOVED, chat_id, message_id, user_id, emoji)
        return await self._write(chat_id, op, build, events)

    async def add_chat_members(
        self,
        chat_id: int,
        user_ids: Sequence[int],
        role: Role,
        *,
        by: int | None = None,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> list[Member]:
        """``Storage.add_chat_members``, fenced; outbox: ``chat.member_added`` (``by``) when
        someone was added, with the added users to ``notify``."""
        if self.plain:
            return await self._storage.add_chat_members(chat_id, user_ids, role)
        actor = self._by(by)

        def build(added: list[Member]) -> list[outbox.NewEvent]:
            if not added:
                return []
            ids = [m.user_id for m in added]
            data = {"chat_id": chat_id, "user_ids": ids, "by": actor}
            return [(ev.MEMBER_ADDED, data, tuple(ids))]

        op = chats.add_chat_members(chat_id, user_ids, role)
        return await self._write(chat_id, op, build, events)

    async def remove_chat_member(
        self,
        chat_id: int,
        user_id: int,
        new_owner_id: int | None,
        *,
        by: int | None = None,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> None:
        """``Storage.remove_chat_member``, fenced; outbox: ``chat.member_removed`` (``by``)."""
        if self.plain:
            return await self._storage.remove_chat_member(chat_id, user_id, new_owner_id)
        data = {"chat_id": chat_id, "user_id": user_id, "by": self._by(by)}
        op = chats.remove_chat_member(chat_id, user_id, new_owner_id)
        await self._write(chat_id, op, lambda _: [(ev.MEMBER_REMOVED, data, ())], events)

    async def set_chat_member_role(
        self,
        chat_id: int,
        user_id: int,
        role: Role,
        *,
        by: int | None = None,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> Member:
        """``Storage.set_chat_member_role``, fenced; outbox: ``chat.member_updated``
        (``by``) when the role changed (the role before is read in the transaction)."""
        if self.plain:
            return await self._storage.set_chat_member_role(chat_id, user_id, role)
        actor = self._by(by)
        if not self.outbox:
            return await self._write(
                chat_id, chats.set_chat_member_role(chat_id, user_id, role), _none, events
            )

        def op() -> Op[tuple[Role | None, Member]]:
            before = yield from chats.chat_member_role(chat_id, user_id)
            return before, (yield from chats.set_chat_member_role(chat_id, user_id, role))

        def build(result: tuple[Role | None, Member]) -> list[outbox.NewEvent]:
            before, member = result
            if member.role is before:
                return []
            data = {"chat_id": chat_id, "user_id": user_id, "role": member.role.value, "by": actor}
            return [(ev.MEMBER_UPDATED, data, ())]

        return (await self._write(chat_id, op(), build, events))[1]

    async def update_chat(
        self,
        chat_id: int,
        *,
        name: str | None = None,
        description: str | None = None,
        by: int | None = None,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> ChatRecord:
        """``Storage.update_chat``, fenced; outbox: ``chat.updated``, the chat as ``by``
        sees it (read in the transaction, as the actor reads it after)."""
        if self.plain:
            return await self._storage.update_chat(chat_id, name=name, description=description)
        viewer = self._by(by)
        if not self.outbox:
            return await self._write(
                chat_id, chats.update_chat(chat_id, name, description), _none, events
            )

        def op() -> Op[tuple[ChatRecord, Chat | None]]:
            record = yield from chats.update_chat(chat_id, name, description)
            return record, (yield from chats.get_chat_view(chat_id, viewer))

        def build(result: tuple[ChatRecord, Chat | None]) -> list[outbox.NewEvent]:
            view = result[1]
            return [] if view is None else [(ev.CHAT_UPDATED, view.to_event_json(), ())]

        return (await self._write(chat_id, op(), build, events))[0]

    async def mark_read(
        self,
        chat_id: int,
        user_id: int,
        message_id: int,
        *,
        events: list[outbox.OutboxEvent] | None = None,
    ) -> bool:
        """``Storage.mark_read``, fenced; outbox: ``read`` when the marker moved."""
        if self.plain:
            return await self._storage.mark_read(chat_id, user_id, message_id)
        data = {"chat_id": chat_id, "user_id": user_id, "message_id": message_id}
        op = messages.mark_read(chat_id, user_id, message_id)
        return await self._write(
            chat_id, op, lambda moved: [(ev.READ, data, ())] if moved else [], events
        )

    async def delete_chat(
        self,
        chat_id: int,
        *,
        events: list[outbox.OutboxEvent] | None = None,
        notify: Sequence[int] = (),
    ) -> None:
        """``Storage.delete_chat``, fenced (the lease row goes with the chat, ON DELETE
        CASCADE, after the fence locked it: lease row, then chat row, as everywhere);
        outbox: ``chat.deleted``, numbered before the chat row (and its counter) goes.
        ``notify``: the members at deletion; the publisher sends each a departure notice
        (resume across nodes, docs/cluster.md "Built: C3")."""
        if self.plain:
            return await self._storage.delete_chat(chat_id)
        if not self.outbox:
            await self._write(chat_id, chats.delete_chat(chat_id), _none, events)
            return

        # The event first: the chat row holds the counter and goes with the DELETE.
        sink: list[outbox.OutboxEvent] = []

        def op() -> Op[None]:
            new: list[outbox.NewEvent] = [(ev.CHAT_DELETED, {"id": chat_id}, tuple(notify))]
            sink.extend((yield from outbox.append(chat_id, new)))
            yield from chats.delete_chat(chat_id)

        await self._write(chat_id, op(), _none, None)
        if events is not None:
            events.extend(sink)

    def _by(self, by: int | None) -> int:
        if by is None:
            if self.outbox:
                raise ValueError("`by` (the acting user) is needed for the outbox event")
            return 0
        return by


def _none(_: object) -> list[outbox.NewEvent]:
    return []


def _reaction(
    name: str, chat_id: int, message_id: int, user_id: int, emoji: str
) -> Callable[[bool], list[outbox.NewEvent]]:
    data = {"chat_id": chat_id, "message_id": message_id, "emoji": emoji, "user_id": user_id}
    return lambda changed: [(name, data, ())] if changed else []


def _with_events(
    chat_id: int,
    op: Op[T],
    build: Callable[[T], Sequence[outbox.NewEvent]],
    written: list[outbox.OutboxEvent],
) -> Op[T]:
    """``op``, then its events (``build`` of its result) appended to the chat's outbox in
    the same transaction; ``written`` receives the rows."""
    result = yield from op
    written.extend((yield from outbox.append(chat_id, build(result))))
    return result


# -- the cluster's storage API -------------------------------------------------------------
class ClusterStore:
    """Node liveness and chat leases on a ``PostgresStorage`` (its pool, its bounds, its
    error translation: every method raises ``Unavailable`` when the database does not answer
    within ``operation_timeout``). TTLs are seconds (float) on the database's clock."""

    def __init__(self, storage: PostgresStorage, beat: PostgresStorage | None = None) -> None:
        """``beat``: where the node's own row is written (register, heartbeat, release) — a
        storage on a reserved connection (``PostgresStorage.reserved``) so a pool full of
        writes never delays a beat; default ``storage``."""
        self.storage = storage
        self._beat = beat or storage

    async def register_node(
        self,
        node_id: str,
        role: NodeRole,
        ttl: float,
        *,
        protocol: int = PROTOCOL,
        nats_ok: bool = True,
    ) -> None:
        """Insert the node's row, live for ``ttl`` seconds. ``Conflict`` (``node_id_taken``)
        if the id was ever registered: ids are per boot and never revived. ``ValueError``
        for an unknown role or a TTL that is not positive."""
        if role not in ROLES:
            raise ValueError(f"unknown node role {role!r}")
        if not ttl > 0:
            raise ValueError("ttl must be positive seconds")
        op = register_node(node_id, role, ttl, protocol, nats_ok)
        await self._beat._write_op(op, one_statement=True)

    async def heartbeat(self, node_id: str, ttl: float, *, nats_ok: bool = True) -> bool:
        """Extend a live node's row to ``now() + ttl`` and record ``nats_ok``. False: the row
        had expired (or was released) and is not extended — the node must self-fence (drop
        every chat it owns) and register again under a new id."""
        return await self._beat._write_op(heartbeat(node_id, ttl, nats_ok), one_statement=True)

    async def live_nodes(self) -> list[Node]:
        """The nodes whose rows have not expired, by id."""
        return await self._beat._read_op(live_nodes())

    async def release_node(self, node_id: str) -> bool:
        """End a node's row now (graceful stop, after draining): its chats can be acquired
        at once by others, at the next epoch. The row stays (expired, ``draining``); a later
        ``heartbeat`` of that id answers False. False if it was not live."""
        return await self._beat._write_op(release_node(node_id), one_statement=True)

    async def acquire_chat(
        self, chat_id: int, node_id: str, *, have_nats: bool = True
    ) -> Owner | None:
        """The chat's owner after trying to take it for ``node_id``.

        ``Owner(node_id, epoch)`` with our id: we hold it (new: epoch 1; taken from a node
        that is not live, or with ``have_nats`` from a live one whose NATS is down: the
        previous epoch + 1, after every in-flight fenced write of the old owner committed;
        already ours: unchanged). Another node's id: that live node holds it. None: the chat
        does not exist. One round trip when we get it; a second read otherwise."""
        owner = await self.storage._write_op(
            try_acquire_chat(chat_id, node_id, have_nats), one_statement=True
        )
        if owner is not None:
            return owner
        return await self.storage._read_op(lease_of(chat_id))

    async def lease(self, chat_id: int) -> Owner | None:
        """The chat's stored lease, live owner or not; None if it has none."""
        return await self.storage._read_op(lease_of(chat_id))

    async def user_chat_ids(self, user_id: int) -> list[int]:
        """Ids of every chat ``user_id`` is a member of, in all workspaces (the chats a node
        routes events of when the user connects to it)."""
        return await self.storage._read_op(user_chat_ids(user_id))

    async def create_chat(
        self,
        workspace_id: int,
        type: ChatType,
        name: str | None,
        description: str | None,
        owner_id: int,
        member_ids: Sequence[int],
    ) -> Chat:
        """``Storage.create_chat`` with ``chat.created`` (the owner's view, as one process
        sends it) written to the outbox as the chat's event 1 in the same transaction,
        ``notify`` = the members: the publisher stores a join notice for each before it, so
        their nodes subscribe and read the chat from its first event, even if this node
        dies right after the commit. Returns the owner's view. Raises what
        ``create_chat`` raises (``Conflict`` ``single_exists``, …), writing nothing."""

        def op() -> Op[Chat]:
            record = yield from chats.create_chat(
                workspace_id, type, name, description, owner_id, member_ids
            )
            view = yield from chats.get_chat_view(record.id, owner_id)
            if view is None:  # pragma: no cover - created in this transaction
                raise AssertionError("a chat created in this transaction is not readable")
            new: list[outbox.NewEvent] = [
                (ev.CHAT_CREATED, view.to_event_json(), tuple(int(m) for m in member_ids))
            ]
            yield from outbox.append(record.id, new)
            return view

        return await self.storage._write_op(op())

    async def delete_workspace(self, workspace_id: int) -> list[int]:
        """``Storage.delete_workspace`` with each chat's ``chat.deleted`` written to the
        outbox in the same transaction (after the chats' lease rows are locked, before the
        chats go): members on every node are told even if this node dies right after the
        commit. Returns the deleted chats' ids (ascending)."""
        return await self.storage._write_op(
            accounts.delete_workspace(workspace_id, "postgres", outbox=True)
        )

    def chat_store(self, fence: Fence | None, *, outbox: bool = False) -> ChatStore:
        """The chat writes of ``fence.chat_id`` fenced by ``fence`` (None: unfenced), with
        their events in the outbox when ``outbox``."""
        return ChatStore(self.storage, fence, outbox=outbox)
