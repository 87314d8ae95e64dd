"""Workspace events on the cluster (issue 14, SPEC §7; docs/cluster.md "Built: workspace
events on the cluster").

A workspace write commits its events as outbox rows of topic ``'w'`` (numbered from
``workspaces.last_event_seq`` in its transaction, ``storage.workspace_writes``); right after
the commit this node's ``OutboxPublisher.publish_workspace`` stores one copy of each event
on each recipient's user subject ``<prefix>.ev.user.<uid>`` — the subject every node with a
stream of that user already reads (join notices, C3) and a durable replay already reads
first — and deletes the rows after their acks. The sweeper publishes rows a crash or an
outage left behind. This module never touches sockets or SQL itself.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import trio

from fechatter.bus.base import BusState
from fechatter.cluster.events import RoutedEvent, WireEvent
from fechatter.cluster.publisher import OutboxPublisher
from fechatter.errors import Unavailable
from fechatter.storage import workspace_writes as writes
from fechatter.storage.postgres import PostgresStorage
from fechatter.storage.sql import Op
from fechatter.storage.workspace_writes import WorkspaceEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

PUBLISH_WAIT = 1.0  # seconds a write's answer waits for its events to be stored (then answers)


class ClusterWorkspaceEvents:
    """``WorkspaceEventSink`` of a cluster node: rows in the outbox, then published."""

    outbox = True

    def __init__(self, storage: PostgresStorage, publisher: OutboxPublisher) -> None:
        self._storage = storage
        self._publisher = publisher

    async def write(self, workspace_id: int, op: Op[tuple[T, list[WorkspaceEvent]]]) -> T:
        result, new = await writes.commit(self._storage, op)
        if new:
            await self.published(workspace_id)
        return result

    async def delete(self, workspace_id: int) -> list[int]:
        chat_ids = await self.write(
            workspace_id, writes.delete(workspace_id, "postgres", outbox=True)
        )
        for chat_id in chat_ids:
            self._publisher.notify(chat_id)
        return chat_ids

    async def published(self, workspace_id: int) -> None:
        """Publish the workspace's rows now, waiting at most ``PUBLISH_WAIT`` seconds (as
        a chat write answers after its events are stored); at once while NATS is down.
        Whatever is not published here (NATS down, another node publishing, too slow) the
        holder or the sweeper publishes: the rows stay until acknowledged."""
        if self._publisher.bus_state is not BusState.CONNECTED:
            return
        with trio.move_on_after(PUBLISH_WAIT):
            try:
                await self._publisher.publish_workspace(workspace_id)
            except Unavailable as exc:
                log.warning("workspace %d: events left to the sweeper: %s", workspace_id, exc)


def is_workspace_event(name: str) -> bool:
    """Whether a message of a user subject (by its ``Fx-Event``) is a workspace event."""
    return name.startswith("workspace.")


def routed(name: str, data: dict[str, Any], event_seq: int, stream_seq: int) -> RoutedEvent:
    """A workspace event read from a user subject, as the hub takes a stored event: its
    ``stream_seq`` is the id's ``S`` (and the ring's key), no chat."""
    event = RoutedEvent(WireEvent(0, event_seq, stream_seq, name, data))
    event.chat_id = None
    event.seq = stream_seq
    return event
