"""Versioned schema migrations: ``migrations/<backend>/NNNN_name.sql`` files, applied in order.

Each backend has a folder of SQL files named ``NNNN_description.sql``; the number is the
version. A backend records what it applied in ``schema_migrations(version, applied_at)`` and
applies the missing ones at start, each in its own transaction. Files are read as package
resources so an installed wheel works too. This module must never hold a connection open.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

from fechatter.models import utc_now

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)


def load_migrations(backend: str) -> list[tuple[int, str]]:
    """The ``(version, sql)`` pairs of a backend's migration folder, in version order."""
    folder = resources.files("fechatter.storage").joinpath("migrations", backend)
    if not folder.is_dir():
        raise ValueError(f"no migrations for storage backend {backend!r}")
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions for {backend!r}: {versions}")
    return found


def applied_sqlite_versions(conn: sqlite3.Connection) -> set[int]:
    """Versions recorded in ``schema_migrations`` (creating the table if needed)."""
    conn.execute(_CREATE_TABLE)
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def apply_sqlite_migrations(conn: sqlite3.Connection) -> list[int]:
    """Apply the SQLite migrations not yet recorded; returns the versions applied now.

    The connection must be in autocommit mode (``isolation_level=None``): each migration
    runs inside its own ``BEGIN IMMEDIATE`` … ``COMMIT`` and is rolled back if it fails.
    """
    done = applied_sqlite_versions(conn)
    applied: list[int] = []
    for version, sql in load_migrations("sqlite"):
        if version in done:
            continue
        # executescript commits any open transaction first and then runs the script as is,
        # so the transaction and the bookkeeping row are part of the script itself.
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{sql}\n;\n"
            "INSERT INTO schema_migrations (version, applied_at)"
            f" VALUES ({version:d}, '{utc_now()}');\n"
            "COMMIT;\n"
        )
        try:
            conn.executescript(script)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
