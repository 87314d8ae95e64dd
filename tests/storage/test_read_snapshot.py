"""``SqlStorage.open_read_snapshot`` (the archive export's seam), on both backends: its reads
see the database as it was when it opened — not when its first read ran — while writes go
on committing meanwhile, and a failure inside it leaves the storage as it was."""

from __future__ import annotations

import pytest
import trio

from fechatter.errors import NotFound
from fechatter.storage import Storage, accounts
from fechatter.storage.core import SqlStorage
from tests.storage.factories import make_user

CEILING = 30


async def test_reads_see_the_database_as_it_was_when_the_snapshot_opened(
    storage: Storage,
) -> None:
    assert isinstance(storage, SqlStorage)
    with trio.fail_after(CEILING):
        ann = await make_user(storage, "ann")
        async with storage.open_read_snapshot() as snap:
            # Written before the snapshot's first read: the writer is not blocked, and
            # the snapshot does not see it (it was taken when it opened).
            bo = await make_user(storage, "bo")
            await storage.update_user(ann.id, fullname="Ann Renamed")
            assert await snap.read(accounts.get_user_by_email("bo@example.com")) is None
            seen = await snap.read(accounts.get_user(ann.id))
            assert seen is not None
            assert seen.fullname == "Ann"
            carl = await make_user(storage, "carl")
            assert await snap.read(accounts.get_user(carl.id)) is None
        assert await storage.get_user(bo.id) == bo
        now = await storage.get_user(ann.id)
        assert now is not None
        assert now.fullname == "Ann Renamed"


async def test_a_failure_inside_a_snapshot_ends_it_and_leaves_storage_usable(
    storage: Storage,
) -> None:
    assert isinstance(storage, SqlStorage)
    with trio.fail_after(CEILING):
        ann = await make_user(storage, "ann")

        async def fail_inside() -> None:
            async with storage.open_read_snapshot() as snap:
                assert await snap.read(accounts.get_user(ann.id)) is not None
                raise NotFound("the caller's own failure")

        with pytest.raises(NotFound, match="the caller's own failure"):
            await fail_inside()
        # Many snapshots one after another: none is left open holding a connection.
        for _ in range(30):
            async with storage.open_read_snapshot() as snap:
                assert await snap.read(accounts.get_user(ann.id)) is not None
        await make_user(storage, "bo")
