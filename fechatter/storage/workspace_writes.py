"""Workspace writes with their events (issue 14, SPEC §7) — both backends.

Each operation here makes one workspace change and returns it with the events it causes
(``WorkspaceEvent``: name, payload, recipients), computed inside the write's transaction, so
the recipients are the members as of the commit. With ``outbox=True`` (PostgreSQL, cluster
mode) the events also go into ``outbox`` as topic ``'w'`` rows in the same transaction,
numbered gapless per workspace from ``workspaces.last_event_seq`` by ``UPDATE … RETURNING``:
the workspace row lock makes ``event_seq`` order the commit order without an owner process
(docs/cluster.md §4). Operations never open, commit or roll back anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from fechatter import events
from fechatter.errors import Conflict, NotFound
from fechatter.models import Role, Workspace, WorkspaceMember
from fechatter.storage import accounts
from fechatter.storage.base import Storage
from fechatter.storage.sql import Dialect, Op, Sql, q

if TYPE_CHECKING:
    from fechatter.storage.core import SqlStorage

T = TypeVar("T")

WORKSPACE_UPDATED = "workspace.updated"
WORKSPACE_DELETED = "workspace.deleted"
WORKSPACE_MEMBER_ADDED = "workspace.member_added"
WORKSPACE_MEMBER_REMOVED = "workspace.member_removed"
WORKSPACE_MEMBER_UPDATED = "workspace.member_updated"


@dataclass(frozen=True, slots=True)
class WorkspaceEvent:
    """One committed workspace change: the event ``name``, its payload ``data`` and the
    users it goes ``to`` (the members at the commit, plus the affected user)."""

    workspace_id: int
    name: str
    data: dict[str, Any]
    to: tuple[int, ...]


_MEMBER_IDS = Sql("SELECT user_id FROM workspace_members WHERE workspace_id = ? ORDER BY user_id")
_SET_ROLE = Sql(
    "UPDATE workspace_members SET role = ? WHERE workspace_id = ? AND user_id = ? AND role <> ?"
)
# PostgreSQL only (cluster mode): the workspace's next events, numbered from its counter.
_APPEND = Sql(
    "WITH s AS (UPDATE workspaces SET last_event_seq = last_event_seq + :k WHERE id = :ws"
    " RETURNING last_event_seq)"
    " INSERT INTO outbox (topic, topic_id, event_seq, name, data, notify)"
    " SELECT 'w', :ws, s.last_event_seq - :k + e.k, e.name, CAST(e.data AS json),"
    " CAST(e.notify AS bigint[])"
    " FROM s, unnest(CAST(:names AS text[]), CAST(:datas AS text[]), CAST(:notify AS text[]))"
    " WITH ORDINALITY AS e (name, data, notify, k)"
)


async def commit(storage: Storage, op: Op[T]) -> T:
    """Run ``op`` in one write transaction of ``storage`` (a ``SqlStorage``, as every
    backend is)."""
    return await cast("SqlStorage", storage)._write_op(op)


async def read(storage: Storage, op: Op[T]) -> T:
    """Run ``op`` as a read of ``storage`` (a ``SqlStorage``)."""
    return await cast("SqlStorage", storage)._read_op(op)


def dialect_of(storage: Storage) -> Dialect:
    """The SQL dialect of ``storage`` (a ``SqlStorage``)."""
    return cast("SqlStorage", storage).dialect


def member_ids(workspace_id: int) -> Op[list[int]]:
    """The workspace's member ids, ascending."""
    result = yield q(_MEMBER_IDS, (workspace_id,))
    return [int(r["user_id"]) for r in result.rows]


def record(workspace_id: int, new: Sequence[WorkspaceEvent], outbox: bool) -> Op[None]:
    """With ``outbox``: insert ``new`` as the workspace's next outbox rows (``notify`` = the
    recipients: the publisher stores one copy on each recipient's user subject). The
    workspace row must still exist (a deletion records before deleting)."""
    if not outbox or not new:
        return
    yield q(
        _APPEND,
        {
            "ws": workspace_id,
            "k": len(new),
            "names": [e.name for e in new],
            "datas": [events.dumps(e.data).decode() for e in new],
            "notify": ["{" + ",".join(str(int(u)) for u in e.to) + "}" for e in new],
        },
    )


