"""``LocalBlobStore`` on a real directory: the collector's guarded delete."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from fechatter.storage.blobs import LocalBlobStore

CEILING = 10.0


async def put_bytes(store: LocalBlobStore, data: bytes) -> str:
    key = hashlib.sha256(data).hexdigest()
    temp = store.scratch()
    await trio.to_thread.run_sync(temp.write_bytes, data)
    await store.put(key, temp)
    return key


async def test_a_blob_put_again_after_it_was_listed_survives_the_collectors_delete(
    tmp_path: Path,
) -> None:
    """The collector lists a blob as old and unreferenced; an upload of the same bytes puts
    it again before the delete (its row not yet written): ``delete(key, modified_before)``
    sees the fresh modification time and keeps it."""
    with trio.fail_after(CEILING):
        store = LocalBlobStore(tmp_path)
        await store.open()
        key = await put_bytes(store, b"same bytes")
        batches = [batch async for batch in store.keys()]  # noqa: SIM118 (a method, not a dict)
        ((listed, modified),) = [entry for batch in batches for entry in batch]
        assert listed == key
        os.utime(store._path(key), (modified - 3600, modified - 3600))  # "an hour old"
        cutoff = modified - 60  # the collector's "older than the grace"
        await put_bytes(store, b"same bytes")  # put again: modified now
        assert not await store.delete(key, cutoff)
        assert await store.size(key) == len(b"same bytes")
        os.utime(store._path(key), (modified - 3600, modified - 3600))
        assert await store.delete(key, cutoff)
        assert not await store.delete(key)  # absent is fine
