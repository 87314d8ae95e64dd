"""SQLite-only behaviour: files, URLs, migrations and driver-error translation."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from fechatter.errors import Conflict, NotFound, Unavailable
from fechatter.storage import migrations, open_storage, sqlite_path
from fechatter.storage.sqlite import (
    SqliteStorage,
    apply_sqlite_migrations,
    open_sqlite_storage,
    translate_error,
)


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_a_new_database_and_its_wal_files_are_owner_only_whatever_the_umask(
    tmp_path: Path,
) -> None:
    """The database holds password hashes and every message: created 0600 under a umask of
    022 (a shell's usual), and SQLite gives -wal and -shm the same mode. A file that exists
    keeps the mode its owner gave it."""
    db = tmp_path / "new" / "chat.db"
    old = os.umask(0o022)
    try:
        async with open_storage(f"sqlite:///{db}") as storage:
            await storage.create_user("Ann", "ann@example.com", "h", "Acme")
            made = [db, db.with_name("chat.db-wal"), db.with_name("chat.db-shm")]
            assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {
                p.name: 0o600 for p in made
            }
        kept = tmp_path / "kept.db"
        kept.touch(mode=0o640)
        kept.chmod(0o640)
        async with open_storage(f"sqlite:///{kept}"):
            assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    finally:
        os.umask(old)


async def test_reopen_keeps_data_and_migrates_once(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    async with open_storage(f"sqlite:///{db}") as storage:
        user, workspace = await storage.create_user("Ann", "ann@example.com", "h", "Acme")
    async with open_storage(f"sqlite:///{db}") as storage:
        assert await storage.get_user(user.id) == user
        assert await storage.get_workspace(workspace.id if workspace else 0) == workspace
    conn = _raw(db)
    try:
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(v,) for v, _ in migrations.load_migrations("sqlite")]
        assert apply_sqlite_migrations(conn) == []
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_load_migrations_lists_versioned_files() -> None:
    found = migrations.load_migrations("sqlite")
    assert [v for v, _ in found][:1] == [1]
    assert "CREATE TABLE messages" in found[0][1]
    with pytest.raises(ValueError, match="no migrations"):
        migrations.load_migrations("nosuchbackend")


def test_failed_migration_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = [(1, "CREATE TABLE a (x);"), (2, "CREATE TABLE b (x); CREATE TABLE b (x);")]
    monkeypatch.setattr(migrations, "load_migrations", lambda backend: broken)
    conn = _raw(tmp_path / "m.db")
    try:
        with pytest.raises(sqlite3.OperationalError):
            apply_sqlite_migrations(conn)
        assert not conn.in_transaction
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"schema_migrations", "a"}
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
    finally:
        conn.close()


async def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "er" / "x.db"
    async with open_sqlite_storage(str(db), readers=1) as storage:
        await storage.ping()
    assert db.is_file()


async def test_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_storage("sqlite:///data/rel.db") as storage:
        await storage.ping()
    assert (tmp_path / "data" / "rel.db").is_file()


def test_sqlite_path_parsing() -> None:
    assert sqlite_path("sqlite:///fechatter.db") == "fechatter.db"
    assert sqlite_path("sqlite:///./data/f.db") == "./data/f.db"
    assert sqlite_path("sqlite:////var/lib/f.db") == "/var/lib/f.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite:///dir/", "postgresql://h/db"):
        with pytest.raises(ValueError, match="SQLite URL"):
            sqlite_path(bad)


async def test_unsupported_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported storage URL scheme 'mysql'"):
        async with open_storage("mysql://localhost/fechatter"):
            pass  # pragma: no cover


async def test_readers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="readers"):
        async with open_sqlite_storage(str(tmp_path / "x.db"), readers=0):
            pass  # pragma: no cover


async def test_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable):
        async with open_sqlite_storage(str(tmp_path)):  # a directory
            pass  # pragma: no cover


async def test_closed_storage_is_unavailable(tmp_path: Path) -> None:
    async with open_sqlite_storage(str(tmp_path / "x.db"), readers=2) as storage:
        pass
    kept: SqliteStorage = storage
    with pytest.raises(Unavailable):
        await kept.ping()
    with pytest.raises(Unavailable):
        await kept.create_user("A", "a@example.com", "h", None)


async def test_busy_database_is_unavailable(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    async with open_sqlite_storage(str(db), readers=1) as storage:
        blocker = _raw(db)
        try:
            blocker.execute("PRAGMA busy_timeout = 0")
            blocker.execute("BEGIN EXCLUSIVE")
            # Lower the writer's patience so the test does not wait the default 5 s.
            storage._writer.execute("PRAGMA busy_timeout = 10")
            with pytest.raises(Unavailable):
                await storage.create_user("A", "a@example.com", "h", None)
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        user, _ = await storage.create_user("A", "a@example.com", "h", None)
        assert storage.statistics().transactions == 1
        assert await storage.get_user(user.id) == user


def test_translate_error() -> None:
    assert isinstance(translate_error(sqlite3.OperationalError("database is locked")), Unavailable)
    assert isinstance(translate_error(sqlite3.DatabaseError("disk I/O error")), Unavailable)
    fk = translate_error(sqlite3.IntegrityError("FOREIGN KEY constraint failed"))
    assert isinstance(fk, NotFound)
    other = translate_error(sqlite3.IntegrityError("NOT NULL constraint failed: users.email"))
    assert isinstance(other, Conflict)
    assert other.code == "conflict"
    taken = translate_error(sqlite3.IntegrityError("UNIQUE constraint failed: users.email"))
    assert isinstance(taken, Conflict)
    assert taken.code == "email_taken"


async def test_unknown_references_are_not_found(tmp_path: Path) -> None:
    from fechatter.models import ChatType

    async with open_sqlite_storage(str(tmp_path / "x.db"), readers=1) as storage:
        with pytest.raises(NotFound):
            await storage.create_chat(999, ChatType.GROUP, None, None, 1, [1])
        with pytest.raises(NotFound):
            await storage.add_refresh_token(999, "t", "f", "2999-01-01T00:00:00.000000Z")
