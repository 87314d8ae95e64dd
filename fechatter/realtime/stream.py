"""The output side of one realtime connection: the fan-out's fast lane.

``push`` is called synchronously from the publishing loop (a ChatActor's task). When nothing is
queued it writes the pre-encoded bytes with one non-blocking ``send`` — no task switch, no lock,
no per-event garbage. Only when the socket's buffer is full does it queue the rest in a bounded
outbox (``max_events`` events or ``max_bytes`` bytes) and start a writer task in the
connection's own nursery. A push that would overflow the outbox marks the stream as a **slow
consumer**: the queue is dropped (keeping a half-written frame so the wire stays well-formed),
and the connection's task is woken to close it (WebSocket close 4008). The client reconnects
and resumes from its UserActor's replay ring, so nobody else ever waits for it.
"""

from __future__ import annotations

import errno
import socket
from collections import deque
from dataclasses import dataclass
from enum import Enum

import trio

from fechatter.events import Event


class Transport(Enum):
    SSE = "sse"
    WS = "websocket"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    max_events: int = 256
    max_bytes: int = 1024 * 1024
    write_timeout: float = 30.0


class Stream:
    """One SSE or WebSocket connection's outbox, attached to its user's UserActor."""

    __slots__ = (
        "_nursery",
        "_partial",
        "_primed_bytes",
        "_priming",
        "_wait_scope",
        "_writer_done",
        "_writer_running",
        "_writer_scope",
        "close_reason",
        "connection_id",
        "limits",
        "out_bytes",
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
    ) -> None:
        self.sock = sock
        self.transport = transport
        self.user_id = user_id
        self.connection_id = connection_id
        self.limits = limits
        self._nursery = nursery
        self.outbox: deque[bytes | memoryview] = deque()
        self.out_bytes = 0
        self._partial = False  # outbox[0] is a frame whose start is already on the wire
        self._writer_running = False
        self._priming = True  # until ``prime`` has written the opening bytes
        self._primed_bytes = 0
        self._wait_scope: trio.CancelScope | None = None
        self._writer_scope: trio.CancelScope | None = None
        self._writer_done: trio.Event | None = None
        self.close_reason: str | None = None
        # The security version of the token that opened the stream: a raise closes it.
        self.security_version = 0

    # -- called from the publishing loop (must never block) ----------------------------
    def push_event(self, event: Event) -> None:
        self.push(event.sse() if self.transport is Transport.SSE else event.ws())

    def push(self, data: bytes) -> None:
        """Queue ``data`` for the peer, writing straight to the socket when it can."""
        if self.close_reason is not None:
            return
        view: bytes | memoryview = data
        if not self.outbox and not self._priming:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.fail("connection lost")
                return
            if sent == len(data):
                return
            view = memoryview(data)[sent:]
            self._partial = sent > 0
        if len(self.outbox) >= self.limits.max_events or (
            self.out_bytes - self._primed_bytes + len(view) > self.limits.max_bytes
        ):
            self.outbox.append(view)  # keep it until the partial-frame trim below
            self.out_bytes += len(view)
            self.fail("slow consumer")
            return
        self.outbox.append(view)
        self.out_bytes += len(view)
        if not self._writer_running and not self._priming:
            self._writer_running = True
            self._nursery.start_soon(self._write_outbox)

    def fail(self, reason: str) -> None:
        """Mark the stream for closing and wake its connection task (no await)."""
        if self.close_reason is None:
            self.close_reason = reason
            if reason == "slow consumer":
                self._drop_queue()
            if self._wait_scope is not None:
                self._wait_scope.cancel()

    def _drop_queue(self) -> None:
        keep = self.outbox[0] if self.outbox and self._partial else None
        self.outbox.clear()
        self.out_bytes = 0
        if keep is not None:
            self.outbox.append(keep)
            self.out_bytes = len(keep)

    # -- the connection task's side ------------------------------------------------------
    def wait_scope(self, deadline: float) -> trio.CancelScope:
        """A cancel scope for the connection task's idle wait; ``fail`` cancels it."""
        scope = trio.CancelScope(deadline=deadline)
        self._wait_scope = scope
        if self.close_reason is not None:
            scope.cancel()
        return scope

    async def _write_outbox(self) -> None:
        """Drain the outbox as the socket accepts it; fail the stream if it stalls."""
        self._writer_scope = trio.CancelScope()
        self._writer_done = trio.Event()
        try:
            with self._writer_scope:
                await self.flush()
        finally:
            self._writer_running = False
            self._writer_done.set()

    async def _stop_writer(self) -> None:
        """Cancel the writer task, if one runs, and wait until it is gone."""
        if self._writer_running and self._writer_scope is not None:
            self._writer_scope.cancel()
            if self._writer_done is not None:
                await self._writer_done.wait()

    async def flush(self) -> None:
        """Write everything queued; a socket that accepts nothing for ``write_timeout`` fails."""
        while self.outbox:
            with trio.move_on_after(self.limits.write_timeout) as scope:
                await trio.lowlevel.wait_writable(self.sock)
            if scope.cancelled_caught:
                self.fail("write timeout")
                return
            head = self.outbox[0]
            try:
                sent = self.sock.send(head)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    self.fail("connection lost")
                    return
                continue
            self.out_bytes -= sent
            if sent == len(head):
                self.outbox.popleft()
                self._partial = False
            else:
                self.outbox[0] = memoryview(head)[sent:]
                self._partial = True

    async def prime(self, data: bytes) -> None:
        """Write the stream's opening bytes (response head, ready, resync or replay).

        A stream starts out priming: live events pushed meanwhile queue (within the limits)
        behind these bytes, and go out once they have.
        """
        self.outbox.appendleft(data)
        self.out_bytes += len(data)
        self._primed_bytes = len(data)
        try:
            await self.flush()
        finally:
            self._priming = False
            self._primed_bytes = 0
        if self.outbox and not self._writer_running and self.close_reason is None:
            self._writer_running = True
            self._nursery.start_soon(self._write_outbox)

    async def send_final(self, data: bytes) -> None:
        """Queue ``data`` after whatever must still go out, and flush it (best effort;
        the caller bounds the time)."""
        await self._stop_writer()
        self._priming = True  # nothing else may start a writer now
        self.outbox.append(data)
        self.out_bytes += len(data)
        await self.flush()
