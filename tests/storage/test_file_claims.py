"""Uploads claimed by a reference outlive the collector's cutoff, on every backend: a send
(or an avatar change) checks its files with ``FileStore.claim``, and ``expire`` keeps an
upload claimed after its cutoff, so the collector cannot delete an upload between the check
and the write that references it (an upload used just before its grace ran out)."""

from __future__ import annotations

import trio

from fechatter.storage import Storage
from fechatter.storage.core import SqlStorage
from fechatter.storage.files import FileRecord, FileStore
from tests.storage.factories import make_user

CEILING = 20.0
# The collector expires what was created (and last claimed) before its cutoff, the pass's
# time minus ``file_gc_grace`` (a day here).
T0 = "2026-01-01T00:00:00.000000Z"  # uploaded
CLAIMED = "2026-01-01T23:59:59.500000Z"  # referenced just before the grace ran out
CUTOFF = "2026-01-01T00:00:01.000000Z"  # a pass a second after the grace ran out
LATER_CUTOFF = "2026-01-02T00:00:00.000000Z"  # a pass a grace after the claim


def upload(file_id: str, uploader_id: int, created_at: str = T0) -> FileRecord:
    return FileRecord(
        id=file_id,
        uploader_id=uploader_id,
        name=f"{file_id}.txt",
        size=3,
        content_type="text/plain",
        sha256=file_id * 8,
        width=None,
        height=None,
        thumb_sha256=None,
        thumb_type=None,
        thumb_size=None,
        created_at=created_at,
    )


async def test_a_claimed_upload_outlives_the_cutoff_it_was_claimed_after(storage: Storage) -> None:
    assert isinstance(storage, SqlStorage)
    files = FileStore(storage)
    with trio.fail_after(CEILING):
        ada = await make_user(storage, "ada")
        bob = await make_user(storage, "bob")
        for file_id in ("claimed", "idle"):
            await files.insert(upload(file_id, ada.id))
        # Only the uploader's own uploads are found (and claimed); another's and an unknown id
        # are not.
        assert await files.claim(ada.id, ["claimed", "nothing"], CLAIMED) == {"claimed": False}
        assert await files.claim(bob.id, ["idle"], CLAIMED) == {}
        # The collector's pass at the cutoff: the unused upload goes, the claimed one stays
        # (without the claim both went: created before the cutoff, referenced by nothing).
        assert await files.expire(CUTOFF) == ["idle"]
        assert await files.get("claimed") is not None
        # A grace after the claim, still referenced by nothing: it goes too.
        assert await files.expire(LATER_CUTOFF) == ["claimed"]
        assert await files.claim(ada.id, ["claimed"], LATER_CUTOFF) == {}
