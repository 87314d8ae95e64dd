"""A consistent copy of a live SQLite database, and what ``fechatter restore`` checks.

``snapshot`` uses SQLite's online backup API in one step (``pages=-1``): the copy is one read
transaction of the source, so it is the database as of one commit, while the server goes on
writing (WAL: a reader never blocks the writer, nor the writer it). PostgreSQL is backed up
with its own tools (docs/deploy.md "Backups"). Blocking calls: the command line runs them
outside any event loop. This module never touches the files directory.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from fechatter.storage.migrations import load_migrations

BUSY_TIMEOUT = 30.0  # seconds to wait for a lock (a checkpoint) before giving up


def snapshot(source: Path, target: Path) -> list[int]:
    """Copy the database at ``source`` (which must exist) into the new file ``target``;
    returns the migration versions recorded in the copy. ``FileNotFoundError`` for no
    source; ``sqlite3.Error`` from the driver."""
    if not source.is_file():
        raise FileNotFoundError(f"no database at {source}")
    with (
        closing(sqlite3.connect(source, timeout=BUSY_TIMEOUT)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst, pages=-1)
        # A standalone file: no -wal next to it in the archive.
        dst.execute("PRAGMA journal_mode=DELETE")
        return schema_versions(dst)


def schema_versions(conn: sqlite3.Connection) -> list[int]:
    """The versions in ``schema_migrations`` (empty: a database never migrated)."""
    found = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if found is None:
        return []
    return [int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def versions_of(path: Path) -> list[int]:
    """The migration versions of the database file at ``path``."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return schema_versions(conn)


def is_empty(path: Path) -> bool:
    """Whether ``path`` holds no database worth keeping: absent, zero bytes, or no table."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables: int = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        return tables == 0


def known_versions() -> list[int]:
    """The SQLite migration versions this build knows."""
    return [version for version, _ in load_migrations("sqlite")]
