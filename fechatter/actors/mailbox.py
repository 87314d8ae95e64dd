"""Request/reply over an actor's bounded mailbox.

A caller wraps a command in a ``Call`` and waits on it; the actor settles the call exactly once
with a value or a ``FechatterError``. A call that an actor can no longer answer (it crashed, or
it retired with the call still queued) is failed with ``Unavailable`` by whoever drops it, so no
caller ever waits forever. Pure trio primitives, no I/O.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import trio

from fechatter.actors.commands import Command
from fechatter.errors import FechatterError

T = TypeVar("T")


class Call(Generic[T]):
    """One command in flight and the slot for its answer."""

    __slots__ = ("_done", "_error", "_value", "command")

    def __init__(self, command: Command[T]) -> None:
        self.command = command
        self._done = trio.Event()
        self._value: T | None = None
        self._error: FechatterError | None = None

    @property
    def settled(self) -> bool:
        return self._done.is_set()

    def resolve(self, value: T) -> None:
        """Answer with a value (ignored if already settled)."""
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: FechatterError) -> None:
        """Answer with an error (ignored if already settled)."""
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> T:
        """Wait for the answer; raises the error the actor settled with."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def fail_queued(receive: trio.MemoryReceiveChannel[Call[Any]], error: FechatterError) -> int:
    """Fail every call still buffered in a mailbox with ``error``; returns how many."""
    failed = 0
    while True:
        try:
            call = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return failed
        call.fail(error)
        failed += 1
