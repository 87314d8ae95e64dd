"""What the actors need from the layers above them, as Protocols (trio's ``abc.py`` idea).

The user actors push events into live streams, but streams are sockets and belong to the
realtime transport, a higher layer. The actors depend on this small protocol instead; the
realtime listener's ``Stream`` implements it. This module must never import a transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fechatter.close_reasons import CloseReason
from fechatter.events import Event


class StreamPort(Protocol):
    """One live stream of a user, as the fan-out sees it."""

    user_id: int
    security_version: int  # of the token that opened it: a raise closes the stream

    def push_event(self, event: Event) -> object:
        """Queue ``event`` for the peer without blocking (a full outbox fails the stream);
        what it returns (how the push went) is the transport's business."""

    def fail(self, reason: CloseReason) -> None:
        """Mark the stream for closing with ``reason`` and wake its connection (no await)."""


@dataclass(frozen=True, slots=True)
class StreamState:
    """Cluster mode: the event stream as read now (docs/cluster.md §5). ``incarnation`` is
    the ``E`` of event ids ``<E>-<S>`` (the same on every node, new when the stream is
    recreated); ``first_seq``/``last_seq`` the oldest and newest stored stream sequences."""

    incarnation: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class Replay:
    """Cluster mode: a user's events after a resume point, read from the stream.

    ``events``: in stream order, each with ``seq`` = its stream sequence (``S > after``);
    ``through``: a stream sequence the read covered at least up to (the stream's
    ``last_seq`` when it began); ``resync``: the SPEC reason when the history cannot be
    proved (``events`` is then empty)."""

    events: list[Event] = field(default_factory=list)
    through: int = 0
    resync: str | None = None


class UserRouting(Protocol):
    """Cluster mode: what the ``UserHub`` tells the node's event routing about its users
    (docs/cluster.md §4 "Subscriptions"). Implemented by ``fechatter.cluster.wiring``."""

    async def user_arriving(self, user_id: int) -> None:
        """``user_id`` opens a stream here and has no UserActor yet: route their chats'
        events to this node. Returns once the routing is live (bounded by the implementer)."""

    def user_gone(self, user_id: int) -> None:
        """``user_id``'s UserActor was dropped (no stream for ``resume_window``): stop
        routing their events here. Synchronous: called from the actor's cleanup."""

    async def stream_state(self) -> StreamState:
        """The event stream's incarnation and bounds now. Raises ``Unavailable``."""

    async def replay(self, user_id: int, after_seq: int) -> Replay:
        """``user_id``'s events with stream sequence > ``after_seq`` from the stream (their
        chats, the ones they left after it up to their departure, their announcements).
        Bounded (a cap, and a limit of replays at once). Raises ``Unavailable``."""


class PresencePort(Protocol):
    """Cluster mode: where the ``UserHub`` records that a user is present on this node, so
    presence and online users are cluster-wide (docs/cluster.md §6). Implemented by
    ``fechatter.cluster.presence``. Best-effort: neither method raises for an unavailable
    database or NATS (logged, retried by the implementer); only cancellation propagates."""

    async def sync(self, user_id: int, present: bool) -> None:
        """Make the cluster's record of ``user_id`` on this node match ``present`` (a
        stream here, or within the grace) and announce a cluster-wide change to the user's
        online presence peers. Bounded in time by the implementer."""

    async def online(self, user_ids: Sequence[int]) -> set[int]:
        """Which of ``user_ids`` are online on any node. Raises ``Unavailable`` when that
        cannot be known (the database does not answer)."""

    def announce(self, user_id: int) -> None:
        """``user_id``'s chosen status changed: if they are online anywhere, announce their
        shown status to their online presence peers and their own streams on every node.
        Never blocks (queued; a full queue drops it, counted)."""
