"""Persistent storage: the ``Storage`` protocol and ``open_storage(url)`` to pick a backend.

Nothing outside this package imports a backend module or a database driver directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fechatter.storage.base import Storage

__all__ = ["Storage", "open_storage", "sqlite_path"]

_SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    if not url.startswith(_SQLITE_PREFIX):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path)")
    path = url[len(_SQLITE_PREFIX) :]
    if not path or path.endswith("/"):
        raise ValueError(f"SQLite URL names no file: {url!r}")
    return path


@asynccontextmanager
async def open_storage(url: str, *, pool_size: int | None = None) -> AsyncIterator[Storage]:
    """Open the backend named by ``url``; close it on exit.

    ``sqlite:///path`` or ``postgresql://user:password@host:port/database`` (also
    ``postgres://``, and any libpq connection URI parameters). ``pool_size``: PostgreSQL
    connections of this process (None: sized by the backend; SQLite ignores it).
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        # Imported here so a deployment only loads the driver it uses.
        from fechatter.storage.sqlite import open_sqlite_storage

        async with open_sqlite_storage(sqlite_path(url)) as storage:
            yield storage
        return
    if scheme in ("postgresql", "postgres"):
        from fechatter.storage.postgres import open_postgres_storage

        async with open_postgres_storage(url, pool_size=pool_size) as storage:
            yield storage
        return
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r} in {url!r}:"
        " expected sqlite:///path or postgresql://host/database"
    )
