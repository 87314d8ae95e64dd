"""One stream's output: write straight through when it can, else a bounded queue.

``Outbox.push`` is the fan-out's fast lane, called synchronously once per recipient per event.
With nothing queued it hands the pre-encoded bytes to ``write`` (a non-blocking send) and
answers ``Push.SENT``: no allocation, no task switch. When the peer's buffer is full the rest
is queued and it answers ``Push.QUEUED`` (the caller starts a writer that calls
``write_some`` whenever the socket is writable). A push that would take the queue past
``max_events`` events or ``max_bytes`` bytes answers ``Push.OVERFLOW``: the stream is a
**slow consumer**; the queue is dropped, keeping a half-written frame so the wire stays
well-formed, and only the close frame may follow (``finish``). ``Push.CLOSED``: the stream was
already closing (the bytes are dropped) or the write just failed (``CONNECTION_LOST``).

States (``OutboxState``): ``PRIMING`` (the opening bytes go first; pushes queue behind them)
→ ``IDLE`` (nothing queued) ⇄ ``BACKLOGGED`` (a writer drains the queue) → ``CLOSING`` (a
``CloseReason`` is set: pushes are dropped, what is queued may still be flushed).

``write`` is the only door to the socket: it takes bytes and returns how many the peer's
buffer accepted, raising ``BlockingIOError`` when none fit and ``OSError`` when the peer is
gone (``socket.send`` on a non-blocking socket). The outbox never waits, reads a clock or
starts a task: deadlines and the writer task are the caller's.
"""

from __future__ import annotations

import enum
import errno
from collections import deque
from collections.abc import Callable

from fechatter.close_reasons import CloseReason

Write = Callable[[bytes | memoryview], int]
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)


class OutboxState(enum.Enum):
    PRIMING = "priming"
    IDLE = "idle"
    BACKLOGGED = "backlogged"
    CLOSING = "closing"


class Push(enum.Enum):
    SENT = "sent"  # all of it is in the socket's buffer
    QUEUED = "queued"  # some or all of it waits in the queue
    OVERFLOW = "overflow"  # over the limits: now CLOSING with SLOW_CONSUMER
    CLOSED = "closed"  # dropped: already CLOSING, or the write failed (CONNECTION_LOST)


class Progress(enum.Enum):
    DRAINED = "drained"  # the queue is empty
    MORE = "more"  # bytes went out; more are queued
    BLOCKED = "blocked"  # the socket took nothing; wait until it is writable
    LOST = "lost"  # the write failed: the peer is gone


# Module-level aliases: ``push`` returns these without an attribute lookup on the class.
_IDLE = OutboxState.IDLE
_SENT = Push.SENT


class Outbox:
    """A bounded outbox (``max_events`` entries, ``max_bytes`` bytes) in front of ``write``."""

    __slots__ = (
        "_partial",
        "_primed_bytes",
        "_queue",
        "_write",
        "close_reason",
        "max_bytes",
        "max_events",
        "queued_bytes",
        "state",
    )

    def __init__(self, write: Write, max_events: int, max_bytes: int) -> None:
        self._write = write
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._queue: deque[bytes | memoryview] = deque()
        self.queued_bytes = 0
        self._partial = False  # _queue[0] is a frame whose start is already on the wire
        self._primed_bytes = 0  # the opening bytes do not count against max_bytes
        self.state = OutboxState.PRIMING
        self.close_reason: CloseReason | None = None

    @property
    def queued(self) -> int:
        """Entries waiting (a half-written frame counts as one)."""
        return len(self._queue)

    # -- the fan-out's side (never blocks) ---------------------------------------------------
    def push(self, data: bytes) -> Push:
        """Send ``data`` now if nothing is queued, else queue it within the limits."""
        if self.state is not _IDLE:
            if self.close_reason is not None:
                return Push.CLOSED
            return self._enqueue(data)
        try:
            sent = self._write(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.fail(CloseReason.CONNECTION_LOST)
            return Push.CLOSED
        if sent == len(data):
            return _SENT
        self._partial = sent > 0
        return self._enqueue(memoryview(data)[sent:] if sent else data)

    def _enqueue(self, view: bytes | memoryview) -> Push:
        queue = self._queue
        queue.append(view)  # an overflow keeps it until the partial-frame trim in ``fail``
        self.queued_bytes += len(view)
        if len(queue) > self.max_events or self.queued_bytes - self._primed_bytes > self.max_bytes:
            self.fail(CloseReason.SLOW_CONSUMER)
            return Push.OVERFLOW
        if self.state is _IDLE:
            self.state = OutboxState.BACKLOGGED
        return Push.QUEUED

    def fail(self, reason: CloseReason) -> bool:
        """Close the outbox for ``reason``; False if it was closing already (the first wins).

        A slow consumer's queue is dropped (but for a half-written frame, or the opening
        bytes while they have not gone out: the close frame must follow a response head);
        any other reason keeps it, so what was queued may still be flushed ahead of the
        close frame.
        """
        if self.close_reason is not None:
            return False
        self.close_reason = reason
        self.state = OutboxState.CLOSING
        if reason is CloseReason.SLOW_CONSUMER:
            keep = self._queue[0] if self._queue and (self._partial or self._primed_bytes) else None
            self._queue.clear()
            self.queued_bytes = 0
            if keep is not None:
                self._queue.append(keep)
                self.queued_bytes = len(keep)
        return True

    # -- the connection's side ---------------------------------------------------------------
    def prime(self, data: bytes) -> None:
        """Put the stream's opening bytes ahead of everything pushed while priming."""
        if self.state is not OutboxState.PRIMING:
            raise RuntimeError(f"prime in state {self.state.name}")
        self._queue.appendleft(data)
        self.queued_bytes += len(data)
        self._primed_bytes = len(data)

    def primed(self) -> bool:
        """The opening bytes are out (or the stream failed): True if a writer must drain the
        events pushed meanwhile."""
        self._primed_bytes = 0
        if self.state is OutboxState.PRIMING:
            self.state = OutboxState.BACKLOGGED if self._queue else OutboxState.IDLE
        return self.state is OutboxState.BACKLOGGED

    def finish(self, data: bytes, reason: CloseReason) -> None:
        """Queue the last bytes (the close frame) after what is queued; closes for ``reason``
        unless it was closing already."""
        self.fail(reason)
        if data:
            self._queue.append(data)
            self.queued_bytes += len(data)

    def write_some(self) -> Progress:
        """Hand the head of the queue to ``write`` once (call when the socket is writable)."""
        queue = self._queue
        if not queue:
            return Progress.DRAINED
        head = queue[0]
        try:
            sent = self._write(head)
        except OSError as exc:  # BlockingIOError included
            if exc.errno in _WOULD_BLOCK:
                return Progress.BLOCKED
            self.fail(CloseReason.CONNECTION_LOST)
            return Progress.LOST
        self.queued_bytes -= sent
        if sent == len(head):
            queue.popleft()
            self._partial = False
            if not queue:
                if self.state is OutboxState.BACKLOGGED:
                    self.state = _IDLE
                return Progress.DRAINED
        else:
            self._partial = True
            queue[0] = memoryview(head)[sent:]
        return Progress.MORE