def _with(
    workspace_id: int, result: Any, new: list[WorkspaceEvent], outbox: bool
) -> Op[tuple[Any, list[WorkspaceEvent]]]:
    yield from record(workspace_id, new, outbox)
    return result, new


def update(
    workspace_id: int, name: str | None, description: str | None, *, outbox: bool
) -> Op[tuple[Workspace, list[WorkspaceEvent]]]:
    """``accounts.update_workspace`` + ``workspace.updated`` (Workspace) to every member."""
    ws = yield from accounts.update_workspace(workspace_id, name, description)
    to = tuple((yield from member_ids(workspace_id)))
    new = [WorkspaceEvent(workspace_id, WORKSPACE_UPDATED, ws.to_json(), to)]
    return (yield from _with(workspace_id, ws, new, outbox))


def delete(
    workspace_id: int, dialect: Dialect, *, outbox: bool
) -> Op[tuple[list[int], list[WorkspaceEvent]]]:
    """``accounts.delete_workspace`` (chat ids) + ``workspace.deleted`` ``{id}`` to every
    member at the deletion; in cluster mode also each chat's ``chat.deleted`` row."""
    to = tuple((yield from member_ids(workspace_id)))
    new = [WorkspaceEvent(workspace_id, WORKSPACE_DELETED, {"id": workspace_id}, to)]

    def before_delete() -> Op[None]:
        yield from record(workspace_id, new, outbox)

    chat_ids = yield from accounts.delete_workspace(
        workspace_id, dialect, outbox=outbox, before_delete=before_delete
    )
    return chat_ids, new


def add_member(
    workspace_id: int, user_id: int, role: Role, *, outbox: bool
) -> Op[tuple[WorkspaceMember, list[WorkspaceEvent]]]:
    """``accounts.add_workspace_member`` (``Conflict(already_member)``) +
    ``workspace.member_added`` ``{workspace_id, user, role}`` to every member, the new one
    included."""
    member = yield from accounts.add_workspace_member(workspace_id, user_id, role)
    return (yield from _member_added(workspace_id, member, outbox))


def _member_added(
    workspace_id: int, member: WorkspaceMember, outbox: bool
) -> Op[tuple[WorkspaceMember, list[WorkspaceEvent]]]:
    to = tuple((yield from member_ids(workspace_id)))
    data = {"workspace_id": workspace_id, "user": member.user.to_json(), "role": member.role.value}
    new = [WorkspaceEvent(workspace_id, WORKSPACE_MEMBER_ADDED, data, to)]
    return (yield from _with(workspace_id, member, new, outbox))


def remove_member(
    workspace_id: int, user_id: int, *, outbox: bool
) -> Op[tuple[bool, list[WorkspaceEvent]]]:
    """Remove the membership only (chats are the caller's business) +
    ``workspace.member_removed`` ``{workspace_id, user_id}`` to the members before the
    removal (the removed user included); no event if they were not a member."""
    before = yield from member_ids(workspace_id)
    removed = yield from accounts.remove_workspace_member(workspace_id, user_id)
    if not removed:
        return False, []
    data = {"workspace_id": workspace_id, "user_id": user_id}
    new = [WorkspaceEvent(workspace_id, WORKSPACE_MEMBER_REMOVED, data, tuple(before))]
    return (yield from _with(workspace_id, True, new, outbox))


