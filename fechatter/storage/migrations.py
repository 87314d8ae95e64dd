"""Versioned schema migrations: ``migrations/<backend>/NNNN_name.sql`` files, applied in order.

Each backend has a folder of SQL files named ``NNNN_description.sql``; the number is the
version (DDL, trigger bodies and types differ, so each dialect has its own scripts). One
runner (``migrate``, an ``Op``) records what was applied in
``schema_migrations(version, applied_at)`` and applies the missing ones at start. Files are
read as package resources so an installed wheel works too. This module never holds a
connection.
"""

from __future__ import annotations

import re
from importlib import resources

from fechatter.models import utc_now
from fechatter.storage.sql import Dialect, Op, Script, Sql, q

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# pg_advisory_xact_lock key serialising migrations of several processes ("fechattr" in ASCII).
MIGRATION_LOCK_KEY = 0x6665636861747472

# PostgreSQL: processes that start together take turns on a transaction-level advisory lock.
# SQLite: each migration's BEGIN IMMEDIATE takes the database's one write lock.
_LOCK = Sql.split(sqlite="SELECT ? AS locked", postgres="SELECT pg_advisory_xact_lock(?)")
_CREATE_TABLE = Sql.split(
    sqlite="CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    postgres="CREATE TABLE IF NOT EXISTS schema_migrations"
    " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL)",
)
_VERSIONS = Sql("SELECT version FROM schema_migrations")


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


def migrate(dialect: Dialect) -> Op[list[int]]:
    """Apply the migrations not yet recorded; returns the versions applied now.

    The one migration runner. Each pending migration is yielded as a ``Script`` that the
    backend commits together with its ``schema_migrations`` row: SQLite runs each in its own
    ``BEGIN IMMEDIATE`` … ``COMMIT`` (outside any transaction of its own), PostgreSQL runs this
    whole operation in one transaction, after the advisory lock.
    """
    yield q(_LOCK, (MIGRATION_LOCK_KEY,))
    yield q(_CREATE_TABLE)
    done = {row["version"] for row in (yield q(_VERSIONS)).rows}
    applied: list[int] = []
    for version, body in load_migrations(dialect):
        if version in done:
            continue
        yield Script(version, body, utc_now())
        applied.append(version)
    return applied
