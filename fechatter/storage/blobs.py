"""Blob stores: where uploaded bytes live (issue 15, SPEC §8), behind one small interface.

A blob is immutable and named by the SHA-256 (hex) of its bytes, so two uploads of the same
bytes share one blob; what a URL names is the upload (``storage.files``), never the blob.
``BlobStore`` is what the rest of the server uses; ``LocalBlobStore`` keeps blobs in a
directory (``files_dir``), which a cluster shares (docs/cluster.md "Built: files on the
cluster"). An S3-compatible store can implement the same protocol (``scratch`` stays a local
temporary file, ``put`` uploads it).

Writes are atomic: bytes go to a temporary file under ``<dir>/tmp`` first (the caller streams
into it), then ``put`` fsyncs it and renames it into place, so a reader never sees a partial
blob. Every method's file-system work runs on a worker thread, never on the event loop.
This module must never decide who may read a blob.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Protocol

import trio

KEY = re.compile(r"[0-9a-f]{64}")
READ_CHUNK = 256 * 1024  # bytes per read of a blob being served
LIST_BATCH = 500  # keys per batch of ``keys``


class BlobMissing(Exception):
    """The blob is not in the store (the metadata names a blob that is gone)."""


class BlobStore(Protocol):
    """Content-addressed immutable blobs. Keys are 64 lowercase hex digits (SHA-256)."""

    def scratch(self) -> Path:
        """A fresh path for a temporary file to stream an upload into (not yet created);
        give it to ``put`` or delete it."""

    async def put(self, key: str, temp: Path) -> None:
        """Move the finished temporary file ``temp`` in as blob ``key``, atomically (fsync,
        then rename; an existing blob of that key is replaced by identical bytes)."""

    async def size(self, key: str) -> int:
        """The blob's size in bytes; ``BlobMissing`` if absent."""

    def read(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The bytes ``[start, start + length)`` of the blob (to its end when ``length`` is
        None) in chunks of at most ``READ_CHUNK``; ``BlobMissing`` if absent."""

    async def delete(self, key: str, modified_before: float | None = None) -> bool:
        """Remove the blob; absent is fine. With ``modified_before`` (Unix seconds), only if
        it was last modified before then, checked just before the removal (the collector:
        an upload of the same bytes may have put the blob again since it was listed).
        Returns whether it was removed."""

    def keys(self) -> AsyncIterator[list[tuple[str, float]]]:
        """Every blob as ``(key, modified)`` (POSIX seconds), in batches of ``LIST_BATCH``."""

    async def sweep_scratch(self, older_than: float) -> int:
        """Delete temporary files last modified more than ``older_than`` seconds ago (left by
        a crash); how many."""


class LocalBlobStore:
    """Blobs as files ``<root>/blobs/<key[:2]>/<key>``; temporary files in ``<root>/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"

    async def open(self) -> None:
        """Create the directories (mode 0700)."""

        def make() -> None:
            for d in (self.root, self._blobs, self._tmp):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)

        await trio.to_thread.run_sync(make)

    def _path(self, key: str) -> Path:
        if KEY.fullmatch(key) is None:
            raise ValueError(f"not a blob key: {key!r}")
        return self._blobs / key[:2] / key

    def scratch(self) -> Path:
        return self._tmp / f"up-{secrets.token_hex(12)}"

    async def put(self, key: str, temp: Path) -> None:
        final = self._path(key)

        def move() -> None:
            fd = os.open(temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            final.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(temp, final)
            # The rename is durable only once its directory is: a crash could otherwise lose
            # a blob whose row commits next.
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        await trio.to_thread.run_sync(move)

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return (await trio.to_thread.run_sync(path.stat)).st_size
        except FileNotFoundError:
            raise BlobMissing(key) from None

    async def read(
        self, key: str, start: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        try:
            f = await trio.open_file(path, "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        async with f:
            await f.seek(start)
            left = length
            while left is None or left > 0:
                chunk = await f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def delete(self, key: str, modified_before: float | None = None) -> bool:
        path = self._path(key)

        def remove() -> bool:
            # The stat and the unlink are one worker-thread call, microseconds apart: a put
            # of the same key between them is the remaining window (docs/api.md "Files").
            try:
                if modified_before is not None and path.stat().st_mtime >= modified_before:
                    return False
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await trio.to_thread.run_sync(remove)

    async def keys(self) -> AsyncIterator[list[tuple[str, float]]]:
        def shards() -> list[Path]:
            return sorted(p for p in self._blobs.iterdir() if p.is_dir())

        def scan(shard: Path) -> list[tuple[str, float]]:
            found = []
            with os.scandir(shard) as it:
                for entry in it:
                    if KEY.fullmatch(entry.name) and entry.is_file():
                        found.append((entry.name, entry.stat().st_mtime))
            return found

        batch: list[tuple[str, float]] = []
        for shard in await trio.to_thread.run_sync(shards):
            batch.extend(await trio.to_thread.run_sync(scan, shard))
            while len(batch) >= LIST_BATCH:
                yield batch[:LIST_BATCH]
                batch = batch[LIST_BATCH:]
        if batch:
            yield batch

    async def sweep_scratch(self, older_than: float) -> int:
        def sweep() -> int:
            cutoff = time.time() - older_than
            n = 0
            with os.scandir(self._tmp) as it:
                for entry in it:
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        Path(entry.path).unlink(missing_ok=True)
                        n += 1
            return n

        return await trio.to_thread.run_sync(sweep)
