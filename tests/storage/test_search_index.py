"""The search index as the schema keeps it (migrations sqlite 0007, postgres 0014).

Both backends: the index follows every message write in its own transaction — group-commit
inserts, edits, tombstones, chat and workspace deletions — and ``search_messages`` reads it.
PostgreSQL: its SQL ``fechatter_search_text`` gives exactly ``search_text``'s output on mixed
generated text. SQLite: newest-first search reads the FTS5 index in rowid order (no sort).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import psycopg
import trio

from fechatter.models import SearchFilters
from fechatter.search_text import parse_query, search_text
from fechatter.storage import Storage, open_storage
from fechatter.storage.search import search_messages
from fechatter.storage.sql import Stmt
from fechatter.storage.sqlite import apply_sqlite_migrations

from .factories import make_group, send

CEILING = 30


async def _found(storage: Storage, user_id: int, q: str, chat_id: int | None = None) -> list[int]:
    filters = SearchFilters(chat_id=chat_id)
    page = await storage.search_messages(user_id, parse_query(q), filters, limit=100)
    return [m.id for m in page.items]


async def test_the_index_follows_every_message_write(storage: Storage) -> None:
    with trio.fail_after(CEILING):
        workspace, users, chat = await make_group(storage)
        owner, reader = users[0], users[1]
        m1, m2, m3 = await send(storage, chat.id, owner, "alpha 聊天", "beta 聊天", "gamma")
        assert await _found(storage, reader.id, "聊天") == [m2.id, m1.id]
        await storage.edit_message(chat.id, m1.id, "delta", [], False)
        assert await _found(storage, reader.id, "alpha") == []
        assert await _found(storage, reader.id, "delta") == [m1.id]
        await storage.delete_message(chat.id, m2.id)
        assert await _found(storage, reader.id, "聊天") == []
        # Concurrent batches of several chats (PostgreSQL may store them in one round).
        others = [
            await storage.create_chat(
                workspace.id, chat.type, None, None, owner.id, [u.id for u in users]
            )
            for _ in range(3)
        ]
        async with trio.open_nursery() as nursery:
            for other in others:
                nursery.start_soon(send, storage, other.id, owner, "round omega", "omega two")
        assert len(await _found(storage, reader.id, "omega")) == 6
        assert await _found(storage, reader.id, "omega", chat_id=others[0].id) != []
        await storage.delete_chat(others[0].id)
        assert len(await _found(storage, reader.id, "omega")) == 4
        await storage.delete_workspace(workspace.id)
        assert await _found(storage, reader.id, "omega gamma delta") == []
        assert m3.id > 0


async def test_sqlite_index_rows_leave_with_their_messages(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with trio.fail_after(CEILING):
        async with open_storage(f"sqlite:///{db}") as storage:
            workspace, users, chat = await make_group(storage)
            sent = await send(storage, chat.id, users[0], "one", "two 二人", "three")
            await storage.delete_message(chat.id, sent[0].id)
            await storage.edit_message(chat.id, sent[1].id, "two edited", [], False)
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute("SELECT rowid FROM messages_fts ORDER BY rowid").fetchall()
                assert rows == [(sent[1].id,), (sent[2].id,)]
                await storage.delete_workspace(workspace.id)
                assert conn.execute("SELECT count(*) FROM messages_fts").fetchone() == (0,)
            finally:
                conn.close()


def test_sqlite_newest_first_reads_the_index_in_order_without_sorting() -> None:
    op = search_messages(
        "sqlite", 1, parse_query("word 聊天"), SearchFilters(workspace_id=1, below_id=9), 20
    )
    stmt = next(op)
    assert isinstance(stmt, Stmt)
    conn = sqlite3.connect(":memory:")
    try:
        conn.create_function("fechatter_search_text", 1, search_text, deterministic=True)
        conn.isolation_level = None
        apply_sqlite_migrations(conn)
        plan = [
            row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {stmt.sql.sqlite}", stmt.params)
        ]
    finally:
        conn.close()
    assert plan[0].startswith("SCAN f VIRTUAL TABLE"), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_postgres_shadow_text_is_the_python_one(pg_database: str) -> None:
    alphabet = (
        "abcXYZéÜ09 _-.,'\"@#!?/\\\t\n"
        "实时聊天应用我用写东京𠀀𠀁"
        "こんにちはカタカナーｶﾀ"
        "한국어검색ㄱ"
        "\uff0c。「」・〜👍🏽❤️"
    )
    rng = random.Random(16)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24))) for _ in range(400)]
    texts += ["", "实", "a实b", "实实实", "ｶﾀｶﾅ"]
    with psycopg.connect(pg_database, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT fechatter_search_text(t) FROM unnest(%s::text[]) WITH ORDINALITY AS x(t, n)"
            " ORDER BY n",
            (texts,),
        ).fetchall()
    got = [row[0] for row in rows]
    assert got == [search_text(t) for t in texts]


async def test_both_newest_first_plans_give_the_same_pages(storage: Storage) -> None:
    """PostgreSQL picks between collecting every match and walking messages by id (module doc
    of ``fechatter.storage.search``): forced to either, the same pages in the same order,
    with the filters and paging; SQLite has one plan and must agree too."""
    with trio.fail_after(CEILING):
        _workspace, users, chat = await make_group(storage)
        owner, reader = users[0], users[1]
        sent = await send(storage, chat.id, owner, *[f"needle {i} 聊天" for i in range(7)])
        await send(storage, chat.id, owner, "hay", "more hay")
        await storage.delete_message(chat.id, sent[3].id)
        query = parse_query("needle 聊天")

        async def pages(sparse_below: int, filters: SearchFilters) -> list[list[int]]:
            out: list[list[int]] = []
            while True:
                op = search_messages(
                    storage.dialect,  # type: ignore[attr-defined]
                    reader.id,
                    query,
                    filters,
                    2,
                    sparse_below=sparse_below,
                )
                page = await storage._read_op(op)  # type: ignore[attr-defined]
                out.append([m.id for m in page.items])
                if not page.has_more:
                    return out
                filters = SearchFilters(chat_id=filters.chat_id, below_id=page.items[-1].id)

        expected = [m.id for m in reversed(sent) if m.id != sent[3].id]
        for filters in (SearchFilters(), SearchFilters(chat_id=chat.id)):
            collected = await pages(1_000_000, filters)  # fewer matches: collect and sort
            walked = await pages(1, filters)  # at least one match: walk by id
            assert collected == walked
            assert [i for page in collected for i in page] == expected
            assert [len(page) for page in collected] == [2, 2, 2]
        assert await pages(1, SearchFilters(sender_id=reader.id)) == [[]]
