"""The ``Bus`` protocol the cluster talks to, and the trio-side ``Subscription`` buffer.

Backend-neutral: nothing here knows NATS. A backend (``nats.py``) feeds a ``Subscription``
through ``_offer`` / ``_mark_gap`` on the trio thread; the consumer iterates it and gets
``Message`` items and, when something was dropped, one ``Gap`` item at the point of loss.
This module must never import a transport, an actor or a driver.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from fechatter.errors import Unavailable


class NoResponders(Unavailable):
    """A request found no responder on its subject (NATS 503 status)."""

    default_code = "bus_no_responders"


class RequestTimeout(Unavailable):
    """A request got no reply within its timeout."""

    default_code = "bus_timeout"


class BusState(enum.Enum):
    """The connection as the client sees it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"  # lost; the client is retrying, operations raise Unavailable
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message; ``reply`` is the inbox to answer ('' for none)."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] | None = None
    reply: str = ""


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages were dropped here: ``dropped`` of them (≥ 1) after the previous item, or
    ``dropped`` 0: the connection was lost here, so whatever was published until it came
    back never arrived (how many is unknown; ``Subscription.connection_lost``).

    The consumer must re-read from its log from the last message it processed; messages
    after the gap may repeat what it re-reads (drop them by sequence).
    """

    dropped: int


@dataclass(frozen=True, slots=True)
class PublishAck:
    """JetStream's acknowledgement: the stream, the stored sequence, whether it was a repeat."""

    stream: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class JsPublish:
    """One item of ``Bus.js_publish_chains``: ``js_publish(subject, payload, msg_id, headers)``."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] | None = None


ChainResult = tuple[list[PublishAck], Unavailable | None]
"""One chain of ``Bus.js_publish_chains``: the acks of its stored prefix, and the error that
stopped it (None: every item stored)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message read back from a JetStream stream."""

    stream: str
    seq: int
    subject: str
    payload: bytes
    headers: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class StreamPage:
    """One read of several subjects: ``messages`` in stream order, and ``pending``, how many
    more matching messages the stream held after them when the read was made (0: the read
    reached the end of the log as it was then)."""

    messages: list[StoredMessage]
    pending: int


@dataclass(frozen=True, slots=True)
class SubscriptionStatistics:
    buffered: int  # items waiting in the buffer now
    buffer: int  # the bound
    delivered: int  # messages handed to the consumer
    gaps: int  # Gap items produced so far
    dropped: int  # messages dropped in all gaps


_CONNECTION_LOST = Gap(0)  # the marker ``Subscription.connection_lost`` queues


class Subscription:
    """A bounded buffer of one subject's messages, iterated by one consumer task.

    Full case: when a message arrives and ``buffer`` items are already waiting, it is dropped
    and the subscription is in a gap; every later message is dropped too until the consumer
    has taken every buffered message and then the ``Gap`` item. So what the consumer sees is
    always an unbroken prefix, then ``Gap(dropped)``, then live messages again — nothing is
    lost without a ``Gap`` in its place. Iteration ends after ``unsubscribe``.
    """

    def __init__(self, subject: str, buffer: int) -> None:
        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self.subject = subject
        self.buffer = buffer
        # One slot more than ``buffer`` so the Gap marker always fits: messages enter only
        # while fewer than ``buffer`` items wait, the marker once per gap and always last.
        self._send, self._receive = trio.open_memory_channel[Message | Gap](buffer + 1)
        self._closed = False
        self._count = 0
        self._in_gap = 0  # messages dropped in the current gap (0: not in a gap)
        self._delivered = 0
        self._taken = 0  # items (messages and Gap markers) the consumer has received
        self._gaps = 0
        self._dropped = 0
        self.sid: object = None  # the backend's handle
        # Called (on trio) after each item put into the buffer: how a watcher (the node's
        # Sequencer) learns which of its thousands of subscriptions have a backlog.
        self.on_offer: Callable[[Subscription], None] | None = None

    # -- called by the backend on the trio thread ---------------------------------------
    def _offer(self, message: Message) -> None:
        if self._closed:
            return
        if self._in_gap or self._count >= self.buffer:
            self._in_gap += 1
            self._dropped += 1
            if self._in_gap == 1:
                self._gaps += 1
                self._send.send_nowait(Gap(0))  # placeholder; its count is read at receive
                self._count += 1
                if self.on_offer is not None:
                    self.on_offer(self)
            return
        self._count += 1
        self._send.send_nowait(message)
        if self.on_offer is not None:
            self.on_offer(self)

    def _mark_gap(self, dropped: int = 1) -> None:
        """The backend lost messages before they reached ``_offer`` (a slow consumer)."""
        if self._closed:
            return
        self._dropped += dropped
        if not self._in_gap:
            self._gaps += 1
            self._send.send_nowait(Gap(0))
            self._count += 1
            if self.on_offer is not None:
                self.on_offer(self)
        self._in_gap += dropped

    def connection_lost(self) -> None:
        """The backend's connection was lost (called on the trio thread): a ``Gap(0)`` goes
        after the messages waiting, before any the next connection brings. Unlike a drop it
        drops nothing after it: it takes one buffer slot. A gap already waiting covers it;
        a full buffer makes it a drop of one (the marker then reports the later drops too)."""
        if self._closed or self._in_gap:  # a waiting gap marker covers it
            return
        if self._count >= self.buffer:  # full: the marker must be a drop marker
            self._mark_gap(1)
            return
        self._gaps += 1
        self._count += 1
        self._send.send_nowait(_CONNECTION_LOST)
        if self.on_offer is not None:  # a backlog like any item (the Sequencer waits for it)
            self.on_offer(self)

    def _close(self) -> None:
        self._closed = True
        self._send.close()

    # -- the consumer's side ------------------------------------------------------------
    async def receive(self) -> Message | Gap:
        """The next message, or a ``Gap``; raises ``trio.EndOfChannel`` after unsubscribe."""
        item = await self._receive.receive()
        self._count -= 1
        self._taken += 1
        if item is _CONNECTION_LOST:
            return item
        if isinstance(item, Gap):
            dropped, self._in_gap = self._in_gap, 0
            return Gap(dropped)
        self._delivered += 1
        return item

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message | Gap:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    @property
    def offered(self) -> int:
        """Items (messages and Gap markers) put into the buffer so far: the consumer has
        handled everything offered up to now once ``taken`` reaches this value."""
        return self._taken + self._count

    @property
    def taken(self) -> int:
        """Items the consumer has received so far (see ``offered``)."""
        return self._taken

    @property
    def closed(self) -> bool:
        """Unsubscribed: nothing more will be offered."""
        return self._closed

    def statistics(self) -> SubscriptionStatistics:
        """Counters of this subscription (a frozen snapshot)."""
        return SubscriptionStatistics(
            self._count, self.buffer, self._delivered, self._gaps, self._dropped
        )


Handler = Callable[[Message], Awaitable[bytes]]


class Bus(Protocol):
    """What the cluster needs from a message bus. Every method may raise ``Unavailable``
    (not connected, or no answer within the bus's operation timeout); none hangs."""

    @property
    def state(self) -> BusState: ...

    async def wait_state(self, state: BusState) -> None:
        """Return once the connection is in ``state`` (callers bound it with fail_after)."""

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Fire-and-forget publish (at most once). Raises ``Unavailable`` when disconnected."""

    async def subscribe(self, subject: str, *, buffer: int, queue: str = "") -> Subscription:
        """Subscribe to ``subject`` (wildcards ``*`` / ``>``) with a ``buffer``-message bound."""

    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop deliveries; the subscription's iteration ends after its buffered items."""

    async def flush(self) -> None:
        """Return once the server has processed every operation this connection sent before
        the call (a PING/PONG round trip): a ``subscribe`` before it is live at the server,
        so a message published after the return reaches it. Raises ``Unavailable`` when not
        connected or past the bus's operation timeout (docs/cluster.md §4, R5)."""

    async def barrier(self) -> None:
        """Return once every message the connection received before the call has been
        handed to its ``Subscription`` (offered, or counted in a ``Gap``). Local work only
        (no server round trip); raises ``Unavailable`` past the bus's operation timeout."""

    async def request(
        self,
        subject: str,
        payload: bytes,
        within: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and return the reply; ``within`` in seconds.

        Raises ``NoResponders`` when nobody listens on ``subject``, ``RequestTimeout``
        when no reply comes in time, ``Unavailable`` when disconnected.
        """

    async def serve_requests(
        self,
        subject: str,
        handler: Handler,
        *,
        buffer: int,
        queue: str = "",
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer requests on ``subject`` with ``handler`` until cancelled (never returns)."""

    async def ensure_stream(
        self,
        name: str,
        subjects: Sequence[str],
        *,
        max_age: float,
        max_msgs: int,
        max_bytes: int = -1,
        duplicate_window: float = 0.0,
        allow_direct: bool = False,
        republish: tuple[str, str] | None = None,
    ) -> None:
        """Create the JetStream stream or update its limits (``max_age`` in seconds).

        ``max_bytes`` (-1: none); ``duplicate_window`` in seconds (0: the server's default,
        2 min); ``republish = (source, destination)`` subjects: each stored message is also
        sent as a core message on the destination with ``Nats-Sequence`` headers."""

    async def js_publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PublishAck:
        """Store in the stream covering ``subject``, deduplicated by ``msg_id``."""

    async def js_publish_chains(self, chains: Sequence[Sequence[JsPublish]]) -> list[ChainResult]:
        """``js_publish`` of every item of every chain in one call: the items of a chain one
        after the other (each sent once the previous one's ack came: a chain is stored in
        its order), the chains concurrently. Per chain, in order: the acks of the items
        stored, and the ``Unavailable`` that stopped it (its later items were not sent), or
        None. Raises ``Unavailable`` only when nothing could be attempted."""

    async def read_stream(
        self, stream: str, subject: str, start_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of ``subject`` (wildcards allowed) from ``start_seq`` on."""

    async def read_subjects(
        self, stream: str, subjects: Sequence[str], start_seq: int, limit: int
    ) -> StreamPage:
        """Up to ``limit`` messages whose subject is one of ``subjects`` (at most 500,
        no overlapping wildcards) from ``start_seq`` on, in stream order, and how many more
        matched then (``StreamPage.pending``). Leaves no consumer behind on the server."""