def set_member_role(
    workspace_id: int, user_id: int, role: Role, *, outbox: bool
) -> Op[tuple[bool, list[WorkspaceEvent]]]:
    """Set a member's role (``NotFound(member_not_found)`` for a non-member; the owner's
    role never changes here: ``Conflict(owner_role)``) + ``workspace.member_updated``
    ``{workspace_id, user_id, role}`` to every member. The same role again: no change, no
    event (False)."""
    current = yield from accounts.workspace_role(workspace_id, user_id)
    if current is None:
        raise NotFound("member not found", code="member_not_found")
    if current is Role.OWNER:
        raise Conflict("the owner's role cannot change", code="owner_role")
    changed = yield q(_SET_ROLE, (role.value, workspace_id, user_id, role.value))
    if changed.rowcount == 0:
        return False, []
    to = tuple((yield from member_ids(workspace_id)))
    data = {"workspace_id": workspace_id, "user_id": user_id, "role": role.value}
    new = [WorkspaceEvent(workspace_id, WORKSPACE_MEMBER_UPDATED, data, to)]
    return (yield from _with(workspace_id, True, new, outbox))


def join(
    workspace_id: int, user_id: int, role: Role, *, outbox: bool
) -> Op[tuple[WorkspaceMember | None, list[WorkspaceEvent]]]:
    """Add the user unless already a member (then ``(None, [])``): an invitation's join."""
    if (yield from accounts.workspace_role(workspace_id, user_id)) is not None:
        return None, []
    member = yield from accounts.add_workspace_member(workspace_id, user_id, role)
    return (yield from _member_added(workspace_id, member, outbox))


# -- the publisher's side (cluster mode; fechatter/cluster/publisher.py) --------------------
@dataclass(frozen=True, slots=True)
class PendingWorkspaceEvent:
    """A workspace outbox row as the publisher sends it: ``payload`` the stored JSON text
    verbatim, ``to`` the recipients (the row's ``notify``)."""

    workspace_id: int
    event_seq: int
    name: str
    payload: bytes
    to: tuple[int, ...]


_TRY_LOCK = Sql("SELECT pg_try_advisory_xact_lock(hashtextextended(?, 0)) AS locked")
_BATCH = Sql(
    "SELECT event_seq, name, CAST(data AS text) AS data, notify FROM outbox"
    " WHERE topic = 'w' AND topic_id = ? ORDER BY event_seq LIMIT ?"
)
_REMOVE = Sql("DELETE FROM outbox WHERE topic = 'w' AND topic_id = ? AND event_seq = ANY(?)")
_STALE = Sql(
    "SELECT topic_id FROM outbox WHERE topic = 'w'"
    " AND created_at < now() - make_interval(secs => ?)"
    " GROUP BY topic_id ORDER BY min(created_at) LIMIT ?"
)


def lock_key(workspace_id: int) -> str:
    """The advisory-lock key text of a workspace topic (``w:<id>``, docs/cluster.md §4)."""
    return f"w:{workspace_id}"


def claim(workspace_id: int, limit: int) -> Op[list[PendingWorkspaceEvent] | None]:
    """Inside the caller's transaction: take the workspace's publisher lock (never waits)
    and read its first ``limit`` rows by ``event_seq``; ``None`` when another transaction
    holds the lock (it re-reads until no rows remain, so it publishes these too)."""
    locked = yield q(_TRY_LOCK, (lock_key(workspace_id),))
    if not locked.rows[0]["locked"]:
        return None
    result = yield q(_BATCH, (workspace_id, limit))
    return [
        PendingWorkspaceEvent(
            workspace_id,
            int(r["event_seq"]),
            r["name"],
            str(r["data"]).encode(),
            tuple(int(u) for u in r["notify"]),
        )
        for r in result.rows
    ]


def remove(workspace_id: int, seqs: Sequence[int]) -> Op[int]:
    """Delete the workspace's rows ``seqs`` (published and acknowledged)."""
    result = yield q(_REMOVE, (workspace_id, list(seqs)))
    return result.rowcount


def stale(age: float, limit: int) -> Op[list[int]]:
    """Up to ``limit`` workspaces with rows older than ``age`` seconds, oldest first."""
    result = yield q(_STALE, (age, limit))
    return [int(r["topic_id"]) for r in result.rows]
