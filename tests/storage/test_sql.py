"""The storage seam: the neutral statement rewrite and the one migration runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from fechatter.storage import migrations, open_storage
from fechatter.storage.postgres_pool import PoolConfig, open_pg_pool
from fechatter.storage.sql import Sql, dynamic, to_postgres, to_sqlite
from fechatter.storage.sqlite import run_op
from tests.pg import PgServer


def test_neutral_placeholders_become_psycopg_ones() -> None:
    assert to_postgres("SELECT a FROM t WHERE b = ? AND c = ?") == (
        "SELECT a FROM t WHERE b = %s AND c = %s"
    )
    assert to_postgres("SELECT :viewer, x::bigint[] WHERE y LIKE 'a%'") == (
        "SELECT %(viewer)s, x::bigint[] WHERE y LIKE 'a%%'"
    )


def test_sqlite_rewrites_arrays_and_drops_row_locks() -> None:
    assert to_sqlite("SELECT 1 FROM t WHERE id = ANY(?) FOR UPDATE") == (
        "SELECT 1 FROM t WHERE id IN (SELECT value FROM json_each(?))"
    )
    assert to_sqlite("SELECT :a WHERE b = ?") == "SELECT :a WHERE b = ?"


def test_split_and_each_give_one_text_per_dialect() -> None:
    split = Sql.split(
        sqlite="SELECT rowid FROM t WHERE a = ?", postgres="SELECT ord FROM t WHERE a = ?"
    )
    assert (split.sqlite, split.postgres) == (
        "SELECT rowid FROM t WHERE a = ?",
        "SELECT ord FROM t WHERE a = %s",
    )
    each = Sql.each("SELECT j.value FROM {ids} ORDER BY j.key")
    assert "json_each(?) AS j" in each.sqlite
    assert "unnest(CAST(%s AS bigint[])) WITH ORDINALITY AS j (value, key)" in each.postgres
    assert dynamic("SELECT ?") is dynamic("SELECT ?")  # rewritten once per text


_BROKEN = [(1, "CREATE TABLE a (x int);"), (2, "CREATE TABLE b (x int); CREATE TABLE b (x int);")]


def test_migration_runner_on_sqlite_keeps_what_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        monkeypatch.setattr(migrations, "load_migrations", lambda dialect: _BROKEN[:1])
        assert run_op(conn, migrations.migrate("sqlite")) == [1]
        assert run_op(conn, migrations.migrate("sqlite")) == []
        monkeypatch.setattr(migrations, "load_migrations", lambda dialect: _BROKEN)
        with pytest.raises(sqlite3.OperationalError):
            run_op(conn, migrations.migrate("sqlite"))
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert versions == [(1,)]
    finally:
        conn.close()


async def test_migration_runner_on_postgres_is_all_or_nothing(
    pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from fechatter.storage.postgres import apply_postgres_migrations

    url = pg_server.new_database(empty=True)
    try:
        async with open_pg_pool(url, PoolConfig(size=1)) as pool:
            monkeypatch.setattr(migrations, "load_migrations", lambda dialect: _BROKEN[:1])
            with trio.fail_after(10):
                async with pool.connection() as conn:
                    assert await apply_postgres_migrations(conn) == [1]
                async with pool.connection() as conn:
                    assert await apply_postgres_migrations(conn) == []
                monkeypatch.setattr(migrations, "load_migrations", lambda dialect: _BROKEN)
                with pytest.raises(psycopg.errors.DuplicateTable):
                    async with pool.connection() as conn:
                        await apply_postgres_migrations(conn)
        with psycopg.connect(url) as conn:
            versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
            assert versions == [(1,)]
            tables = conn.execute("SELECT to_regclass('b') IS NULL").fetchone()
            assert tables == (True,)
    finally:
        pg_server.drop_database(url)


def test_sqlite_scripts_split_where_sqlite_says_a_statement_ends() -> None:
    from fechatter.storage.sqlite import _statements

    body = (
        "-- a comment; with a semicolon\n"
        "CREATE TABLE t (x text DEFAULT ';');\n"
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN UPDATE t SET x = 'a;b'; END;\n"
        "-- trailing comment\n"
    )
    parts = _statements(body)
    assert len(parts) == 2
    assert "CREATE TABLE t" in parts[0]
    assert parts[1].strip().startswith("CREATE TRIGGER g")
    assert parts[1].strip().endswith("END;")
    with pytest.raises(ValueError, match="ends inside a statement"):
        _statements("CREATE TABLE u (x int)")


async def test_two_processes_migrating_one_sqlite_file_take_turns(tmp_path: Path) -> None:
    """Both read the applied versions before either wrote; the check under the write lock
    makes the second skip what the first applied (it would fail on a duplicate column)."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    opened: list[int] = []

    async def open_one() -> None:
        async with open_storage(url) as storage:
            await storage.ping()
            opened.append(1)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_one)
            nursery.start_soon(open_one)
    assert opened == [1, 1]
