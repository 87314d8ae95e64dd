"""A password hasher whose worker threads a test can hold at a gate (the thread side waits on a
``threading.Event``), so admission to the hashing queue is tested without timing anything."""

from __future__ import annotations

import threading
from typing import Literal

import argon2

# A ceiling, not synchronisation: a thread never waits past it even if a test forgot the gate.
GATE_CEILING = 30.0


class GatedHasher(argon2.PasswordHasher):
    """Cheap Argon2id whose ``hash``/``verify`` wait for ``gate`` (open at first).

    Each call releases ``entered`` once it is on a worker thread, before the gate.
    """

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)

    def _pass_gate(self) -> None:
        self.entered.release()
        self.gate.wait(GATE_CEILING)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self._pass_gate()
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self._pass_gate()
        return super().verify(hash, password)
