"""The trio side of one realtime connection's output: its socket, writer task and wake-up.

The decisions live in ``protocol.outbox.Outbox``; this wraps it around a non-blocking socket.
``push_event`` / ``push`` are called synchronously from the publishing loop (a ChatActor's
task): the outbox writes straight to the socket when nothing is queued (no task switch, no
lock, no per-event garbage); when it queues, a writer task is started in the connection's own
nursery to drain it as the socket becomes writable; when it overflows (a **slow consumer**) or
the fan-out ``fail``s the stream (token revoked), the connection's task is woken to close it
(WebSocket close 4008 / 4001). The client reconnects and resumes from its UserActor's replay
ring, so nobody else ever waits for it.

It must never block the publishing loop: nothing here awaits on the fan-out's path.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from enum import Enum

import trio

from fechatter.close_reasons import CloseReason
from fechatter.events import Event
from fechatter.realtime.protocol.outbox import Outbox, OutboxState, Progress, Push

_SENT = Push.SENT
_QUEUED = Push.QUEUED
_BACKLOGGED = OutboxState.BACKLOGGED


class Transport(Enum):
    SSE = "sse"
    WS = "websocket"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_events: int = 256
    max_bytes: int = 1024 * 1024
    write_timeout: float = 30.0


class Stream:
    """One SSE or WebSocket connection's output, attached to its user's UserActor."""

    __slots__ = (
        "_nursery",
        "_sse",
        "_wait_scope",
        "_writer_done",
        "_writer_scope",
        "connection_id",
        "limits",
        "outbox",
        "security_version",
        "sock",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        sock: socket.socket,
        transport: Transport,
        user_id: int,
        connection_id: int,
        limits: StreamLimits,
        nursery: trio.Nursery,
        *,
        security_version: int = 0,
    ) -> None:
        self.sock = sock
        self.transport = transport
        self._sse = transport is Transport.SSE
        self.user_id = user_id
        self.connection_id = connection_id
        self.limits = limits
        self._nursery = nursery
        self.outbox = Outbox(sock.send, limits.max_events, limits.max_bytes)
        self._wait_scope: trio.CancelScope | None = None
        self._writer_scope: trio.CancelScope | None = None
        self._writer_done: trio.Event | None = None  # set while no writer task runs
        # The security version of the token that opened the stream: a raise closes it.
        self.security_version = security_version

    @property
    def close_reason(self) -> CloseReason | None:
        """Why the stream is closing (None while it is open)."""
        return self.outbox.close_reason

    # -- called from the publishing loop (must never block) ----------------------------
    def push_event(self, event: Event) -> Push:
        """Deliver one event in this stream's encoding (see ``push``)."""
        result = self.outbox.push(event.sse() if self._sse else event.ws())
        if result is not _SENT:
            self._after(result)
        return result

    def push(self, data: bytes) -> Push:
        """Send ``data`` now, or queue it and make sure a writer drains it; an overflow or a
        lost peer wakes the connection's task to close the stream."""
        result = self.outbox.push(data)
        if result is not _SENT:
            self._after(result)
        return result

    def _after(self, result: Push) -> None:
        if result is _QUEUED:
            # While priming or closing the connection's task flushes; else one writer drains.
            done = self._writer_done
            if self.outbox.state is _BACKLOGGED and (done is None or done.is_set()):
                self._start_writer()
        else:
            self._wake()

    def fail(self, reason: CloseReason) -> None:
        """Mark the stream for closing and wake its connection task (no await)."""
        if self.outbox.fail(reason):
            self._wake()

    def _wake(self) -> None:
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def _start_writer(self) -> None:
        self._writer_done = trio.Event()
        self._writer_scope = trio.CancelScope()
        self._nursery.start_soon(self._write_outbox, self._writer_scope, self._writer_done)

    # -- the connection task's side ------------------------------------------------------
    def wait_scope(self, deadline: float) -> trio.CancelScope:
        """A cancel scope for the connection task's idle wait; ``fail`` cancels it."""
        scope = trio.CancelScope(deadline=deadline)
        self._wait_scope = scope
        if self.outbox.close_reason is not None:
            scope.cancel()
        return scope

    async def _write_outbox(self, scope: trio.CancelScope, done: trio.Event) -> None:
        """The writer task: drain the outbox; it ends when the queue is empty."""
        try:
            with scope:
                await self.flush()
        finally:
            done.set()

    async def _stop_writer(self) -> None:
        """Cancel the writer task, if one runs, and wait until it is gone."""
        done = self._writer_done
        if done is not None and not done.is_set() and self._writer_scope is not None:
            self._writer_scope.cancel()
            await done.wait()

    async def flush(self) -> None:
        """Write everything queued; a socket that accepts nothing for ``write_timeout`` fails
        the stream (``WRITE_TIMEOUT``), a failed write ends it (``CONNECTION_LOST``)."""
        outbox = self.outbox
        while outbox.queued:
            with trio.move_on_after(self.limits.write_timeout) as scope:
                await trio.lowlevel.wait_writable(self.sock)
            if scope.cancelled_caught:
                self.fail(CloseReason.WRITE_TIMEOUT)
                return
            if outbox.write_some() is Progress.LOST:
                self._wake()
                return

    async def prime(self, data: bytes) -> None:
        """Write the stream's opening bytes (response head, ready, resync or replay).

        A stream starts out priming: live events pushed meanwhile queue (within the limits)
        behind these bytes, and go out once they have.
        """
        self.outbox.prime(data)
        try:
            await self.flush()
        finally:
            writer_needed = self.outbox.primed()
        if writer_needed:
            self._start_writer()

    async def send_final(self, data: bytes, reason: CloseReason) -> None:
        """Queue ``data`` (the close frame) after whatever must still go out and flush it
        (best effort; the caller bounds the time). The stream closes for ``reason`` unless
        it was closing already."""
        await self._stop_writer()
        self.outbox.finish(data, reason)
        await self.flush()


class OpenStreams:
    """The listener's streams while they run, so a stopping server can close each one with
    the reason it chooses (``close_all``): WebSocket close 1001 in one process, 1012 plus
    SSE ``retry:`` when a cluster node leaves (SPEC §10; docs/api.md "Graceful stop").

    ``accepting`` is the listener's accept loop: ``close_all`` cancels it first, so no new
    connection is taken while the streams close. Bounded by the listener's own budgets (one
    entry per admitted stream)."""

    def __init__(self) -> None:
        self._streams: set[Stream] = set()
        self.closing: CloseReason | None = None  # set once by ``close_all``
        self.accepting = trio.CancelScope()
        self._emptied = trio.Event()

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: Stream) -> None:
        """Track a stream whose opening bytes are out; one opened after ``close_all`` is
        failed with the closing reason at once."""
        self._streams.add(stream)
        if self.closing is not None:
            stream.fail(self.closing)

    def discard(self, stream: Stream) -> None:
        """Forget a stream that ended."""
        self._streams.discard(stream)
        if not self._streams:
            self._emptied.set()
            self._emptied = trio.Event()

    def close_all(self, reason: CloseReason) -> int:
        """Stop accepting and fail every stream with ``reason`` (each connection's task then
        writes its close: the WebSocket close frame, or SSE's last bytes). Returns how many
        streams were told."""
        self.closing = reason
        self.accepting.cancel()
        streams = list(self._streams)
        for stream in streams:
            stream.fail(reason)
        return len(streams)

    async def wait_closed(self) -> None:
        """Return once no stream is open (call after ``close_all``; bound it with
        ``trio.move_on_after``: a peer that reads nothing holds its close ≤ 1 s)."""
        while self._streams:
            await self._emptied.wait()
