"""The bounded queue in front of password hashing: admission and shedding, not timings.

The hashing threads are held at a gate (``tests.hashing.GatedHasher``); with them busy, exactly
``hash_threads + hash_queue_max`` callers are admitted and the next is refused at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from fechatter.auth import Authenticator, HashStatistics
from fechatter.errors import Unavailable
from tests.conftest import TEST_SECRET, make_settings
from tests.hashing import GatedHasher


def gated_authenticator(hasher: GatedHasher, *, threads: int, queue: int | None) -> Authenticator:
    return Authenticator(
        TEST_SECRET,
        access_ttl=60,
        refresh_ttl=60,
        time_cost=1,
        memory_cost=8,
        parallelism=1,
        hash_threads=threads,
        hash_queue_max=queue,
        password_hasher=hasher,
    )


async def hold_threads(hasher: GatedHasher, count: int) -> None:
    """Wait until ``count`` calls sit at the gate on worker threads, and every task is parked."""
    for _ in range(count):
        await trio.to_thread.run_sync(hasher.entered.acquire)
    await trio.testing.wait_all_tasks_blocked()


async def test_full_queue_sheds_at_once_and_queued_callers_succeed() -> None:
    hasher = GatedHasher()
    auth = gated_authenticator(hasher, threads=2, queue=3)
    stored = await auth.hash_password("correct horse")
    assert hasher.entered.acquire(blocking=False)  # that call's entry
    results: list[bool] = []

    async def verify() -> None:
        results.append(await auth.verify_password(stored, "correct horse"))

    with trio.fail_after(10):
        try:
            hasher.gate.clear()
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(verify)
                await hold_threads(hasher, 2)
                assert auth.hash_statistics() == HashStatistics(admitted=5, waiting=3, shed=0)
                # The gate is shut: had these waited, fail_after would fire instead.
                with pytest.raises(Unavailable) as refused:
                    await auth.verify_password(stored, "correct horse")
                with pytest.raises(Unavailable):
                    await auth.hash_password("another one")
                with pytest.raises(Unavailable):
                    await auth.verify_password(None, "unknown user")
                assert refused.value.status == 503
                assert refused.value.code == "auth_busy"
                assert refused.value.headers["Retry-After"] == "1"
                assert auth.hash_statistics().shed == 3
                assert results == []
                hasher.gate.set()
        finally:
            hasher.gate.set()
    assert results == [True] * 5
    assert auth.hash_statistics().admitted == 0
    assert await auth.verify_password(stored, "correct horse")  # admitting again


async def test_zero_queue_admits_only_the_threads() -> None:
    hasher = GatedHasher()
    auth = gated_authenticator(hasher, threads=1, queue=0)
    done: list[str] = []

    async def hash_one() -> None:
        done.append(await auth.hash_password("correct horse"))

    with trio.fail_after(10):
        try:
            hasher.gate.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hash_one)
                await hold_threads(hasher, 1)
                with pytest.raises(Unavailable):
                    await auth.hash_password("second")
                hasher.gate.set()
        finally:
            hasher.gate.set()
    assert len(done) == 1


async def test_a_cancelled_waiter_frees_its_place() -> None:
    hasher = GatedHasher()
    auth = gated_authenticator(hasher, threads=1, queue=1)

    async def hash_one() -> None:
        await auth.hash_password("correct horse")

    with trio.fail_after(10):
        try:
            hasher.gate.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hash_one)
                await hold_threads(hasher, 1)
                waiter = trio.CancelScope()

                async def queued() -> None:
                    with waiter:
                        await auth.hash_password("gives up")

                nursery.start_soon(queued)
                await trio.testing.wait_all_tasks_blocked()
                assert auth.hash_statistics().admitted == 2
                with pytest.raises(Unavailable):
                    await auth.hash_password("refused")
                waiter.cancel()
                await trio.testing.wait_all_tasks_blocked()
                assert auth.hash_statistics().admitted == 1
                # Its place is free again: this caller is admitted (and waits its turn).
                nursery.start_soon(hash_one)
                await trio.testing.wait_all_tasks_blocked()
                assert auth.hash_statistics().admitted == 2
                hasher.gate.set()
        finally:
            hasher.gate.set()
    assert auth.hash_statistics().admitted == 0


def test_queue_bound_setting(tmp_path: Path) -> None:
    assert make_settings(tmp_path, hash_threads=3).hash_queue_limit == 12  # four per thread
    assert make_settings(tmp_path, hash_threads=3, hash_queue_max=0).hash_queue_limit == 0
