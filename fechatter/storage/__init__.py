"""Persistent storage: the ``Storage`` protocol and ``open_storage(url)`` to pick a backend.

Nothing outside this package imports a backend module or a database driver directly.

Layout — the logic once, the I/O twice:

- ``base.py``: the ``Storage`` protocol (each method's docstring is the contract);
- ``core.py``: ``SqlStorage``, every ``Storage`` method written once over a seam of three
  methods (``_read_op``, ``_write_op``, ``_transactions``), plus ``open_read_snapshot`` for
  a sequence of reads in one held read transaction (the archive export);
- ``accounts.py``, ``chats.py``, ``messages.py``: the operations and their statements, once;
  ``rows.py``: column lists and row → record converters; ``migrations.py``: the one
  migration runner; ``sql.py``: statements, the neutral → dialect rewrite, the ``Op`` type;
- ``sqlite.py``, ``postgres.py`` (+ ``postgres_pool.py``): the seam — connections,
  transactions, driving an operation, driver errors → ``fechatter.errors``.

The colour problem (SQLite runs synchronously on a worker thread, PostgreSQL awaits on trio)
is solved sans-I/O: an operation is a generator that *yields* its statements and is *sent*
their results, so it has no colour; ``sqlite.run_op`` drives it with a plain loop on the
writer/reader thread (keeping group commit and the per-request SAVEPOINT), ``postgres.run_op``
with ``await``. Chosen over generating one colour from the other (httpcore's unasync: a build
step and two generated files per module to keep in sync and review) and over twin
per-backend packages (hypercorn: right for I/O, but here the twins were the logic itself).
An operation reads like the sequential code it replaced, composes with ``yield from``, and is
testable by sending it results. Why, and the measurements: ``docs/storage.md``.
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
async def open_storage(
    url: str, *, pool_size: int | None = None, operation_timeout: float | None = None
) -> AsyncIterator[Storage]:
    """Open the backend named by ``url``; close it on exit.

    ``sqlite:///path`` or ``postgresql://user:password@host:port/database`` (also
    ``postgres://``, and any libpq connection URI parameters). ``pool_size``: PostgreSQL
    connections of this process (None: sized by the backend; SQLite ignores it).
    ``operation_timeout``: seconds one PostgreSQL call may take (None: the backend's default;
    the archive import, one transaction, asks for more; SQLite ignores it).
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        # Imported here so a deployment only loads the driver it uses.
        from fechatter.storage.sqlite import open_sqlite_storage

        async with open_sqlite_storage(sqlite_path(url)) as storage:
            yield storage
        return
    if scheme in ("postgresql", "postgres"):
        from fechatter.storage.postgres import DEFAULT_OPERATION_TIMEOUT, open_postgres_storage

        timeout = DEFAULT_OPERATION_TIMEOUT if operation_timeout is None else operation_timeout
        async with open_postgres_storage(
            url, pool_size=pool_size, operation_timeout=timeout
        ) as storage:
            yield storage
        return
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r} in {url!r}:"
        " expected sqlite:///path or postgresql://host/database"
    )
