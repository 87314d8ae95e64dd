"""Workspace events: how a workspace write is committed and its events pushed (SPEC §7).

``WorkspaceEventSink`` is the port; ``LocalWorkspaceEvents`` is the one-process sink, and
``fechatter.cluster.workspace_events.ClusterWorkspaceEvents`` the cluster's (outbox rows,
published on each recipient's user subject).

**Order per workspace** (decision, docs/api.md "Workspace events and invitations"): one
writer per workspace *per process* — a ``trio.Lock`` per workspace held across the write's
transaction and the push — so two concurrent changes of one workspace reach every stream in
commit order; in cluster mode the order comes from the workspace's ``last_event_seq``
(``UPDATE … RETURNING`` in the write's transaction: the row lock makes the number order the
commit order) and one publisher at a time per workspace (an advisory lock). No version is
added to the payloads: SPEC §7's shapes stay as they are, and per-stream event ids already
give a client the order and the resume point. Persist, then push: events are built inside
the transaction from what it wrote and pushed only after it committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import trio

from fechatter.events import Event, EventSink
from fechatter.storage import Storage
from fechatter.storage import workspace_writes as writes
from fechatter.storage.sql import Op
from fechatter.storage.workspace_writes import WorkspaceEvent

T = TypeVar("T")


class WorkspaceEventSink(Protocol):
    """Commits workspace writes and delivers their events."""

    @property
    def outbox(self) -> bool:
        """Whether writes must put their events into the outbox (cluster mode)."""
        ...

    async def write(self, workspace_id: int, op: Op[tuple[T, list[WorkspaceEvent]]]) -> T:
        """Run ``op`` (a ``workspace_writes`` operation built with ``outbox=self.outbox``)
        in one write transaction, then deliver its events; returns its result. Raises what
        the operation and storage raise (nothing is delivered then)."""
        ...

    async def delete(self, workspace_id: int) -> list[int]:
        """Delete the workspace (its chats go with it) with ``workspace.deleted`` to its
        members; returns the deleted chats' ids."""
        ...


@dataclass(eq=False)
class _Slot:
    lock: trio.Lock = field(default_factory=trio.Lock)
    users: int = 0


class WorkspaceLocks:
    """One ``trio.Lock`` per workspace, kept only while someone holds or waits for it (so
    the table is bounded by the concurrent writes, not by the workspaces)."""

    def __init__(self) -> None:
        self._slots: dict[int, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @asynccontextmanager
    async def hold(self, workspace_id: int) -> AsyncIterator[None]:
        """Hold the workspace's lock for the block (waiting for the holder, FIFO)."""
        slot = self._slots.get(workspace_id)
        if slot is None:
            slot = self._slots[workspace_id] = _Slot()
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[workspace_id]


class LocalWorkspaceEvents:
    """One process: commit, then ``sink.publish`` each event to its recipients (the hub
    stamps ids and keeps them in each user's replay ring, so they resume like chat
    events), all under the workspace's lock."""

    outbox = False

    def __init__(self, storage: Storage, sink: EventSink) -> None:
        self._storage = storage
        self._sink = sink
        self.locks = WorkspaceLocks()

    async def write(self, workspace_id: int, op: Op[tuple[T, list[WorkspaceEvent]]]) -> T:
        async with self.locks.hold(workspace_id):
            result, new = await writes.commit(self._storage, op)
            for e in new:
                self._sink.publish(e.to, Event(e.name, e.data))
        return result

    async def delete(self, workspace_id: int) -> list[int]:
        dialect = writes.dialect_of(self._storage)
        return await self.write(workspace_id, writes.delete(workspace_id, dialect, outbox=False))
